"""The one place that decides how a table is copied: a pure function of facts.

:func:`plan_copy` takes what describing the source and preparing the target found
(:class:`PlanFacts`) and returns a :class:`CopyPlan`: the path, the COPY format, the MERGE and
sync forms, whether to look for repeated keys and whether to count the target afterwards.
Nothing here touches a database, so every decision is a row in a unit-test table.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from stagecopy_dagster.engine.types import (
    CopyFormat,
    CopyPath,
    SourceFacts,
    SourceSize,
    SyncForm,
    TargetFacts,
)
from stagecopy_dagster.identifiers import QualifiedName
from stagecopy_dagster.spec import Mode, TableSpec

#: MERGE arrived in PostgreSQL 15: the oldest target stagecopy can write to.
MIN_TARGET_VERSION = 150000
#: `hash_record_extended`, which the diff's row hashes use, arrived in PostgreSQL 14.
DIFF_MIN_VERSION = 140000
#: PostgreSQL 16 runs a FULL JOIN with parallel workers (the diff's one-join sync).
PARALLEL_FULL_JOIN_VERSION = 160000
#: PostgreSQL 17 brought `MERGE ... RETURNING merge_action()` and `WHEN NOT MATCHED BY SOURCE`.
MERGE_RETURNING_VERSION = 170000


@dataclass(frozen=True)
class PlanFacts:
    """Everything the plan depends on, read before any row moves."""

    mode: Mode
    source_version: int
    target_version: int
    target_empty: bool
    """The target table holds no row (or was created by this run)."""
    schema_created: bool
    """The target schema is new in this (uncommitted) run: other sessions cannot see it."""
    columns_added: bool
    """A column was just added to the target: every row would differ from its hash."""
    incremental: bool
    """The spec sets `incremental_field`."""
    windowed: bool
    """A watermark was found: only rows at or after it are read (a subset of the scope)."""
    has_where: bool
    diff_enabled: bool
    """The spec's `diff` (default true)."""
    parallel: int
    """The spec's `parallel`."""
    source_is_table: bool
    """The source is a table (not a `query`): heap blocks can be split between streams."""
    key_is_source_pk: bool
    """The key is the source's primary key: a snapshot cannot repeat it."""
    needs_key: bool
    """The mode matches rows by key (merge, sync)."""
    key_binary_safe: bool
    """Every key column travels in binary COPY (no domain, composite, array or user type)."""
    same_binary_types: bool
    """Every copied column has the same, portable type on both sides."""
    types_created: bool = False
    """A user type is new in this (uncommitted) run: other sessions cannot see it."""
    can_open_sessions: bool = True
    """More connections can be opened (needed by parallel streams)."""
    dry_run: bool = False
    """Plan only: nothing is written, so nothing is loaded in parallel or checked for repeats."""

    @classmethod
    def gather(
        cls,
        table: TableSpec,
        source: SourceFacts,
        target: TargetFacts,
        *,
        windowed: bool,
        can_open_sessions: bool,
        dry_run: bool,
    ) -> PlanFacts:
        """The facts of one table from its spec and what describing both sides found."""
        copied = {c.name: c for c in target.columns}
        at_source = {c.name: c for c in source.columns}
        return cls(
            mode=table.mode,
            source_version=source.version,
            target_version=target.version,
            target_empty=target.empty,
            schema_created=target.schema_created,
            columns_added=bool(target.added),
            incremental=table.incremental_field is not None,
            windowed=windowed,
            has_where=table.where is not None,
            diff_enabled=table.diff,
            parallel=table.parallel,
            source_is_table=isinstance(source.relation, QualifiedName),
            key_is_source_pk=source.key_is_source_pk,
            needs_key=table.mode.needs_key,
            key_binary_safe=all(copied[k].binary_safe for k in source.key),
            # Binary only where both sides hold exactly the same, portable types.
            same_binary_types=all(
                c.binary_safe and at_source[c.name].binary_safe and at_source[c.name].type == c.type
                for c in target.columns
            ),
            types_created=bool(target.types_created),
            can_open_sessions=can_open_sessions,
            dry_run=dry_run,
        )


@dataclass(frozen=True)
class CopyPlan:
    """How one table is copied."""

    path: CopyPath
    copy_format: CopyFormat
    key_format: CopyFormat
    """The format of a stream of key columns alone (sync's key stream)."""
    streams: int
    """COPY streams loading a committed staging table; 1 = one stream in the run's transaction."""
    merge_returning: bool
    """MERGE reports its inserts, updates and deletes itself (else they are counted around it)."""
    sync: SyncForm
    truncate: bool
    """`replace` without a scope: TRUNCATE the target instead of deleting rows."""
    delete_scope: bool
    """`replace` with a scope: delete the target rows in scope first."""
    check_duplicates: bool
    """Look for repeated or NULL keys among the copied rows before they land."""
    count_target: bool
    """Count the target's rows afterwards (else it holds exactly the rows this run copied)."""

    @property
    def parallel(self) -> bool:
        """Whether several streams load a committed staging table first."""
        return self.streams > 1


