"""The two sessions of a copy: the source snapshot and the target transaction.

:class:`SourceSnapshot` is the one place that opens the source's REPEATABLE READ, READ ONLY
transaction; :class:`TargetSession` is the one place statements reach the target: it times each
named step, names the table in every error, and in a dry run records the writes instead of
sending them.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from contextlib import contextmanager, suppress
from time import perf_counter
from typing import Any

import psycopg
from psycopg import sql

from stagecopy_dagster import catalog
from stagecopy_dagster.errors import StagecopyError, wrap_db_error

#: The first statement of every read-only snapshot stagecopy opens (source, or target for checks).
READ_ONLY_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"

Statement = sql.Composed | sql.SQL


def begin_read_only(conn: psycopg.Connection) -> None:
    """Start a REPEATABLE READ, READ ONLY transaction on `conn` (autocommit off)."""
    # psycopg opens the transaction itself; this must be its first statement.
    conn.execute(READ_ONLY_SNAPSHOT)


class SourceSnapshot:
    """A source connection inside one REPEATABLE READ, READ ONLY transaction.

    The copy and the integrity check that follows it read the same snapshot, so rows written
    to the source during the copy can never make the check raise a false alarm; and a read-only
    transaction means stagecopy cannot write to the source even by mistake.
    """

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self.version = catalog.server_version(conn)

    def restart(self) -> None:
        """End this snapshot and open a fresh one on the same connection."""
        self.conn.rollback()
        begin_read_only(self.conn)

    @classmethod
    @contextmanager
    def begin(cls, conn: psycopg.Connection) -> Generator[SourceSnapshot, None, None]:
        """Open the snapshot transaction on `conn` (autocommit off) and end it afterwards."""
        begin_read_only(conn)
        try:
            yield cls(conn)
        finally:
            if not conn.closed:
                # A failed rollback means the connection died: nothing left to end.
                with suppress(psycopg.Error):
                    conn.rollback()


class TargetSession:
    """The target connection of one copy, with step timing and dry-run recording."""

    def __init__(self, conn: psycopg.Connection, *, label: str, dry_run: bool = False) -> None:
        self.conn = conn
        self.label = label
        """The table, as errors name it."""
        self.dry_run = dry_run
        """Plan only: reads run, every write is recorded in `statements` instead of sent."""
        self.statements: list[str] = []
        self.steps: dict[str, float] = {}
        """Seconds per named step, in order (a step that runs twice adds up)."""

    @property
    def version(self) -> int:
        """The target server's `server_version_num`."""
        return catalog.server_version(self.conn)

    @contextmanager
    def step(self, name: str) -> Generator[None, None, None]:
        """Time a named step; database errors in it become errors naming the table and step."""
        started = perf_counter()
        try:
            yield
        except StagecopyError as exc:
            if exc.table is None:  # raised by a helper that does not know the table
                raise type(exc)(exc.message, table=self.label) from exc
            raise
        except psycopg.Error as exc:
            raise wrap_db_error(exc, table=self.label, step=name) from exc
        finally:
            self.steps[name] = self.steps.get(name, 0.0) + perf_counter() - started

    def record(self, text: str) -> None:
        """Note a statement a dry run would have sent (for `stagecopy plan`)."""
        self.statements.append(text)

    def execute(self, statement: Statement) -> int:
        """Run a writing statement; its row count (0 in a dry run, which only records it)."""
        if self.dry_run:
            self.record(statement.as_string(self.conn))
            return 0
        return self.conn.execute(statement).rowcount

    def execute_all(self, statements: Sequence[Statement]) -> None:
        """Run writing statements in order."""
        for statement in statements:
            self.execute(statement)

    def write_returning(self, statement: Statement, width: int) -> tuple[int, ...]:
        """Run a writing statement that returns one row of counts (zeros in a dry run)."""
        if self.dry_run:
            self.record(statement.as_string(self.conn))
            return (0,) * width
        row = self.conn.execute(statement).fetchone()
        assert row is not None
        return tuple(int(v) for v in row)

    def fetch(self, statement: Statement, params: Sequence[Any] | None = None) -> tuple[Any, ...]:
        """The one row a reading statement returns."""
        row = self.conn.execute(statement, params).fetchone()
        assert row is not None
        return tuple(row)

    def fetch_all(self, statement: Statement) -> list[tuple[Any, ...]]:
        """Every row a reading statement returns."""
        return [tuple(r) for r in self.conn.execute(statement).fetchall()]

    def scalar(self, statement: Statement, params: Sequence[Any] | None = None) -> Any:
        """The first value of a reading statement's first row (None when it has none)."""
        row = self.conn.execute(statement, params).fetchone()
        return None if row is None else row[0]
