"""What every step of one copy works with: the table, both sessions, the knobs."""

from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter

from psycopg import sql

from stagecopy_dagster import statements as st
from stagecopy_dagster.engine.plan import CopyPlan
from stagecopy_dagster.engine.session import SourceSnapshot, TargetSession
from stagecopy_dagster.engine.stream import pump
from stagecopy_dagster.engine.types import (
    Connectors,
    CopyFormat,
    CopyOptions,
    Estimate,
    Progress,
    ProgressCallback,
    SourceFacts,
    Streamed,
    TargetFacts,
)
from stagecopy_dagster.identifiers import QualifiedName, staging_table_name
from stagecopy_dagster.spec import Mode, TableSpec


@dataclass(frozen=True)
class Prepared:
    """What a path starts from: the plan and the facts it was made from."""

    plan: CopyPlan
    source: SourceFacts
    target: TargetFacts
    watermark: object = None
    """The target's newest `incremental_field` in scope, less `lookback` (None: read all)."""
    loaded: tuple[QualifiedName, Streamed] | None = None
    """A staging table parallel streams already filled, and what they moved."""

    @property
    def names(self) -> list[str]:
        """The names of the columns to copy."""
        return [c.name for c in self.target.columns]


@dataclass(frozen=True)
class CopyContext:
    """One table's copy: the spec, the source snapshot, the target session and the knobs."""

    table: TableSpec
    source: SourceSnapshot
    target: TargetSession
    options: CopyOptions
    progress: ProgressCallback | None = None
    connectors: Connectors | None = None
    """Open more source/target connections: needed only for `parallel` > 1."""
    expected: Estimate | None = None
    """What the main row stream should move (read only when someone watches the progress)."""

    @property
    def label(self) -> str:
        """The table as messages name it."""
        return self.table.label

    @property
    def target_name(self) -> QualifiedName:
        """The final table."""
        return self.table.target_table

    @property
    def dry_run(self) -> bool:
        """Plan only: nothing is written."""
        return self.target.dry_run

    def new_staging_name(self) -> QualifiedName:
        """A fresh, short, unique staging table name next to the target table."""
        return QualifiedName(self.target_name.schema, staging_table_name())

    def select(
        self,
        source: SourceFacts,
        names: tuple[str, ...] | list[str],
        *,
        watermark: object = None,
        extra: sql.Composable | None = None,
    ) -> sql.Composed:
        """The source SELECT of `names` in the spec's scope (and window, and `extra`)."""
        where = st.scope_filter(
            self.table.where,
            incremental_field=self.table.incremental_field,
            watermark=watermark,
            inclusive=self.table.mode is not Mode.APPEND,
            extra=extra,
        )
        return st.select_rows(source.relation, names, where)

    def stream(
        self,
        select: sql.Composable,
        copy_in: sql.Composed,
        fmt: CopyFormat,
        *,
        step: str = "copy",
        expected: Estimate | None = None,
    ) -> Streamed:
        """Stream `select` from the source snapshot into `copy_in` on the target, as a step.

        Progress reports carry `expected`, what the stream should move in all (None: unknown).
        """
        if self.dry_run:
            self.target.record(
                "-- on the source, streamed into the next statement:\n"
                + st.copy_out(select, fmt).as_string(self.source.conn)
            )
            self.target.record(copy_in.as_string(self.target.conn))
            return Streamed(0, 0)
        started = perf_counter()
        with self.target.step(step):
            moved = pump(
                self.source.conn,
                self.target.conn,
                select,
                copy_in,
                fmt,
                label=self.label,
                options=self.options,
                progress=self.progress,
                expected=expected,
                step=step,
            )
        if self.progress is not None:
            seconds = perf_counter() - started
            self.progress(
                Progress(self.label, moved.rows, moved.bytes, seconds, expected, step, final=True)
            )
        return moved
