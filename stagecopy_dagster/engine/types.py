"""The values that cross the engine's function boundaries, all frozen.

Nothing here reads a database or imports another engine module, so every module (and
:mod:`stagecopy_dagster.statements`) can import these without a cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

import psycopg
from psycopg import sql

if TYPE_CHECKING:
    from stagecopy_dagster.engine.schema import SchemaChange
    from stagecopy_dagster.identifiers import QualifiedName
    from stagecopy_dagster.spec import Mode
    from stagecopy_dagster.sqlguard import CheckedSql
    from stagecopy_dagster.statements.projection import Projection

CopyFormat = Literal["binary", "text"]


@dataclass(frozen=True)
class Column:
    """One column as the catalog describes it."""

    name: str
    type: str
    """`format_type()` of the column: `numeric(12,2)`, `character varying(20)`, `"Mood"`."""
    not_null: bool = False
    generated: bool = False
    """A `GENERATED ALWAYS AS (...) STORED` column: never written by COPY or MERGE."""
    identity_always: bool = False
    """A `GENERATED ALWAYS AS IDENTITY` column: written with OVERRIDING SYSTEM VALUE."""
    binary_safe: bool = True
    """Whether binary COPY of this type is portable between databases (no user type OIDs) and
    reads back what it writes (not tsquery: an empty one fails to load)."""


UserTypeKind = Literal["enum", "domain", "composite", "range"]


@dataclass(frozen=True)
class TypeAttribute:
    """One attribute of a composite type."""

    name: str
    type: str
    """`format_type()` of the attribute."""
    collation: str | None = None
    """A collation other than the type's default, as a quoted qualified name."""


@dataclass(frozen=True)
class UserType:
    """A user-defined type a copied column uses, as a catalog defines it.

    Texts (types, expressions, collations, functions) are the catalog's own renderings
    (`format_type`, `pg_get_constraintdef`, quoted qualified names), so two servers that define
    the type alike describe it alike.
    """

    name: QualifiedName
    kind: UserTypeKind
    labels: tuple[str, ...] = ()
    """enum: the labels in sort order."""
    base: str = ""
    """domain: the base type; range: the subtype (`format_type`)."""
    collation: str | None = None
    """domain, range: a collation other than the base type's default."""
    not_null: bool = False
    """domain: NOT NULL."""
    default: str | None = None
    """domain: the default expression."""
    checks: tuple[tuple[str, str], ...] = ()
    """domain: (constraint name, `CHECK (...)`) in name order."""
    attributes: tuple[TypeAttribute, ...] = ()
    """composite: the attributes in order."""
    opclass: str | None = None
    """range: a subtype operator class other than the default."""
    subtype_diff: str | None = None
    """range: the subtype difference function."""
    multirange: str | None = None
    """range: the name of its multirange type (same schema; PostgreSQL 14+)."""


ProgressCallback = Callable[["Progress"], None]
ConnectionFactory = Callable[[], AbstractContextManager[psycopg.Connection]]


@dataclass(frozen=True)
class Connectors:
    """Open more source and target connections (only `parallel` > 1 needs them)."""

    source: ConnectionFactory
    target: ConnectionFactory


class CopyPath(StrEnum):
    """How the rows reach the final table."""

    DIRECT = "direct"
    """COPY straight into the final table (nothing to match: empty target, replace, append)."""
    STAGED = "staged"
    """Every row in scope into UNLOGGED staging, then MERGE by key."""
    DIFF = "diff"
    """Keys and row hashes compared first; only new and changed rows staged and MERGEd."""


class SyncForm(StrEnum):
    """How `sync` finds and deletes the target keys that left the source scope."""

    NONE = "none"
    """Not a sync (or nothing to delete by key: direct path)."""
    IN_MERGE = "in_merge"
    """One MERGE with `WHEN NOT MATCHED BY SOURCE ... DELETE` (PostgreSQL 17+, all rows staged)."""
    AGAINST_STAGING = "against_staging"
    """A DELETE of target keys in scope that the staging table (every source row) lacks."""
    KEYS_STREAM = "keys_stream"
    """A watermark limits the staged rows: every source key streams into a keys table first."""
    DIFF_FULL_JOIN = "diff_full_join"
    """The diff's FULL JOIN flags gone keys (PostgreSQL 16+ runs it with parallel workers)."""
    DIFF_ANTI_JOIN = "diff_anti_join"
    """A separate parallel anti-join finds gone keys (PostgreSQL 15 runs no parallel FULL JOIN)."""


