"""`PostgresResource`: one database (source or target) and how stagecopy connects to it."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import dagster as dg
import psycopg
from pydantic import Field

from stagecopy_dagster.connection import Endpoint, redact, scrub
from stagecopy_dagster.engine.types import CopyOptions

__all__ = ["PostgresResource", "redact", "scrub"]


class PostgresResource(dg.ConfigurableResource):
    """A PostgreSQL database stagecopy reads from (source) or writes to (target).

    Secrets come in through `dg.EnvVar("STAGECOPY_SOURCE_URL")` / `..._TARGET_URL`; with an
    empty `url` the embedded default database named by `embedded_database` is used (started on
    first use). Connections get the session settings both sides must share (UTC, ISO dates,
    exact floats) so text COPY and integrity hashes are identical.
    """

    url: str = Field(
        default="",
        description="libpq URI or key=value DSN. Empty: the embedded default database.",
    )
    embedded_database: str = Field(
        default="stagecopy_target",
        description="Database in the embedded cluster to use when `url` is empty.",
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
        """The URL to connect to (the embedded default's when `url` is empty)."""
        if self.url:
            return self.url
        from stagecopy_dagster.embedded_default import embedded_url

        return embedded_url(self.embedded_database)

    def describe(self) -> str:
        """Where this resource points, without secrets (for logs and metadata)."""
        return redact(self.resolved_url()) if self.url else f"embedded/{self.embedded_database}"

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
