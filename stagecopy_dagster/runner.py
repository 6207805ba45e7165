"""Replicate or verify one table: the one function every caller uses.

The Dagster asset, the CLI, the tests and the benchmark all copy through :func:`replicate` and
check through :func:`verify` (or :func:`replicate` with `verify=True`, which compares in the
copy's own source snapshot). Both take any :class:`~stagecopy_dagster.connection.Database`: a
:class:`~stagecopy_dagster.resources.PostgresResource` or a plain
:class:`~stagecopy_dagster.connection.Endpoint`. Transient failures are retried with backoff;
each attempt is a whole, atomic copy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import psycopg

from stagecopy_dagster import catalog, partition_scope
from stagecopy_dagster import statements as st
from stagecopy_dagster.comments import NO_DOCS, TableDocs, apply_docs, read_docs
from stagecopy_dagster.connection import Database
from stagecopy_dagster.engine.copier import TableCopier
from stagecopy_dagster.engine.session import SourceSnapshot, begin_read_only
from stagecopy_dagster.engine.types import (
    Column,
    Connectors,
    CopyOptions,
    CopyResult,
    ProgressCallback,
    SourceFacts,
)
from stagecopy_dagster.errors import (
    ConnectError,
    SchemaMismatchError,
    StagecopyError,
    wrap_db_error,
)
from stagecopy_dagster.integrity import IntegrityReport, Window, compare, portable_columns
from stagecopy_dagster.retry import call_with_retries
from stagecopy_dagster.spec import Mode, TableSpec

log = logging.getLogger(__name__)

RetryHook = Callable[[int, BaseException, float], None]
T = TypeVar("T")


@dataclass(frozen=True)
class PartitionOutcome:
    """What a run over some partitions of a partitioned table found, per partition."""

    keys: tuple[str, ...]
    """The partitions the run covered, in order."""
    scope: str
    """The run's scope: the table's `where` AND the partitions' predicate."""
    rows: Mapping[str, int]
    """Target rows of each partition after the copy (one grouped query); empty for a check."""
    reports: Mapping[str, IntegrityReport]
    """The integrity report of each partition: the range's own when the range passed (it
    then holds for every partition in it), else one comparison per partition."""


@dataclass(frozen=True)
class Replication:
    """A copy and, when asked for, its integrity report from the same source snapshot."""

    result: CopyResult
    report: IntegrityReport | None
    docs: TableDocs = NO_DOCS
    """The source's comments (also set on the target after the copy)."""
    partitions: PartitionOutcome | None = None
    """Per-partition rows and reports, for a run over partitions (`partition_keys`)."""


def replicate(
    table: TableSpec,
    source: Database,
    target: Database,
    *,
    verify: bool = True,
    options: CopyOptions | None = None,
    progress: ProgressCallback | None = None,
    on_retry: RetryHook | None = None,
    partition_keys: Sequence[str] | None = None,
    attempts: int | None = None,
) -> Replication:
    """Copy `table` (retrying transient failures) and verify it in the copy's snapshot.

    `options` replaces the target's copy knobs (e.g. `progress_interval=0`: report progress
    after every write, which is how the fault tests reach a copy mid-stream). `attempts`
    (default: `target.retries`) bounds the attempts; the Dagster asset passes 1 and leaves
    retries to Dagster (:mod:`stagecopy_dagster.step_retries`).

    `partition_keys` (a partitioned table): copy only those partitions, in one stream over
    their whole range, and report rows and the check per partition.

    Example:
        >>> done = replicate(table, Endpoint(src_url), Endpoint(dst_url))  # doctest: +SKIP
        >>> done.result.inserted, done.report.passed  # doctest: +SKIP
    """

    def attempt() -> Replication:
        with _snapshot(table, source, target) as (snap, tgt):
            scope = _scope(table, partition_keys, snap)
            work = scope.table if scope is not None else table
            result = TableCopier(
                work,
                snap,
                tgt,
                options=options or target.copy_options(),
                progress=progress,
                connectors=Connectors(source.connect, target.connect),
            ).run()
            report = _compare_after_copy(work, snap, tgt, result) if verify else None
            if scope is None:
                return Replication(result, report, _carry_comments(table, snap, tgt, result))
            with _read_only(table, tgt):
                rows = partition_scope.row_counts(tgt, scope)
            reports = (
                _per_partition(
                    scope,
                    report,
                    lambda keys: _compare_after_copy(
                        partition_scope.scoped(table, keys, snap.conn).table, snap, tgt, result
                    ),
                )
                if report is not None
                else {}
            )
            outcome = PartitionOutcome(scope.keys, _scope_text(scope), rows, reports)
            docs = _carry_comments(table, snap, tgt, result)
            return Replication(result, report, docs, outcome)

    return _with_retries(target, attempt, on_retry, attempts)


