"""Reading ``postmaster.pid``: is a server running for a data directory, and on which port."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PidFile", "read_pid_file"]


@dataclass(frozen=True)
class PidFile:
    """The parts of ``postmaster.pid`` that matter here."""

    pid: int
    port: int
    status: str


def _pid_alive(pid: int) -> bool:
    """Tell whether ``pid`` is a live process that looks like a PostgreSQL server."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    # In a container a stale postmaster.pid can name a pid that now belongs to something else.
    cmdline = Path("/proc") / str(pid) / "cmdline"
    try:
        return b"postgres" in cmdline.read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no procfs: trust kill()
    except OSError:
        return True


#: Lines of ``postmaster.pid`` (0-based): the pid is first, then data dir, start time, port, …
_PORT_LINE = 3
_STATUS_LINE = 7


def read_pid_file(data_dir: Path) -> PidFile | None:
    """Parse ``postmaster.pid``; ``None`` if absent, incomplete or written by a dead server."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return None
    if len(lines) <= _PORT_LINE or not lines[0].strip().lstrip("-").isdigit():
        return None
    pid = abs(int(lines[0]))
    if not _pid_alive(pid):
        return None
    port = int(lines[_PORT_LINE]) if lines[_PORT_LINE].strip().isdigit() else 0
    status = lines[_STATUS_LINE].strip() if len(lines) > _STATUS_LINE else ""
    return PidFile(pid=pid, port=port, status=status)
