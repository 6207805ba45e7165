"""The stagecopy paths under test, each one TableCopier run (or one integrity check), timed alone.

Connections are opened and the session settings applied before the clock starts; the clock
covers `TableCopier.run()` (describe, lock, create or reconcile, COPY, MERGE, count, commit) or
`integrity.compare()`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial

import psycopg
from psycopg import IsolationLevel

from stagecopy_dagster import integrity
from stagecopy_dagster import statements as st
from stagecopy_dagster.copier import CopyOptions, CopyResult, SourceSnapshot, TableCopier
from stagecopy_dagster.identifiers import QualifiedName
from stagecopy_dagster.integrity import IntegrityReport
from stagecopy_dagster.spec import TableSpec, load_spec
from stagecopy_dagster.statements import Column


def table_spec(
    source: QualifiedName,
    target: QualifiedName,
    *,
    mode: str,
    incremental: bool = False,
    parallel: int = 1,
    diff: bool = True,
) -> TableSpec:
    """One table entry as a user would write it in replication.yaml."""
    entry: dict[str, object] = {
        "source": f"{source.schema}.{source.name}",
        "target": f"{target.schema}.{target.name}",
        "mode": mode,
        "parallel": parallel,
        "diff": diff,
    }
    if incremental:
        entry["incremental_field"] = "updated_at"
    return load_spec({"tables": [entry]}).tables[0]


@contextmanager
def _open(url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(url) as conn:
        conn.execute(st.set_session())
        conn.commit()
        yield conn


@contextmanager
def connected(
    source_url: str, target_url: str
) -> Iterator[tuple[psycopg.Connection, psycopg.Connection]]:
    """Source and target connections with the shared session settings, committed."""
    with psycopg.connect(source_url) as src, psycopg.connect(target_url) as tgt:
        for conn in (src, tgt):
            conn.execute(st.set_session())
            conn.commit()
        yield src, tgt


def run_copy(
    source_url: str, target_url: str, table: TableSpec, *, options: CopyOptions | None = None
) -> tuple[CopyResult, float]:
    """Copy `table` once; return the result and the wall seconds of `run()`."""
    with connected(source_url, target_url) as (src, tgt), SourceSnapshot.begin(src) as snap:
        started = time.perf_counter()
        connectors = (partial(_open, source_url), partial(_open, target_url))
        result = TableCopier(table, snap, tgt, options=options, connectors=connectors).run()
        return result, time.perf_counter() - started


def run_check(
    source_url: str,
    target_url: str,
    table: TableSpec,
    *,
    columns: Sequence[Column],
    key: Sequence[str],
) -> tuple[IntegrityReport, float]:
    """Compare source and target as the integrity asset check does; return report and seconds."""
    with connected(source_url, target_url) as (src, tgt), SourceSnapshot.begin(src) as snap:
        tgt.isolation_level = IsolationLevel.REPEATABLE_READ
        tgt.read_only = True
        with tgt.transaction(force_rollback=True):
            relation = table.source if table.source is not None else table.query
            assert relation is not None
            started = time.perf_counter()
            report = integrity.compare(
                table,
                source=snap.conn,
                source_relation=relation,
                target=tgt,
                columns=[c.name for c in columns],
                key=key,
                same_snapshot=True,
                hashable=integrity.portable_columns(columns, snap.version, tgt.info.server_version),
            )
            return report, time.perf_counter() - started
