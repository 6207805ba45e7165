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
    from stagecopy_dagster.identifiers import QualifiedName
    from stagecopy_dagster.spec import Mode
    from stagecopy_dagster.sqlguard import CheckedSql

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
    """Whether binary COPY of this type is portable between databases (no user type OIDs)."""


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
    progress_interval: float = 5.0
    """Seconds between progress reports while rows stream (0: after every write)."""
    diff_chunk: int = 100_000
    """Changed keys fetched per source COPY on the `diff` path (the keys travel as literals)."""
    write_block: int = 1 << 16
    """Join COPY blocks into writes of about this many bytes. 64 KiB measured best: 1 MiB
    joins cost 1.5x the client CPU (3.6 s vs 1.6-2.0 s per 1M rows) for no fewer stalls."""


@dataclass(frozen=True)
class Progress:
    """Where a running copy stands."""

    table: str
    rows: int | None
    """Rows streamed so far (None for binary COPY, whose rows are counted at the end)."""
    bytes: int
    seconds: float

    @property
    def mb_per_second(self) -> float:
        """Throughput so far."""
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


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

    relation: QualifiedName | CheckedSql
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