def plan_copy(facts: PlanFacts) -> CopyPlan:
    """Decide how to copy a table from what is known about it.

    Example:
        >>> plan_copy(facts).path  # doctest: +SKIP
        <CopyPath.DIFF: 'diff'>
    """
    streams = _streams(facts)
    path = _path(facts, streams)
    copy_format: CopyFormat = "binary" if facts.same_binary_types else "text"
    sync = _sync_form(facts, path)
    replace = facts.mode is Mode.REPLACE
    return CopyPlan(
        path=path,
        copy_format=copy_format,
        key_format="binary" if copy_format == "binary" and facts.key_binary_safe else "text",
        streams=streams,
        merge_returning=facts.target_version >= MERGE_RETURNING_VERSION,
        sync=sync,
        truncate=replace and not facts.has_where,
        delete_scope=replace and facts.has_where,
        check_duplicates=facts.needs_key and not facts.key_is_source_pk and not facts.dry_run,
        count_target=not (facts.target_empty or (replace and not facts.has_where)),
    )


def _streams(facts: PlanFacts) -> int:
    """N streams split the source's heap blocks: only a table whose schema and types others see."""
    if (
        facts.parallel <= 1
        or facts.dry_run
        or not facts.can_open_sessions
        or not facts.source_is_table
        or facts.schema_created
        or facts.types_created
    ):
        return 1
    return facts.parallel


def _path(facts: PlanFacts, streams: int) -> CopyPath:
    # Nothing to match against in an empty target (or for replace/append): MERGE is wasted work.
    if facts.target_empty or facts.mode in (Mode.REPLACE, Mode.APPEND):
        return CopyPath.DIRECT
    return CopyPath.DIFF if streams == 1 and _diff_applies(facts) else CopyPath.STAGED


def _diff_applies(facts: PlanFacts) -> bool:
    """Compare keys and row hashes first: only for a full re-copy whose key travels in binary.

    A watermark already limits the rows; a column just added makes every row differ.
    """
    return (
        facts.diff_enabled
        and not facts.incremental
        and not facts.columns_added
        and facts.key_binary_safe
        and min(facts.source_version, facts.target_version) >= DIFF_MIN_VERSION
    )


def _sync_form(facts: PlanFacts, path: CopyPath) -> SyncForm:
    if facts.mode is not Mode.SYNC or path is CopyPath.DIRECT:
        return SyncForm.NONE
    if path is CopyPath.DIFF:
        if facts.target_version >= PARALLEL_FULL_JOIN_VERSION:
            return SyncForm.DIFF_FULL_JOIN
        return SyncForm.DIFF_ANTI_JOIN
    if facts.windowed:  # the staged rows are only the window: deletes need every key
        return SyncForm.KEYS_STREAM
    if facts.target_version >= MERGE_RETURNING_VERSION:
        return SyncForm.IN_MERGE
    return SyncForm.AGAINST_STAGING


# --- how a created table gets its key and watermark index ---------------------------------------


class IndexBuild(StrEnum):
    """When the key (or the watermark index) of a table this run creates is built."""

    BEFORE_LOAD = "before_load"
    """With the table: every row enters the B-tree as it is copied."""
    AFTER_LOAD = "after_load"
    """Once the rows are in: one scan of the new heap and one sort (parallel workers where the
    server allows `max_parallel_maintenance_workers`)."""


#: Heap bytes per row from which building the key with the table is expected to pay. Measured
#: on 2 cores, PostgreSQL 18 (docs/performance.md): a key built after the load took 0.70 x the
#: time of one built with the table at ~290 bytes a row and 0.83 x at ~800 bytes a row: the
#: B-tree insert per row costs about 10-25 us, the later build about 3 us a row plus about
#: 6 ns per heap byte it scans again. The two meet near 4 KB a row, wider than TOAST lets a
#: row be by default (2 KB), so this holds for tables with a raised `toast_tuple_target`.
WIDE_ROW_BYTES = 4096
#: Values arriving in index order (|pg_stats.correlation| at least this) are appended at the
#: B-tree's right edge, the cheap case; scattered values make every insert a random descent.
IN_ORDER_CORRELATION = 0.9
#: Below this heap size the choice does not matter (well under a second either way).
SMALL_TABLE_BYTES = 64 * 1024 * 1024


def plan_index_build(
    size: SourceSize | None,
    column: str,
    *,
    may_refuse_rows: bool,
    cache_bytes: int | None = None,
) -> IndexBuild:
    """Build an index on `column` of a created table before or after its first load.

    After the load (the measured default) unless the source's statistics say the later build's
    second scan of the new heap costs more than inserting each key as it comes: rows at least
    :data:`WIDE_ROW_BYTES` wide, or a heap larger than the target's page cache (`cache_bytes`,
    its `effective_cache_size`), which the later scan would read from disk again. Before the
    load also needs `column`'s values in heap order (appends at the B-tree's right edge) and a
    table that is not small; and never for a key the rows may not fit (`may_refuse_rows`: a
    key the source does not enforce), so a load cannot fail on the key half way.

    Example:
        >>> plan_index_build(SourceSize(1e7, 40 << 30, (("id", 1.0),)), "id",
        ...                  may_refuse_rows=False, cache_bytes=4 << 30)
        <IndexBuild.BEFORE_LOAD: 'before_load'>
    """
    if size is None or may_refuse_rows or size.heap_bytes < SMALL_TABLE_BYTES:
        return IndexBuild.AFTER_LOAD
    per_row = size.bytes_per_row
    order = size.correlation_of(column)
    if per_row is None or order is None or abs(order) < IN_ORDER_CORRELATION:
        return IndexBuild.AFTER_LOAD
    beyond_cache = cache_bytes is not None and size.heap_bytes > cache_bytes
    if per_row >= WIDE_ROW_BYTES or beyond_cache:
        return IndexBuild.BEFORE_LOAD
    return IndexBuild.AFTER_LOAD
