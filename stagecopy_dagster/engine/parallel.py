"""Parallel streams: N COPY streams over ranges of heap blocks load one committed staging table.

Every source stream reads the snapshot this copy exported, over its own range of heap blocks (a
TID range scan), so together they are one consistent copy. The N target sessions need a
*committed* staging table; the final table is still only changed by the run's one transaction,
and the staging table is dropped in it (or, after a failure, by :func:`drop_committed_staging`).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from time import perf_counter
from typing import Any

import psycopg
from psycopg import sql

from stagecopy_dagster import catalog
from stagecopy_dagster import statements as st
from stagecopy_dagster.engine.context import CopyContext, Prepared
from stagecopy_dagster.engine.session import begin_read_only
from stagecopy_dagster.engine.stream import pump
from stagecopy_dagster.engine.types import (
    Connectors,
    Estimate,
    Progress,
    ProgressCallback,
    Streamed,
)
from stagecopy_dagster.errors import StagecopyError
from stagecopy_dagster.identifiers import QualifiedName

log = logging.getLogger(__name__)


def load_in_parallel(
    ctx: CopyContext, job: Prepared, *, staging: QualifiedName, connectors: Connectors
) -> Streamed:
    """Create and commit `staging`, load it with `plan.streams` COPY streams; return totals.

    The caller drops the table: in its transaction on success, else (after that transaction
    ended, which holds it) with :func:`drop_committed_staging`.
    """
    plan, source, target = job.plan, job.source, job.target
    assert isinstance(source.relation, QualifiedName)
    names = job.names
    with ctx.target.step("staging"):
        snapshot = str(_one(ctx.source.conn, st.export_snapshot()))
        oid = catalog.relation_oid(ctx.source.conn, source.relation)
        blocks = int(_one(ctx.source.conn, st.RELATION_BLOCKS, (oid,)))
        with connectors.target() as conn:
            conn.execute(st.create_staging_table(staging, target.columns))
            conn.commit()
    n = plan.streams
    bounds: list[int | None] = [blocks * i // n for i in range(n)] + [None]
    copy_in = st.copy_in(staging.identifier, names, plan.copy_format)
    totals = _StreamTotals(ctx.label, n, ctx.progress, ctx.expected)

    def load(i: int) -> Streamed:
        lower = bounds[i]
        assert lower is not None
        blocks_range = st.ctid_range(lower, bounds[i + 1])
        select = ctx.select(source, names, watermark=job.watermark, extra=blocks_range)
        with connectors.source() as src, connectors.target() as tgt:
            begin_read_only(src)
            src.execute(st.set_snapshot(snapshot))
            moved = pump(
                src,
                tgt,
                select,
                copy_in,
                plan.copy_format,
                label=ctx.label,
                options=ctx.options,
                progress=totals.reporter(i),
                expected=ctx.expected,
            )
            tgt.commit()
            return moved

    with ctx.target.step("copy"), ThreadPoolExecutor(max_workers=n) as pool:
        moved = sum(pool.map(load, range(n)), Streamed(0, 0))
    totals.done(moved)
    return moved


class _StreamTotals:
    """Adds up the progress of N parallel streams into one report for the table."""

    def __init__(
        self, label: str, n: int, progress: ProgressCallback | None, expected: Estimate | None
    ) -> None:
        self.label = label
        self.progress = progress
        self.expected = expected
        self.started = perf_counter()
        self.latest: list[Progress | None] = [None] * n
        self.lock = threading.Lock()

    def reporter(self, i: int) -> ProgressCallback | None:
        """The callback of stream `i` (None when nobody watches)."""
        if self.progress is None:
            return None

        def report(p: Progress) -> None:
            with self.lock:
                self.latest[i] = p
                seen = [q for q in self.latest if q is not None]
                rows = [q.rows for q in seen]
                total = Progress(
                    self.label,
                    None if None in rows else sum(r or 0 for r in rows),
                    sum(q.bytes for q in seen),
                    perf_counter() - self.started,
                    self.expected,
                )
                assert self.progress is not None
                self.progress(total)

        return report

    def done(self, moved: Streamed) -> None:
        """Report the streams' totals once they all ended."""
        if self.progress is not None:
            seconds = perf_counter() - self.started
            self.progress(
                Progress(self.label, moved.rows, moved.bytes, seconds, self.expected, final=True)
            )


def drop_committed_staging(
    ctx: CopyContext, staging: QualifiedName, connectors: Connectors
) -> None:
    """Drop a parallel run's staging table after its transaction failed (best effort)."""
    try:
        with connectors.target() as conn:
            conn.execute(st.set_session({"lock_timeout": "5s"}))
            conn.execute(st.drop_table(staging))
            conn.commit()
    except (psycopg.Error, StagecopyError):
        log.warning(
            "%s: could not drop staging table %s; the clean-up job will", ctx.label, staging
        )


def _one(
    conn: psycopg.Connection, statement: sql.SQL | sql.Composed, params: tuple[object, ...] = ()
) -> Any:
    """The single value a source statement returns."""
    row = conn.execute(statement, params or None).fetchone()
    assert row is not None
    return row[0]
