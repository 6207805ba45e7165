"""The expected size of a copy, read once before any row moves, for progress reports.

The planner's estimate of the scoped SELECT (`EXPLAIN`: rows and average row width; it runs
nothing) gives rows and bytes for any source (table or query, `where` and watermark window
included). A scope the planner puts at or below :data:`EXACT_COUNT_LIMIT` rows, at a cost of at
most :data:`EXACT_COUNT_MAX_COST`, is then counted in the copy's own snapshot: one cheap scan, and
the count is exactly what streams. The cost bound keeps a few rows that are expensive to find (a
selective `where` without an index on a big table, an aggregating `query`) from being read twice.
"""

from __future__ import annotations

from typing import Any, cast

from stagecopy_dagster import statements as st
from stagecopy_dagster.engine.context import CopyContext
from stagecopy_dagster.engine.types import CopyFormat, Estimate, SourceFacts

#: Scopes the planner puts at or below this many rows are counted exactly...
EXACT_COUNT_LIMIT = 100_000
#: ...when reading them costs at most this (planner units: about a 40 MB sequential scan).
EXACT_COUNT_MAX_COST = 5_000.0


def stream_bytes_per_row(width: int, columns: int, fmt: CopyFormat) -> int:
    """About how many bytes COPY sends per row of `width` bytes of data.

    Text adds a separator or newline per column; binary adds a 2-byte field count and a 4-byte
    length per column. Data that prints longer than it is stored (numbers, timestamps in text)
    makes this an estimate, which is how progress reports call it.
    """
    if fmt == "binary":
        return width + 2 + 4 * columns
    return width + columns


def estimate_scope(
    ctx: CopyContext,
    source: SourceFacts,
    names: list[str],
    *,
    watermark: object,
    fmt: CopyFormat,
) -> Estimate:
    """Rows and bytes the copy's main stream will move (exact rows for a small scope)."""
    select = ctx.select(source, names, watermark=watermark)
    conn = ctx.source.conn
    with ctx.target.step("estimate"):
        row = conn.execute(st.explain_estimate(select)).fetchone()
        assert row is not None
        plan = cast(dict[str, Any], row[0][0]["Plan"])
        rows, width = int(plan["Plan Rows"]), int(plan["Plan Width"])
        exact = rows <= EXACT_COUNT_LIMIT and float(plan["Total Cost"]) <= EXACT_COUNT_MAX_COST
        if exact:
            counted = conn.execute(st.count_select(select)).fetchone()
            assert counted is not None
            rows = int(counted[0])
    return Estimate(rows, rows * stream_bytes_per_row(width, len(names), fmt), exact=exact)