def _scope(
    table: TableSpec, keys: Sequence[str] | None, snap: SourceSnapshot
) -> partition_scope.PartitionScope | None:
    """`table` narrowed to `keys` (None for a run over the whole table)."""
    if table.partition is None or not keys:
        return None
    return partition_scope.scoped(table, keys, snap.conn)


def _scope_text(scope: partition_scope.PartitionScope) -> str:
    where = scope.table.where
    assert where is not None
    return where.text


def _per_partition(
    scope: partition_scope.PartitionScope,
    report: IntegrityReport,
    compare_keys: Callable[[Sequence[str]], IntegrityReport],
) -> dict[str, IntegrityReport]:
    """The report of each partition: the range's when it passed, else one per partition.

    A range that passed has no difference in any of its partitions; one that failed is
    compared again partition by partition, so the check names the partitions that differ.
    """
    if report.passed or len(scope.keys) == 1:
        return dict.fromkeys(scope.keys, report)
    return {key: compare_keys([key]) for key in scope.keys}


def verify(
    table: TableSpec,
    source: Database,
    target: Database,
    *,
    on_retry: RetryHook | None = None,
    attempts: int | None = None,
) -> IntegrityReport:
    """Compare the source scope with the target scope now, in fresh snapshots."""

    def attempt() -> IntegrityReport:
        with _snapshot(table, source, target) as (snap, tgt):
            return _verify_in(table, snap, tgt)

    return _with_retries(target, attempt, on_retry, attempts)


def verify_partitions(
    table: TableSpec,
    source: Database,
    target: Database,
    partition_keys: Sequence[str],
    *,
    on_retry: RetryHook | None = None,
    attempts: int | None = None,
) -> PartitionOutcome:
    """The check of some partitions of a partitioned table, per partition.

    One comparison over the partitions' whole range; when it fails, one per partition, so the
    report names the partitions that differ. Never compares a partition against the whole table.
    """

    def attempt() -> PartitionOutcome:
        with _snapshot(table, source, target) as (snap, tgt):
            scope = partition_scope.scoped(table, partition_keys, snap.conn)
            report = _verify_in(scope.table, snap, tgt)
            reports = _per_partition(
                scope,
                report,
                lambda keys: _verify_in(
                    partition_scope.scoped(table, keys, snap.conn).table, snap, tgt
                ),
            )
            return PartitionOutcome(scope.keys, _scope_text(scope), {}, reports)

    return _with_retries(target, attempt, on_retry, attempts)


def _verify_in(table: TableSpec, snap: SourceSnapshot, tgt: psycopg.Connection) -> IntegrityReport:
    """Compare `table`'s scope on both sides: the source in `snap`, the target read-only."""
    facts = TableCopier(table, snap, tgt).plan_source()
    with _read_only(table, tgt):
        compared = _compared_columns(table, tgt, facts)
        return compare(
            table,
            source=snap.conn,
            source_relation=facts.relation,
            target=tgt,
            columns=[c.name for c in compared],
            key=facts.key,
            same_snapshot=False,
            hashable=portable_columns(compared, snap.version, catalog.server_version(tgt)),
        )


def plan_statements(
    table: TableSpec,
    source: Database,
    target: Database,
    *,
    partition_keys: Sequence[str] | None = None,
) -> list[str]:
    """Every statement a copy of `table` would send now, in order; nothing is written."""
    with _snapshot(table, source, target) as (snap, tgt):
        tgt.read_only = True
        scope = _scope(table, partition_keys, snap)
        work = scope.table if scope is not None else table
        copier = TableCopier(work, snap, tgt, options=target.copy_options(), dry_run=True)
        copier.run()
        return copier.statements


def leftover_staging(conn: psycopg.Connection) -> list[tuple[str, str, bool]]:
    """(schema, table, locked) of every stagecopy staging table in the connected database."""
    return [(r[0], r[1], bool(r[2])) for r in conn.execute(st.LEFTOVER_STAGING).fetchall()]


