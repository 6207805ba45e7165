"""One error family for stagecopy.

Every error a user can meet derives from :class:`StagecopyError`. Errors raised while copying
one table carry that table's name so a failure in a run of fifty tables says which one broke.
Database errors are sorted into *transient* (worth a retry: the connection dropped, a
serialization failure, a deadlock) and *terminal* (retrying cannot help).
"""

from __future__ import annotations

import psycopg
from psycopg import errors as pg_errors

# SQLSTATE classes and codes that a retry can cure.
_TRANSIENT_CLASSES = ("08",)  # connection exception
_TRANSIENT_CODES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "57P01",  # admin_shutdown (pg_terminate_backend)
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now
        "53300",  # too_many_connections
    }
)


class StagecopyError(Exception):
    """Base class of every error stagecopy raises on purpose."""

    transient: bool = False

    def __init__(self, message: str, *, table: str | None = None) -> None:
        self.table = table
        self.message = message
        super().__init__(f"{table}: {message}" if table else message)


class SpecError(StagecopyError):
    """The replication spec is invalid (bad key, bad value, conflicting entries)."""


class UnsafeSqlError(SpecError):
    """A `where` or `query` is not the single expression or SELECT it must be."""


class SourceError(StagecopyError):
    """The source table or query cannot be read as described."""


class SchemaMismatchError(StagecopyError):
    """Source and target columns cannot be reconciled without a silent cast."""


class UserTypeError(SchemaMismatchError):
    """A user-defined type the columns use differs in the target, or cannot be recreated there."""


class DuplicateKeyError(StagecopyError):
    """The rows to merge contain the same primary key more than once, or a NULL key."""


class LockTimeoutError(StagecopyError):
    """Another session holds the target table (or its stagecopy lock) for too long."""


class ConnectError(StagecopyError):
    """A database cannot be reached or refused the credentials."""


class ConnectionConfigError(StagecopyError):
    """No database was named: a connection URL (or the embedded opt-in) is missing."""


class CopyError(StagecopyError):
    """The copy failed in the database; the target was rolled back."""


class TransientCopyError(CopyError):
    """The copy failed for a reason a retry can cure; the target was rolled back."""

    transient = True


def is_transient_sqlstate(sqlstate: str | None) -> bool:
    """Whether a SQLSTATE names a failure that a retry can cure."""
    if not sqlstate:
        return False
    return sqlstate in _TRANSIENT_CODES or sqlstate.startswith(_TRANSIENT_CLASSES)


def is_transient(exc: BaseException) -> bool:
    """Whether an exception (stagecopy's or psycopg's) is worth a retry."""
    if isinstance(exc, StagecopyError):
        return exc.transient
    if isinstance(exc, psycopg.Error):
        if is_transient_sqlstate(exc.sqlstate):
            return True
        # A connection that died mid-statement raises OperationalError without a SQLSTATE.
        return isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None
    return False


def describe_db_error(exc: psycopg.Error) -> str:
    """A one-line description of a database error: message, detail and SQLSTATE, no DSN.

    The detail of a NOT NULL or CHECK violation ("Failing row contains (...)") is left out:
    it would copy a whole row, personal data included, into logs and Dagster's event log.
    """
    diag = exc.diag
    parts = [(diag.message_primary or str(exc).strip().splitlines()[0] or type(exc).__name__)]
    leaks_row = isinstance(exc, pg_errors.NotNullViolation | pg_errors.CheckViolation)
    if diag.message_detail and not leaks_row:
        parts.append(diag.message_detail)
    if exc.sqlstate:
        parts.append(f"[SQLSTATE {exc.sqlstate}]")
    return " ".join(parts)


def wrap_db_error(exc: psycopg.Error, *, table: str, step: str) -> StagecopyError:
    """Turn a psycopg error met in `step` of copying `table` into a stagecopy error."""
    text = f"{step} failed: {describe_db_error(exc)}"
    if isinstance(exc, pg_errors.LockNotAvailable):
        return LockTimeoutError(
            f"{step}: the target is locked by another session (lock_timeout reached). "
            f"{describe_db_error(exc)}",
            table=table,
        )
    if isinstance(exc, pg_errors.UniqueViolation | pg_errors.NotNullViolation):
        return DuplicateKeyError(
            f"{step}: the rows break the target's key or NOT NULL: {describe_db_error(exc)}",
            table=table,
        )
    if isinstance(exc, pg_errors.UndefinedTable | pg_errors.UndefinedColumn):
        return SourceError(text, table=table)
    if is_transient(exc):
        return TransientCopyError(text, table=table)
    return CopyError(text, table=table)


__all__ = [
    "ConnectError",
    "ConnectionConfigError",
    "CopyError",
    "DuplicateKeyError",
    "LockTimeoutError",
    "SchemaMismatchError",
    "SourceError",
    "SpecError",
    "StagecopyError",
    "TransientCopyError",
    "UnsafeSqlError",
    "UserTypeError",
    "describe_db_error",
    "is_transient",
    "is_transient_sqlstate",
    "wrap_db_error",
]
