"""The `direct` path: COPY straight into the final table, when there is nothing to match.

An empty (or just created) target, `replace` and `append` need no MERGE: rows stream into the
final table (after `replace` emptied its scope), then a created table gets its key and index.
"""

from __future__ import annotations

from stagecopy_dagster import statements as st
from stagecopy_dagster.engine import steps
from stagecopy_dagster.engine.context import CopyContext, Prepared
from stagecopy_dagster.engine.plan import CopyPlan
from stagecopy_dagster.engine.types import Counts, Streamed


def copy_direct(ctx: CopyContext, job: Prepared) -> Counts:
    """Copy into the final table (or move in what parallel streams loaded)."""
    plan, source, target = job.plan, job.source, job.target
    deleted = _empty_scope(ctx, plan)
    names = job.names
    if job.loaded is not None:  # loaded by parallel streams: one INSERT moves it in
        staging, moved = job.loaded
        with ctx.target.step("insert"):
            rows = ctx.target.execute(st.insert_from(ctx.target_name, staging, target.columns))
            ctx.target.execute(st.drop_table(staging))
        moved = Streamed(rows, moved.bytes)
    else:
        moved = ctx.stream(
            ctx.select(source, names, watermark=job.watermark),
            st.copy_in(ctx.target_name.identifier, names, plan.copy_format),
            plan.copy_format,
            expected=ctx.expected,
        )
    if plan.check_duplicates:
        # The target was empty, so every row in it came from this copy: no unique index
        # may have caught a repeated or NULL key, so look before committing.
        steps.check_duplicates(ctx, ctx.target_name, source.key)
    steps.build_deferred(ctx, target, source.key)
    return Counts(moved.rows, moved.rows, 0, deleted, moved.bytes)


def _empty_scope(ctx: CopyContext, plan: CopyPlan) -> int:
    """`replace`: remove the target rows in scope first; return how many."""
    if not (plan.truncate or plan.delete_scope):
        return 0
    with ctx.target.step("delete"):
        if plan.truncate:
            deleted = int(ctx.target.scalar(st.count_rows(ctx.target_name)))
            ctx.target.execute(st.truncate(ctx.target_name))
            return deleted
        assert ctx.table.where is not None
        return ctx.target.execute(st.delete_scope(ctx.target_name, ctx.table.where))
