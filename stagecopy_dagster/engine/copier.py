"""Copy one table: source COPY stream -> UNLOGGED staging -> MERGE, in one target transaction.

:meth:`TableCopier.run` reads as the algorithm:

1. lock the target (one copy of a table at a time), then describe the source inside the
   caller's REPEATABLE READ, READ ONLY snapshot and check the spec against it;
2. create or reconcile the target table and read its watermark;
3. plan: one pure decision of path, COPY format, MERGE and sync forms, parallel streams;
4. run the path (`direct`, `staged` or `diff`), count, commit. Any failure rolls the whole
   transaction back, so the target is exactly as before and no staging table survives.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter

import psycopg

from stagecopy_dagster.engine import steps
from stagecopy_dagster.engine.context import CopyContext, Prepared
from stagecopy_dagster.engine.describe import describe_source, prepare_target
from stagecopy_dagster.engine.diff import copy_diff
from stagecopy_dagster.engine.direct import copy_direct
from stagecopy_dagster.engine.estimate import estimate_scope
from stagecopy_dagster.engine.parallel import drop_committed_staging, load_in_parallel
from stagecopy_dagster.engine.plan import MIN_TARGET_VERSION, PlanFacts, plan_copy
from stagecopy_dagster.engine.session import SourceSnapshot, TargetSession
from stagecopy_dagster.engine.staged import copy_staged
from stagecopy_dagster.engine.types import (
    ConnectionFactory,
    Connectors,
    CopyOptions,
    CopyPath,
    CopyResult,
    Counts,
    ProgressCallback,
    SourceFacts,
)
from stagecopy_dagster.engine.usertypes import LabelsPending, add_enum_labels
from stagecopy_dagster.errors import StagecopyError, UserTypeError, wrap_db_error
from stagecopy_dagster.identifiers import QualifiedName
from stagecopy_dagster.spec import TableSpec


@dataclass(frozen=True)
class _Outcome:
    """Everything the run learned and did inside the target transaction."""

    job: Prepared
    counts: Counts
    target_rows: int


#: Attempts of a copy whose source enums gained labels (each round commits them first).
_LABEL_ROUNDS = 3

#: Each path's function, as the plan names it.
_PATHS: dict[CopyPath, Callable[[CopyContext, Prepared], Counts]] = {
    CopyPath.DIRECT: copy_direct,
    CopyPath.STAGED: copy_staged,
    CopyPath.DIFF: copy_diff,
}


class TableCopier:
    """Runs the staging -> COPY -> MERGE algorithm for one table.

    Example:
        >>> with SourceSnapshot.begin(src) as snap:  # doctest: +SKIP
        ...     result = TableCopier(table, snap, target_conn).run()
    """

    def __init__(
        self,
        table: TableSpec,
        source: SourceSnapshot,
        target: psycopg.Connection,
        *,
        options: CopyOptions | None = None,
        progress: ProgressCallback | None = None,
        dry_run: bool = False,
        connectors: Connectors | tuple[ConnectionFactory, ConnectionFactory] | None = None,
    ) -> None:
        if isinstance(connectors, tuple):
            connectors = Connectors(*connectors)
        self.table = table
        self.connectors = connectors
        self.context = CopyContext(
            table=table,
            source=source,
            target=TargetSession(target, label=table.label, dry_run=dry_run),
            options=options or CopyOptions(),
            progress=progress,
            connectors=connectors,
        )

    @property
    def statements(self) -> list[str]:
        """In a dry run: every statement the run would have sent, in order."""
        return self.context.target.statements

    def plan_source(self) -> SourceFacts:
        """Describe the source and check the spec against it (nothing is written)."""
        return describe_source(self.context)

    def run(self) -> CopyResult:
        """Copy the table; return exact counts. The target is untouched when this raises.

        The one exception: enum labels new at the source are committed to the target's enum
        before the copy (a label added in a transaction cannot be used until it commits), and
        stay when the copy then fails; the copy runs again from a fresh source snapshot.
        """
        ctx = self.context
        if ctx.target.version < MIN_TARGET_VERSION:
            raise StagecopyError(
                f"the target runs PostgreSQL {ctx.target.version // 10000}; stagecopy needs "
                "15 or newer (MERGE)",
                table=ctx.label,
            )
        for _ in range(_LABEL_ROUNDS):
            try:
                return self._run_once()
            except LabelsPending as pending:
                add_enum_labels(ctx, pending.statements)
                # The next attempt reads a snapshot taken after its lock, as the first did.
                ctx.source.restart()
        raise UserTypeError(
            f"the source's enums kept gaining labels over {_LABEL_ROUNDS} attempts",
            table=ctx.label,
        )

    def _run_once(self) -> CopyResult:
        """One attempt: the whole copy in one target transaction."""
        ctx = self.context
        # Parallel streams load a staging table other sessions committed: after a failure it
        # outlives the rollback, so it is dropped once the transaction has ended.
        parallel_staging = ctx.new_staging_name()
        done = False
        try:
            with ctx.target.conn.transaction():
                outcome = self._apply(parallel_staging)
                commit_started = perf_counter()
            done = True
        except StagecopyError:
            raise
        except psycopg.Error as exc:
            raise wrap_db_error(exc, table=ctx.label, step="commit") from exc
        finally:
            if not done and self.connectors is not None and self.table.parallel > 1:
                drop_committed_staging(ctx, parallel_staging, self.connectors)
        ctx.target.steps["commit"] = perf_counter() - commit_started
        return self._result(outcome)

    def _apply(self, parallel_staging: QualifiedName) -> _Outcome:
        """Everything inside the target transaction, in order."""
        ctx = self.context
        # Lock first, then read the source: the source snapshot is taken by its first query,
        # so a run that waited for the lock cannot write rows older than the run before it.
        steps.lock_target(ctx)
        source = describe_source(ctx)
        target = prepare_target(ctx, source)
        watermark = steps.read_watermark(ctx)
        plan = plan_copy(
            PlanFacts.gather(
                self.table,
                source,
                target,
                windowed=watermark is not None,
                can_open_sessions=self.connectors is not None,
                dry_run=ctx.dry_run,
            )
        )
        job = Prepared(plan, source, target, watermark)
        if ctx.progress is not None and not ctx.dry_run:
            # Only a watched copy pays for the estimate (one EXPLAIN, a count when small).
            expected = estimate_scope(
                ctx, source, job.names, watermark=watermark, fmt=plan.copy_format
            )
            ctx = dataclasses.replace(ctx, expected=expected)
        if plan.parallel:
            assert self.connectors is not None
            moved = load_in_parallel(ctx, job, staging=parallel_staging, connectors=self.connectors)
            job = dataclasses.replace(job, loaded=(parallel_staging, moved))
        counts = _PATHS[plan.path](ctx, job)
        # Otherwise the table holds exactly what this run copied: no need to count.
        target_rows = steps.count_target(ctx) if plan.count_target else counts.inserted
        return _Outcome(job, counts, target_rows)

    def _result(self, outcome: _Outcome) -> CopyResult:
        counts = outcome.counts
        return CopyResult(
            table=self.table.label,
            source=self.table.source_label,
            mode=self.table.mode,
            path=outcome.job.plan.path.value,
            copy_format=outcome.job.plan.copy_format,
            rows_copied=counts.rows_copied,
            inserted=counts.inserted,
            updated=counts.updated,
            deleted=counts.deleted,
            bytes=counts.bytes,
            target_rows=outcome.target_rows,
            created_table=outcome.job.target.created,
            added_columns=outcome.job.target.added,
            watermark=None if outcome.job.watermark is None else str(outcome.job.watermark),
            columns=outcome.job.target.columns,
            key=outcome.job.source.key,
            server_version=outcome.job.target.version,
            steps=dict(self.context.target.steps),
            rows_compared=counts.rows_compared,
            schema_changes=outcome.job.target.schema_changes,
            source_relation=outcome.job.source.relation,
            window_start=outcome.job.watermark,
        )
