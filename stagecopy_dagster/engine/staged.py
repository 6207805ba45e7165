"""The `staged` path: every row in scope into UNLOGGED staging, then MERGE by key.

Also home of the MERGE itself and sync's deletes, which the `diff` path shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stagecopy_dagster import statements as st
from stagecopy_dagster.engine import steps
from stagecopy_dagster.engine.context import CopyContext, Prepared
from stagecopy_dagster.engine.plan import CopyPlan
from stagecopy_dagster.engine.types import Counts, SourceFacts, SyncForm, TargetFacts
from stagecopy_dagster.identifiers import QualifiedName


@dataclass(frozen=True)
class Merged:
    """What the MERGE did."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0


def copy_staged(ctx: CopyContext, job: Prepared) -> Counts:
    """Stage the rows in scope (or take what parallel streams loaded), MERGE, sync, drop."""
    plan, source, target = job.plan, job.source, job.target
    names = job.names
    if job.loaded is not None:
        staging, moved = job.loaded
    else:
        staging = create_staging(ctx, names)
        moved = ctx.stream(
            ctx.select(source, names, watermark=job.watermark),
            st.copy_in(staging.identifier, names, plan.copy_format),
            plan.copy_format,
            expected=ctx.expected,
        )
    # MERGE alone would not notice two staged rows with one key when only one of them
    # differs from the target; unless the source's own primary key rules that out, look.
    if plan.check_duplicates:
        steps.check_duplicates(ctx, staging, source.key)
    merged = merge(ctx, plan, source, target, staging, staged_rows=moved.rows)
    deleted = merged.deleted
    if plan.sync in (SyncForm.KEYS_STREAM, SyncForm.AGAINST_STAGING):
        with ctx.target.step("delete"):
            deleted = _delete_missing(ctx, plan, source, staging)
    with ctx.target.step("drop_staging"):
        ctx.target.execute(st.drop_table(staging))
    return Counts(moved.rows, merged.inserted, merged.updated, deleted, moved.bytes)


def create_staging(ctx: CopyContext, names: Sequence[str]) -> QualifiedName:
    """The `staging` step: an UNLOGGED table shaped like the target's `names` columns."""
    staging = ctx.new_staging_name()
    with ctx.target.step("staging"):
        ctx.target.execute(st.create_staging(staging, ctx.target_name, names))
    return staging


def merge(
    ctx: CopyContext,
    plan: CopyPlan,
    source: SourceFacts,
    target: TargetFacts,
    staging: QualifiedName,
    *,
    staged_rows: int,
    compared: int = 0,
) -> Merged:
    """The `merge` step: upsert the staged rows by key (and, in one statement, sync's deletes)."""
    key = source.key
    with ctx.target.step("merge"):
        ctx.target.execute(st.set_local("work_mem", ctx.options.merge_work_mem))
        if _few_rows(ctx, staged_rows, compared):
            # A few staged rows against a big table: probe the key index (nested loop)
            # instead of hashing every target row (3.0 s -> 1.0 s for 10k of 1M rows).
            ctx.target.execute(st.set_local("random_page_cost", "1.1"))
        refused = "the staged rows were refused by MERGE"
        with steps.key_guard(ctx, staging, key, savepoint="stagecopy_merge", what=refused):
            if plan.merge_returning:
                statement = st.merge(
                    ctx.target_name,
                    staging,
                    columns=target.columns,
                    key=key,
                    delete_scope=ctx.table.where,
                    delete_missing=plan.sync is SyncForm.IN_MERGE,
                    returning=True,
                    nulled=target.nulled,
                )
                inserted, updated, deleted = ctx.target.write_returning(statement, 3)
                return Merged(inserted, updated, deleted)
            # No RETURNING before PostgreSQL 17: the inserts are the staged keys the target lacks.
            new_keys = st.count_new_keys(staging, ctx.target_name, key=key)
            inserted = 0 if ctx.dry_run else int(ctx.target.scalar(new_keys))
            affected = ctx.target.execute(
                st.merge(
                    ctx.target_name, staging, columns=target.columns, key=key, nulled=target.nulled
                )
            )
            return Merged(inserted, affected - inserted)


def _few_rows(ctx: CopyContext, staged_rows: int, compared: int) -> bool:
    """Whether the staged rows are a small share (< 5%) of the target's size.

    The size is the planner's estimate, or the rows the diff compared when that is larger
    (a table loaded moments ago by this tool has not been analyzed yet: estimate -1).
    """
    estimate = ctx.target.scalar(st.ESTIMATED_ROWS, (str(ctx.target_name),))
    size = max(float(estimate) if estimate is not None else 0.0, float(compared))
    return staged_rows * 20 < size


def _delete_missing(
    ctx: CopyContext, plan: CopyPlan, source: SourceFacts, staging: QualifiedName
) -> int:
    """Sync: delete the target keys in scope that the source lacks; return how many.

    With a watermark the staged rows are only the window, so every source key in scope is
    streamed into a keys table first; otherwise the staging table holds every key.
    """
    key = source.key
    keys = staging
    if plan.sync is SyncForm.KEYS_STREAM:
        keys = ctx.new_staging_name()
        ctx.target.execute(st.create_staging(keys, ctx.target_name, key))
        ctx.stream(
            ctx.select(source, key),
            st.copy_in(keys.identifier, key, plan.key_format),
            plan.key_format,
            step="copy_keys",
            expected=None,  # every key in scope, not the window the estimate is of
        )
    deleted = ctx.target.execute(
        st.delete_missing(ctx.target_name, keys, key=key, where=ctx.table.where)
    )
    if keys is not staging:
        ctx.target.execute(st.drop_table(keys))
    return deleted
