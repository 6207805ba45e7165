"""`PostgresResource`: one database (source or target) and how stagecopy connects to it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import Field

from stagecopy_dagster import statements as st
from stagecopy_dagster.copier import CopyOptions
from stagecopy_dagster.errors import ConnectError, ConnectionConfigError, describe_db_error


def redact(url: str) -> str:
    """`user@host:port/dbname` for a libpq URI or key=value DSN; never the password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparseable connection string>"
    host = parts.get("host") or "localhost"
    port = parts.get("port") or "5432"
    return f"{parts.get('user') or '?'}@{host}:{port}/{parts.get('dbname') or '?'}"


def scrub(text: str, url: str) -> str:
    """Remove the password in `url` (and the URL itself) from `text`."""
    try:
        password = conninfo_to_dict(url).get("password")
    except psycopg.ProgrammingError:
        password = None
    text = text.replace(url, redact(url))
    if password:
        text = text.replace(str(password), "********")
    return text


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
        from stagecopy_dagster.local.default import embedded_url

        return embedded_url(self.embedded_database)

    def describe(self) -> str:
        """Where this resource points, without secrets (for logs and metadata)."""
        if self.url:
            return redact(self.resolved_url())
        return f"embedded/{self.embedded_database}" if self.embedded_database else "(no url)"

    @contextmanager
    def connect(self, **kwargs: Any) -> Iterator[psycopg.Connection]:
        """An open connection with stagecopy's session settings; closed on exit."""
        url = self.resolved_url()
        try:
            conn = psycopg.connect(
                url,
                application_name=self.application_name,
                connect_timeout=self.connect_timeout,
                **kwargs,
            )
        except psycopg.Error as exc:
            error = ConnectError(
                f"cannot connect to {redact(url)}: {scrub(describe_db_error(exc), url)}"
            )
            error.transient = not isinstance(exc, psycopg.errors.InvalidPassword) and (
                "password authentication failed" not in str(exc)
                and "does not exist" not in str(exc)
            )
            raise error from None
        try:
            conn.execute(st.set_session())
            if self.statement_timeout != "0":
                conn.execute(st.set_session({"statement_timeout": self.statement_timeout}))
            conn.commit()
            yield conn
        finally:
            conn.close()

    def copy_options(self) -> CopyOptions:
        """The copy knobs configured on this (target) resource."""
        return CopyOptions(lock_timeout=self.lock_timeout, merge_work_mem=self.merge_work_mem)
