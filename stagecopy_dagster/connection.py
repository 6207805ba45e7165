"""How stagecopy connects to a database, without Dagster.

:class:`Endpoint` is one database and the settings every session gets; the Dagster resource
:class:`~stagecopy_dagster.resources.PostgresResource` builds one from its config. Anything with
`connect()`, `copy_options()` and `retries` (the :class:`Database` protocol) can be handed to
:func:`stagecopy_dagster.runner.replicate`: the Dagster asset passes resources, the tests and
the benchmark pass endpoints, and all of them run the same code.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from psycopg.conninfo import conninfo_to_dict

from stagecopy_dagster import statements as st
from stagecopy_dagster.engine.types import CopyOptions
from stagecopy_dagster.errors import ConnectError, describe_db_error


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


class Database(Protocol):
    """What the copy and the check need of a database (a resource or an :class:`Endpoint`)."""

    @property
    def retries(self) -> int:
        """Attempts for transient failures."""
        ...

    def connect(self) -> AbstractContextManager[psycopg.Connection]:
        """An open connection with stagecopy's session settings; closed on exit."""
        ...

    def copy_options(self) -> CopyOptions:
        """The copy knobs configured for this (target) database."""
        ...


@dataclass(frozen=True)
class Endpoint:
    """One database and how stagecopy's sessions on it are set up."""

    url: str
    """libpq URI or key=value DSN."""
    application_name: str = "stagecopy"
    connect_timeout: int = 10
    lock_timeout: str = "30s"
    statement_timeout: str = "0"
    merge_work_mem: str = "1GB"
    retries: int = 3

    def __repr__(self) -> str:
        return f"Endpoint({redact(self.url)})"

    @contextmanager
    def connect(self, **kwargs: Any) -> Iterator[psycopg.Connection]:
        """An open connection with stagecopy's session settings; closed on exit.

        Both sides get the same settings (UTC, ISO dates, exact floats) so text COPY and
        integrity hashes are identical.
        """
        try:
            conn = psycopg.connect(
                self.url,
                application_name=self.application_name,
                connect_timeout=self.connect_timeout,
                **kwargs,
            )
        except psycopg.Error as exc:
            raise _connect_error(exc, self.url) from None
        try:
            conn.execute(st.set_session())
            if self.statement_timeout != "0":
                conn.execute(st.set_session({"statement_timeout": self.statement_timeout}))
            conn.commit()
            yield conn
        finally:
            conn.close()

    def copy_options(self) -> CopyOptions:
        """The copy knobs of this (target) database."""
        return CopyOptions(lock_timeout=self.lock_timeout, merge_work_mem=self.merge_work_mem)


def _connect_error(exc: psycopg.Error, url: str) -> ConnectError:
    """A failed connection, without secrets; transient unless the credentials or names are."""
    error = ConnectError(f"cannot connect to {redact(url)}: {scrub(describe_db_error(exc), url)}")
    error.transient = not isinstance(exc, psycopg.errors.InvalidPassword) and (
        "password authentication failed" not in str(exc) and "does not exist" not in str(exc)
    )
    return error
