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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import psycopg

from stagecopy_dagster import catalog
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
from stagecopy_dagster.integrity import IntegrityReport, compare, portable_columns
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
    docs: TableDocs = NO_DOCS
    """The source's comments (also set on the target after the copy)."""


def replicate(
    table: TableSpec,
    source: Database,
    target: Database,
    *,
    verify: bool = True,
    options: CopyOptions | None = None,
    progress: ProgressCallback | None = None,
    on_retry: RetryHook | None = None,
    attempts: int | None = None,
) -> Replication:
    """Copy `table` (retrying transient failures) and verify it in the copy's snapshot.

    `options` replaces the target's copy knobs (e.g. `progress_interval=0`: report progress
    after every write, which is how the fault tests reach a copy mid-stream). `attempts`
    (default: `target.retries`) bounds the attempts; the Dagster asset passes 1 and leaves
    retries to Dagster (:mod:`stagecopy_dagster.step_retries`).

    Example:
        >>> done = replicate(table, Endpoint(src_url), Endpoint(dst_url))  # doctest: +SKIP
        >>> done.result.inserted, done.report.passed  # doctest: +SKIP
    """

    def attempt() -> Replication:
        with _snapshot(table, source, target) as (snap, tgt):
            result = TableCopier(
                table,
                snap,
                tgt,
                options=options or target.copy_options(),
                progress=progress,
                connectors=Connectors(source.connect, target.connect),
            ).run()
            report = _compare_after_copy(table, snap, tgt, result) if verify else None
            docs = _carry_comments(table, snap, tgt, result)
            return Replication(result, report, docs)

    return _with_retries(target, attempt, on_retry, attempts)


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

    return _with_retries(target, attempt, on_retry, attempts)


def plan_statements(table: TableSpec, source: Database, target: Database) -> list[str]:
    """Every statement a copy of `table` would send now, in order; nothing is written."""
    with _snapshot(table, source, target) as (snap, tgt):
        tgt.read_only = True
        copier = TableCopier(table, snap, tgt, options=target.copy_options(), dry_run=True)
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
    relation = table.source if table.source is not None else table.query
    assert relation is not None
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
    "Replication",
    "StagecopyError",
    "leftover_staging",
    "plan_statements",
    "replicate",
    "verify",
]