@dataclass(frozen=True)
class CopyOptions:
    """Knobs of one copy (the resource fills them from its config)."""

    lock_timeout: str = "30s"
    """How long to wait for another session's lock on the target before failing."""
    merge_work_mem: str = "1GB"
    """`work_mem` for the MERGE, so its hash join stays in memory."""
    progress_interval: float = 1.0
    """Seconds between progress reports while rows stream (0: after every write). Dagster's
    run log takes one every 5 s of them; the CLI's live line takes each."""
    diff_chunk: int = 100_000
    """Changed keys fetched per source COPY on the `diff` path (the keys travel as literals)."""
    write_block: int = 1 << 16
    """Join COPY blocks into writes of about this many bytes. 64 KiB measured best: 1 MiB
    joins cost 1.5x the client CPU (3.6 s vs 1.6-2.0 s per 1M rows) for no fewer stalls."""


@dataclass(frozen=True)
class Estimate:
    """How much a COPY stream is expected to move, read once before it starts."""

    rows: int
    bytes: int | None
    """The stream's expected size (None: not estimated, e.g. a key stream)."""
    exact: bool = False
    """`rows` was counted in the copy's snapshot (small scopes), not the planner's estimate."""


@dataclass(frozen=True)
class Progress:
    """Where a running copy stands."""

    table: str
    rows: int | None
    """Rows streamed so far (None for binary COPY, whose rows are counted at the end)."""
    bytes: int
    seconds: float
    expected: Estimate | None = None
    """What the stream is expected to move in all (None: unknown)."""
    step: str = "copy"
    """The step streaming: `copy` (the rows) or `copy_keys` (keys for a diff or a sync)."""
    final: bool = False
    """The stream ended: `rows` and `bytes` are its totals."""

    @property
    def mb_per_second(self) -> float:
        """Throughput so far."""
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    @property
    def rows_per_second(self) -> float | None:
        """Rows a second so far (None while rows are not counted)."""
        if self.rows is None or self.seconds <= 0:
            return None
        return self.rows / self.seconds

    @property
    def expected_rows(self) -> int | None:
        """The rows the stream is expected to move (None: unknown)."""
        return None if self.expected is None else self.expected.rows

    @property
    def expected_bytes(self) -> int | None:
        """The bytes the stream is expected to move (None: unknown)."""
        return None if self.expected is None else self.expected.bytes

    @property
    def fraction(self) -> float | None:
        """The share done, 0..1: by rows when they are counted, else by bytes (None: unknown).

        An estimate the stream has outrun gives None rather than a percentage past 100.
        """
        if self.final:
            return 1.0
        share: float | None = None
        if self.rows is not None and self.expected_rows:
            share = self.rows / self.expected_rows
        elif self.expected_bytes:
            share = self.bytes / self.expected_bytes
        if share is None or share > 1:
            return None
        return share

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at the rate so far (None: unknown)."""
        share = self.fraction
        if share is None or share <= 0 or self.seconds <= 0:
            return None
        return self.seconds * (1 - share) / share


@dataclass(frozen=True)
class Streamed:
    """What one COPY stream moved."""

    rows: int
    bytes: int

    def __add__(self, other: Streamed) -> Streamed:
        return Streamed(self.rows + other.rows, self.bytes + other.bytes)


@dataclass(frozen=True)
class Counts:
    """What a path did to the target, exact from the database."""

    rows_copied: int
    """Rows streamed from the source (on the `diff` path: only the new and changed ones)."""
    inserted: int
    updated: int
    deleted: int
    bytes: int
    rows_compared: int = 0
    """Source rows whose key and row hash the `diff` path compared with the target."""


@dataclass(frozen=True)
class SourceSize:
    """A source table's size and order as its statistics (pg_class, pg_stats) estimate them."""

    rows: float
    """`reltuples`: -1 (PostgreSQL 14+) or 0 when the table was never vacuumed or analyzed."""
    heap_bytes: int
    """The main fork's size as of the last VACUUM/ANALYZE (`relpages` x block size): what a
    scan of the table reads, TOASTed values not included."""
    correlation: tuple[tuple[str, float], ...] = ()
    """(column, `pg_stats.correlation`): 1 or -1 when the heap holds the column's values in
    order, near 0 when they are scattered."""

    @property
    def bytes_per_row(self) -> float | None:
        """Heap bytes per row, None when the statistics do not say."""
        return self.heap_bytes / self.rows if self.rows > 0 else None

    def correlation_of(self, column: str) -> float | None:
        """The column's correlation, None when it has no statistics."""
        return dict(self.correlation).get(column)