# --- the pieces ------------------------------------------------------------------------------


@contextmanager
def _snapshot(
    table: TableSpec, source: Database, target: Database
) -> Iterator[tuple[SourceSnapshot, psycopg.Connection]]:
    """A source snapshot and a target connection; connection errors name the table."""
    try:
        with source.connect() as src, target.connect() as tgt, SourceSnapshot.begin(src) as snap:
            yield snap, tgt
    except ConnectError as exc:
        if exc.table is not None:
            raise
        named = ConnectError(exc.message, table=table.label)
        named.transient = exc.transient
        raise named from None


@contextmanager
def _read_only(table: TableSpec, tgt: psycopg.Connection) -> Iterator[None]:
    """The target in one REPEATABLE READ, READ ONLY transaction, for the integrity check."""
    try:
        begin_read_only(tgt)
        try:
            yield
        finally:
            if not tgt.closed:
                tgt.rollback()
    except psycopg.Error as exc:
        raise wrap_db_error(exc, table=table.label, step="integrity check") from exc


def _compared_columns(
    table: TableSpec, tgt: psycopg.Connection, facts: SourceFacts
) -> Sequence[Column]:
    """The source columns the target holds and does not generate: what a check compares."""
    oid = catalog.relation_oid(tgt, table.target_table)
    if oid is None:
        raise SchemaMismatchError(
            "the target table does not exist yet; materialize the asset first",
            table=table.label,
        )
    target_cols = {c.name: c for c in catalog.columns(tgt, oid)}
    return [c for c in facts.columns if c.name in target_cols and not target_cols[c.name].generated]


def _compare_after_copy(
    table: TableSpec, snap: SourceSnapshot, tgt: psycopg.Connection, result: CopyResult
) -> IntegrityReport:
    """The check that runs with a copy: it verifies what the copy claims.

    A full copy claims the whole scope: every row is compared (`check_scope: full`). An
    incremental copy claims its window: the window's rows are compared and the rest of the
    scope counted (`check_scope: window`); the full comparison is `verify` (`stagecopy check`).
    """
    # What the copy read: a masked read compares the masked values, computed on the source.
    relation = result.source_relation or table.source or table.query
    assert relation is not None
    window = None
    if table.incremental_field is not None and result.window_start is not None:
        window = Window(
            table.incremental_field, result.window_start, inclusive=table.mode is not Mode.APPEND
        )
    with _read_only(table, tgt):
        return compare(
            table,
            source=snap.conn,
            source_relation=relation,
            target=tgt,
            columns=[c.name for c in result.columns],
            key=result.key,
            same_snapshot=True,
            hashable=portable_columns(result.columns, snap.version, result.server_version),
            window=window,
            # The copy counted the whole table in its own transaction: without a `where` that is
            # the scope, exactly as this copy committed it, and a second full count is saved.
            target_rows=result.target_rows if table.where is None else None,
        )


def _carry_comments(
    table: TableSpec, snap: SourceSnapshot, tgt: psycopg.Connection, result: CopyResult
) -> TableDocs:
    """Read the source's comments (in the copy's snapshot) and set them on the target.

    Documentation is not data: a failure here is logged and the copy stands.
    """
    if table.source is None:
        return NO_DOCS
    try:
        docs = read_docs(snap.conn, [table.source]).get(table.source, NO_DOCS)
        changed = apply_docs(tgt, table.target_table, docs, [c.name for c in result.columns])
    except psycopg.Error as exc:
        if not tgt.closed and not tgt.autocommit:
            tgt.rollback()
        log.warning("%s: comments not carried to the target: %s", table.label, exc)
        return NO_DOCS
    if changed:
        log.info("%s: comments set on the target: %s", table.label, ", ".join(changed))
    return docs


def _with_retries(
    target: Database, attempt: Callable[[], T], on_retry: RetryHook | None, attempts: int | None
) -> T:
    tries = max(1, target.retries if attempts is None else attempts)
    return call_with_retries(attempt, attempts=tries, on_retry=on_retry)


__all__ = [
    "PartitionOutcome",
    "Replication",
    "StagecopyError",
    "leftover_staging",
    "plan_statements",
    "replicate",
    "verify",
    "verify_partitions",
]
