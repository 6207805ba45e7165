"""`PostgresResource`: one database (source or target) and how stagecopy connects to it."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import dagster as dg
import psycopg
from pydantic import Field

from stagecopy_dagster.connection import Endpoint, redact, scrub
from stagecopy_dagster.engine.types import CopyOptions
from stagecopy_dagster.errors import ConnectionConfigError

__all__ = ["PostgresResource", "redact", "scrub"]


class PostgresResource(dg.ConfigurableResource):
    """A PostgreSQL database stagecopy reads from (source) or writes to (target).

    Secrets come in through `dg.EnvVar("STAGECOPY_SOURCE_URL")` / `..._TARGET_URL`. Only when
    `url` is empty and `embedded_database` names a database is the local embedded cluster used
    (started on first use, as `stagecopy demo` does); with neither, connecting is an error,
    never a silent default. Connections get the session settings both sides must share (UTC,
    ISO dates, exact floats) so text COPY and integrity hashes are identical.

    Example:
        >>> target = PostgresResource(url=dg.EnvVar("STAGECOPY_TARGET_URL"))  # doctest: +SKIP
    """

    url: str = Field(
        default="",
        description="libpq URI or key=value DSN, e.g. dg.EnvVar('STAGECOPY_TARGET_URL').",
    )
    embedded_database: str = Field(
        default="",
        description="Database in the local embedded cluster (the demo's) to use when `url` is "
        "empty. Empty: `url` is required.",
    )
    application_name: str = Field(default="stagecopy", description="Shown in pg_stat_activity.")
    connect_timeout: int = Field(default=10, description="Seconds to wait for a connection.")
    lock_timeout: str = Field(
        default="30s", description="How long to wait for a lock on the target before failing."
    )
    statement_timeout: str = Field(
        default="0", description="Abort any statement running longer than this (0 = never)."
    )
    merge_work_mem: str = Field(
        default="1GB",
        description="work_mem (SET LOCAL) for the MERGE only, so its hash join of staged and "
        "target rows stays in memory; lower it on a memory-tight server.",
    )
    retries: int = Field(
        default=3, description="Attempts for transient failures (connection lost, deadlock)."
    )

    def resolved_url(self) -> str:
        """The URL to connect to (the embedded cluster's when only `embedded_database` is set).

        Raises:
            ConnectionConfigError: Neither `url` nor `embedded_database` is set.
        """
        if self.url:
            return self.url
        if not self.embedded_database:
            raise ConnectionConfigError(
                "PostgresResource has no database: set `url` (e.g. "
                'url=dg.EnvVar("STAGECOPY_TARGET_URL")), or `embedded_database` for the local '
                "embedded cluster"
            )
        # Imported here: the copy path never loads the local clusters unless asked to.
        from stagecopy_dagster.local.default import embedded_url  # noqa: PLC0415

        return embedded_url(self.embedded_database)

    def describe(self) -> str:
        """Where this resource points, without secrets (for logs and metadata)."""
        if self.url:
            return redact(self.resolved_url())
        return f"embedded/{self.embedded_database}" if self.embedded_database else "(no url)"

    def endpoint(self) -> Endpoint:
        """This resource as a plain :class:`~stagecopy_dagster.connection.Endpoint`."""
        return Endpoint(
            url=self.resolved_url(),
            application_name=self.application_name,
            connect_timeout=self.connect_timeout,
            lock_timeout=self.lock_timeout,
            statement_timeout=self.statement_timeout,
            merge_work_mem=self.merge_work_mem,
            retries=self.retries,
        )

    def connect(self, **kwargs: Any) -> AbstractContextManager[psycopg.Connection]:
        """An open connection with stagecopy's session settings; closed on exit."""
        return self.endpoint().connect(**kwargs)

    def copy_options(self) -> CopyOptions:
        """The copy knobs configured on this (target) resource."""
        return CopyOptions(lock_timeout=self.lock_timeout, merge_work_mem=self.merge_work_mem)
