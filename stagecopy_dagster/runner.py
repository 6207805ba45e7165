"""Replicate or verify one table between two `PostgresResource`s.

This is the unit of work behind an asset: open the source snapshot, copy, and (when asked)
compare within that same snapshot; or, for a check run on its own, compare in fresh snapshots.
Transient failures are retried with backoff; each attempt is a whole, atomic copy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import psycopg

from stagecopy_dagster import catalog
from stagecopy_dagster import statements as st
from stagecopy_dagster.copier import (
    CopyOptions,
    CopyResult,
    ProgressCallback,
    SourceSnapshot,
    TableCopier,
)
from stagecopy_dagster.errors import (
    ConnectError,
    SchemaMismatchError,
    StagecopyError,
    wrap_db_error,
)
from stagecopy_dagster.integrity import IntegrityReport, compare, portable_columns
from stagecopy_dagster.resources import PostgresResource
from stagecopy_dagster.retry import call_with_retries
from stagecopy_dagster.spec import TableSpec

log = logging.getLogger(__name__)

RetryHook = Callable[[int, BaseException, float], None]
T = TypeVar("T")


@dataclass(frozen=True)
class Replication:
    """A copy and, when asked for, its integrity report from the same source snapshot."""

    result: CopyResult
    report: IntegrityReport | None


def _begin_read_only(conn: psycopg.Connection) -> None:
    # psycopg opens the transaction itself; this must be its first statement.
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")


def replicate(
    table: TableSpec,
    source: PostgresResource,
    target: PostgresResource,
    *,
    verify: bool = True,
    options: CopyOptions | None = None,
    progress: ProgressCallback | None = None,
    on_retry: RetryHook | None = None,
) -> Replication:
    """Copy `table` (retrying transient failures) and verify it in the copy's snapshot.

    `options` replaces the target resource's copy knobs (e.g. `progress_interval=0`: report
    progress after every write, which is how the fault tests reach a copy mid-stream).
    """

    def attempt() -> Replication:
        with source.connect() as src, target.connect() as tgt:
            with SourceSnapshot.begin(src) as snap:
                result = TableCopier(
                    table,
                    snap,
                    tgt,
                    options=options or target.copy_options(),
                    progress=progress,
                    connectors=(source.connect, target.connect),
                ).run()
                report = None
                if verify:
                    report = _compare_after_copy(table, snap, tgt, result)
                return Replication(result, report)

    return call_with_retries(
        _naming(table, attempt), attempts=max(1, target.retries), on_retry=on_retry
    )


def _naming(table: TableSpec, fn: Callable[[], T]) -> Callable[[], T]:
    """`fn`, with connection errors re-raised naming the table (and keeping `transient`)."""

    def call() -> T:
        try:
            return fn()
        except ConnectError as exc:
            if exc.table is not None:
                raise
            named = ConnectError(exc.message, table=table.label)
            named.transient = exc.transient
            raise named from None

    return call


def _compare_after_copy(
    table: TableSpec, snap: SourceSnapshot, tgt: psycopg.Connection, result: CopyResult
) -> IntegrityReport:
    try:
        _begin_read_only(tgt)
        try:
            return compare(
                table,
                source=snap.conn,
                source_relation=table.source or table.query,  # type: ignore[arg-type]
                target=tgt,
                columns=[c.name for c in result.columns],
                key=result.key,
                same_snapshot=True,
                hashable=portable_columns(result.columns, snap.version, result.server_version),
            )
        finally:
            tgt.rollback()
    except psycopg.Error as exc:
        raise wrap_db_error(exc, table=table.label, step="integrity check") from exc


def verify(
    table: TableSpec,
    source: PostgresResource,
    target: PostgresResource,
    *,
    on_retry: RetryHook | None = None,
) -> IntegrityReport:
    """Compare the source scope with the target scope now, in fresh snapshots."""

    def attempt() -> IntegrityReport:
        with source.connect() as src, target.connect() as tgt:
            with SourceSnapshot.begin(src) as snap:
                plan = TableCopier(table, snap, tgt).plan_source()
                try:
                    _begin_read_only(tgt)
                    oid = catalog.relation_oid(tgt, table.target_table)
                    if oid is None:
                        raise SchemaMismatchError(
                            "the target table does not exist yet; materialize the asset first",
                            table=table.label,
                        )
                    target_cols = {c.name: c for c in catalog.columns(tgt, oid)}
                    compared = [
                        c
                        for c in plan.columns
                        if c.name in target_cols and not target_cols[c.name].generated
                    ]
                    columns = [c.name for c in compared]
                    return compare(
                        table,
                        source=snap.conn,
                        source_relation=plan.relation,
                        target=tgt,
                        columns=columns,
                        key=plan.key,
                        same_snapshot=False,
                        hashable=portable_columns(
                            compared, snap.version, catalog.server_version(tgt)
                        ),
                    )
                except psycopg.Error as exc:
                    raise wrap_db_error(exc, table=table.label, step="integrity check") from exc
                finally:
                    if not tgt.closed:
                        tgt.rollback()

    return call_with_retries(
        _naming(table, attempt), attempts=max(1, target.retries), on_retry=on_retry
    )


def leftover_staging(conn: psycopg.Connection) -> list[tuple[str, str, bool]]:
    """(schema, table, locked) of every stagecopy staging table in the connected database."""
    return [(r[0], r[1], bool(r[2])) for r in conn.execute(st.LEFTOVER_STAGING).fetchall()]


__all__ = ["Replication", "StagecopyError", "leftover_staging", "replicate", "verify"]
