"""Errors of the local clusters: each says what failed and what to do about it."""

from __future__ import annotations

from pathlib import Path

from stagecopy_dagster.errors import StagecopyError

__all__ = ["ClusterError", "ClusterStartError", "PortInUseError"]


class ClusterError(StagecopyError):
    """A local PostgreSQL cluster cannot be created, started, attached to or stopped."""


class ClusterStartError(ClusterError):
    """The server did not start; the message ends with the tail of the server log.

    Attributes:
        log_file: The server log to read for the whole story, when there is one.
    """

    def __init__(self, message: str, *, log_file: Path | None = None) -> None:
        super().__init__(message)
        self.log_file = log_file


class PortInUseError(ClusterStartError):
    """The chosen port was taken between picking it and binding it."""