@dataclass(frozen=True)
class SourceFacts:
    """The source as it will be read: relation, columns, key."""

    relation: QualifiedName | CheckedSql | Projection
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    key_is_source_pk: bool = False
    """The key is the source table's primary key: one snapshot cannot hold a duplicate."""
    version: int = 0
    """The source server's `server_version_num`."""
    size: SourceSize | None = None
    """The source table's size and order (None for a `query`)."""


@dataclass(frozen=True)
class TargetFacts:
    """The target table as this run found (or created) it, before any row moved."""

    version: int
    """The target server's `server_version_num`."""
    created: bool
    """This run created the table (it is empty, and its key is built after the load)."""
    schema_created: bool
    """This run created the schema too: other sessions cannot see it before the commit."""
    empty: bool
    """The table holds no row (always true when `created`)."""
    added: tuple[str, ...]
    """Columns this run added (they were new at the source)."""
    columns: tuple[Column, ...]
    """The columns to copy: the source's, minus those the target generates."""
    deferred: tuple[sql.Composed, ...] = ()
    """The key and watermark index of a created table, built once its rows are in."""
    nulled: tuple[str, ...] = ()
    """Target columns gone from the source: NULL in new and changed rows."""
    schema_changes: tuple[SchemaChange, ...] = ()
    """What `on_schema_change` did or left undone this run, column by column."""
    types_created: tuple[QualifiedName, ...] = ()
    """User types this run created for the columns (others cannot see them before the commit)."""


@dataclass(frozen=True)
class CopyResult:
    """What one copy did, with exact counts from the database."""

    table: str
    source: str
    mode: Mode
    path: str
    """`direct` (COPY into the final table), `staged` (every row into staging, then MERGE) or
    `diff` (keys and row hashes compared first; only new and changed rows staged and MERGEd)."""
    copy_format: CopyFormat
    rows_copied: int
    """Rows streamed from the source (with the `diff` path: only the new and changed ones)."""
    inserted: int
    updated: int
    deleted: int
    bytes: int
    target_rows: int
    created_table: bool
    added_columns: tuple[str, ...]
    watermark: str | None
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    server_version: int
    steps: dict[str, float] = field(default_factory=dict[str, float])
    """Seconds per step, in order."""
    rows_compared: int = 0
    """Source rows whose key and row hash the `diff` path compared with the target."""
    schema_changes: tuple[SchemaChange, ...] = ()
    """What `on_schema_change` did or left undone this run, column by column."""
    source_relation: QualifiedName | CheckedSql | Projection | None = None
    """What the copy read at the source (a masked read when a column is masked)."""
    window_start: object = None
    """The watermark this run read from (its window: `incremental_field >= window_start`);
    None when it read the whole scope."""

    @property
    def seconds(self) -> float:
        """Total seconds of all steps."""
        return sum(self.steps.values())

    @property
    def rows_per_second(self) -> float:
        """Rows copied per second over the whole run."""
        return self.rows_copied / self.seconds if self.seconds > 0 else 0.0
