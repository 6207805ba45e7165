"""The OS account the server runs as, and what that account can reach.

``initdb``, ``pg_ctl`` and ``postgres`` refuse to run as root. When this process is root the
server runs as an unprivileged OS user instead: the ``postgres`` user when there is one, else a
system user ``stagecopy_pg`` created on first use. That user must be able to reach (search
every parent directory of) the data directory and the binaries; :func:`first_unreachable` says
where it cannot.
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from stagecopy_dagster.local.errors import ClusterError

__all__ = [
    "FALLBACK_OS_USER",
    "OsUser",
    "first_unreachable",
    "is_root",
    "run_as",
    "server_user",
]

logger = logging.getLogger(__name__)

FALLBACK_OS_USER = "stagecopy_pg"
"""System user created to run PostgreSQL when this process is root and no ``postgres`` exists."""

_user_lock = threading.Lock()


@dataclass(frozen=True)
class OsUser:
    """An OS account: name, uid and primary gid."""

    name: str
    uid: int
    gid: int

    @classmethod
    def from_uid(cls, uid: int) -> OsUser:
        """The account with ``uid``."""
        entry = pwd.getpwuid(uid)
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid)


def is_root() -> bool:
    """Whether this process runs as root (and so must run the server as someone else)."""
    return os.geteuid() == 0


def server_user() -> OsUser:
    """Return the ``postgres`` OS user, creating ``stagecopy_pg`` if there is none."""
    with _user_lock:
        for name in ("postgres", FALLBACK_OS_USER):
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                continue
            return OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid)
        logger.info("creating system user %s to run PostgreSQL", FALLBACK_OS_USER)
        command = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
        try:
            result = subprocess.run(
                [*command, FALLBACK_OS_USER], capture_output=True, text=True, check=False
            )
            reason = result.stderr.strip()
        except OSError as exc:  # no useradd (e.g. busybox images)
            reason = str(exc)
        try:  # another process may have created it meanwhile
            entry = pwd.getpwnam(FALLBACK_OS_USER)
        except KeyError:
            raise ClusterError(
                f"PostgreSQL refuses to run as root and OS user {FALLBACK_OS_USER} cannot be "
                f"created ({reason}); create a 'postgres' user, or run stagecopy as a non-root user"
            ) from None
        return OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _can_search(info: os.stat_result, user: OsUser) -> bool:
    """Whether ``user`` (primary group only) may search a directory with this ``stat``."""
    if info.st_uid == user.uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid == user.gid:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def first_unreachable(path: Path, user: OsUser) -> Path | None:
    """The first existing directory on the way to ``path`` that ``user`` cannot search.

    ``path`` itself counts when it is an existing directory; parts that do not exist yet are
    skipped (whoever creates them decides their mode). ``None``: ``user`` gets through.

    Example:
        >>> postgres = OsUser("postgres", uid=999, gid=999)
        >>> first_unreachable(Path("/root/src/stagecopy"), postgres)  # doctest: +SKIP
        PosixPath('/root')
    """
    path = Path(os.path.abspath(path))
    for directory in [*reversed(path.parents), path]:
        try:
            info = directory.stat()
        except FileNotFoundError:
            return None
        if stat.S_ISDIR(info.st_mode) and not _can_search(info, user):
            return directory
    return None


def run_as(
    user: OsUser | None,
    args: list[str],
    *,
    timeout: float,
    home: Path,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a server binary as ``user`` (``None``: as this process' user), output captured.

    Raises:
        ClusterError: The binary cannot be started, or did not finish within ``timeout``.
    """
    # libpq and the server tools read PG* variables; none of the caller's may leak in.
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    clean_env.update(env or {})
    privileges: dict[str, object] = {}
    if user is not None:
        privileges = {"user": user.uid, "group": user.gid, "extra_groups": []}
        clean_env.update({"HOME": str(home), "USER": user.name, "LOGNAME": user.name})
    logger.debug("running %s", " ".join(args))
    try:
        return subprocess.run(
            args,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            cwd="/",
            env=clean_env,
            **privileges,  # type: ignore[arg-type]
        )
    except subprocess.TimeoutExpired:
        raise ClusterError(f"{Path(args[0]).name} did not finish within {timeout:.0f} s") from None
    except OSError as exc:
        who = f" as OS user {user.name}" if user is not None else ""
        raise ClusterError(f"cannot run {args[0]}{who}: {exc.strerror or exc}") from None
