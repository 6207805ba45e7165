"""The server settings stagecopy writes, and the TCP port it listens on.

``initdb`` appends ``include_if_exists = 'stagecopy.conf'`` to ``postgresql.conf``; every start
rewrites ``stagecopy.conf`` (port, addresses, socket, durability), so ``ALTER SYSTEM`` still
overrides it.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from pathlib import Path

__all__ = ["CONF_FILE", "HOST", "INCLUDE_LINE", "free_port", "previous_port", "settings_text"]

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
CONF_FILE = "stagecopy.conf"
INCLUDE_LINE = f"include_if_exists = '{CONF_FILE}'"
_SOCKET_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def previous_port(data_dir: Path) -> int | None:
    """Return the port of the last start if it is free now, so restarts keep their URLs."""
    try:
        text = (data_dir / CONF_FILE).read_text()
    except FileNotFoundError:
        return None
    match = re.search(r"^port = (\d+)$", text, re.MULTILINE)
    if match is None:
        return None
    port = int(match.group(1))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the server does: connections of the last run in TIME_WAIT must not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
            probe.listen()
        except OSError:
            return None
    return port


def _quote(value: str) -> str:
    """Quote a string for postgresql.conf."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def settings_text(*, port: int, socket_dir: Path, fast: bool) -> str:
    """The contents of ``stagecopy.conf`` for a start on ``port``."""
    socket_path = socket_dir / f".s.PGSQL.{port}"
    if len(os.fsencode(socket_path)) <= _SOCKET_PATH_MAX:
        socket_dirs = str(socket_dir)
    else:
        logger.warning("%s is too long for a unix socket; TCP only", socket_path)
        socket_dirs = ""
    durability = "off" if fast else "on"
    settings = {
        "port": str(port),
        "listen_addresses": _quote(HOST),
        "unix_socket_directories": _quote(socket_dirs),
        "max_connections": "200",
        "shared_buffers": _quote("128MB"),
        "fsync": durability,
        "synchronous_commit": durability,
        "lc_messages": _quote("C"),
    }
    return "# Written by stagecopy LocalCluster.start(); edits are overwritten.\n" + "".join(
        f"{name} = {value}\n" for name, value in settings.items()
    )
