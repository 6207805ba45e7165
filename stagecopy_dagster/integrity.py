"""The integrity comparison behind the `integrity` asset check.

It compares the source rows in scope with the target rows in the *same* scope (same `where`),
over the columns stagecopy copies. Both sides first compute a digest per bucket of keys in one
scan; only buckets whose digests differ are read key by key, so a clean 1M-row table costs two
parallel scans and a drifted one reports exact counts and sample keys.

Run inside the copy's source snapshot, it sees exactly what the copy read, so writers on the
source during the copy cannot cause a false alarm; run on its own it opens a fresh snapshot and
reports honest drift.

After an incremental copy the check covers what that copy claims (`check_scope: window`): the
rows of the watermark window it copied, compared row by row as above, and the count of the
scope's rows outside the window on both sides (the count reads no column; the window's hashes
can use an index on the watermark column). It does
not hash rows outside the window, so a row changed at the source without moving its
watermark is left to the full check (`stagecopy check`, `check_scope: full`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from stagecopy_dagster import statements as st
from stagecopy_dagster.identifiers import QualifiedName
from stagecopy_dagster.spec import Mode, TableSpec
from stagecopy_dagster.sqlguard import CheckedSql
from stagecopy_dagster.statements import Column
from stagecopy_dagster.statements.projection import Projection

#: How many sample keys a report keeps per kind of difference.
SAMPLE_SIZE = 5
#: Buckets read per pass while drilling down (each pass scans both scopes once; fewer passes
#: are faster, more keep memory bounded when a whole table has drifted).
_BUCKET_BATCH = 256


@dataclass(frozen=True)
class IntegrityReport:
    """Differences between the source scope and the target scope."""

    table: str
    mode: Mode
    scope: str | None
    source_rows: int
    target_rows: int
    missing_rows: int
    """Rows in the source scope that the target lacks."""
    extra_rows: int
    """Rows in the target scope that the source lacks."""
    changed_rows: int
    """Rows on both sides (same key) whose values differ."""
    sample_missing: tuple[str, ...]
    sample_extra: tuple[str, ...]
    sample_changed: tuple[str, ...]
    seconds: float
    same_snapshot: bool
    """Whether the source side was read in the snapshot the copy read."""
    check_scope: str = "full"
    """`full`: every row in scope compared; `window`: the rows of the incremental window
    compared, the rest of the scope counted."""
    window: str | None = None
    """With `check_scope: window`, the window's condition (e.g. `updated_at >= '...'`)."""
    window_rows: int | None = None
    """With `check_scope: window`, the source rows in the window."""

    @property
    def passed(self) -> bool:
        """Whether the differences are acceptable for the table's mode.

        `sync` and `replace`: none at all. `merge`: nothing missing or changed (extra target
        rows are reported, not failed). `append`: nothing missing.
        """
        if self.mode in (Mode.SYNC, Mode.REPLACE):
            return self.missing_rows == self.extra_rows == self.changed_rows == 0
        if self.mode is Mode.MERGE:
            return self.missing_rows == self.changed_rows == 0
        return self.missing_rows == 0

    @property
    def summary(self) -> str:
        """One line for logs and the check's description."""
        verdict = "passed" if self.passed else "FAILED"
        line = (
            f"{self.table} ({self.mode.value}): {verdict}: source {self.source_rows}, "
            f"target {self.target_rows}, missing {self.missing_rows}, extra {self.extra_rows}, "
            f"changed {self.changed_rows}"
        )
        if self.check_scope == "window":
            line += f" (window {self.window}: {self.window_rows} rows compared, the rest counted)"
        return line


#: `hash_record_extended` arrived in PostgreSQL 14.
_RECORD_HASH_VERSION = 140000


def portable_columns(columns: Sequence[Column], *versions: int) -> list[str]:
    """Columns the check may hash in binary: portable types, every server PostgreSQL 14+."""
    if any(v < _RECORD_HASH_VERSION for v in versions):
        return []
    return [c.name for c in columns if st.has_portable_hash(c.type)]


@dataclass(frozen=True)
class Window:
    """The rows an incremental copy read: `field >= start` (`>` when not `inclusive`)."""

    field: str
    start: Any
    inclusive: bool = True

    def condition(self) -> sql.Composed:
        """The window as a SQL condition."""
        return st.window_condition(self.field, self.start, inclusive=self.inclusive)

    @property
    def text(self) -> str:
        """The window for people: `updated_at >= 2024-01-01 00:00:00+00:00`."""
        return f"{self.field} {'>=' if self.inclusive else '>'} {self.start}"


@dataclass(frozen=True)
class _Side:
    """One side of the comparison: a connection and the relation read on it."""

    conn: psycopg.Connection
    relation: QualifiedName | CheckedSql | Projection


@dataclass(frozen=True)
class _Scope:
    """What both sides hash: the same columns, bucket key, `where` and binary-hashed columns."""

    columns: Sequence[str]
    key: Sequence[str]
    where: CheckedSql | None
    hashable: Sequence[str]
    window: Window | None = None

    def digests(
        self, side: _Side, counted: int | None = None
    ) -> tuple[dict[int, tuple[int, Any]], int]:
        """Row count and hash sum per bucket of keys on `side`, and the rows outside the window.

        Without a window every row in scope is in a bucket (0 outside). With one, the scope is
        counted apart: one statement hashes only the window's rows (an index on the watermark
        column serves it), one counts and reads no column; in one transaction, so they agree.
        `counted`: the scope's rows on this side, already counted (then not counted again).
        """
        stmt = st.bucket_digests(
            side.relation,
            self.columns,
            key=self.key,
            where=self.where,
            hashable=self.hashable,
            window=None if self.window is None else self.window.condition(),
        )
        buckets = {int(b): (int(n), s) for b, n, s in side.conn.execute(stmt).fetchall()}
        if self.window is None:
            return buckets, 0
        if counted is None:
            row = side.conn.execute(st.count_scope(side.relation, self.where)).fetchone()
            assert row is not None
            counted = int(row[0])
        return buckets, counted - sum(n for n, _ in buckets.values())

    def rows(self, side: _Side, buckets: list[int]) -> list[tuple[str, int]]:
        """Key text and row hash of the rows on `side` in one of `buckets`."""
        stmt = st.row_digests(
            side.relation,
            self.columns,
            key=self.key,
            where=self.where,
            buckets=buckets,
            hashable=self.hashable,
            window=None if self.window is None else self.window.condition(),
        )
        return side.conn.execute(stmt).fetchall()


@dataclass
class _Tally:
    """Running counts per kind of difference, with the first few keys of each as samples."""

    counts: Counter[str] = field(default_factory=Counter[str])
    samples: dict[str, list[str]] = field(
        default_factory=lambda: {"missing": [], "extra": [], "changed": []}
    )

    def note(self, kind: str, key: str, n: int = 1) -> None:
        self.counts[kind] += n
        if len(self.samples[kind]) < SAMPLE_SIZE:
            self.samples[kind].append(key)


def _by_key(rows: list[tuple[str, int]]) -> tuple[dict[str, int], list[str]]:
    """Row hash per key, and every repeat of a key beyond its first row."""
    found: dict[str, int] = {}
    repeats: list[str] = []
    for key, digest in rows:
        if key in found:
            repeats.append(key)
        else:
            found[key] = digest
    return found, repeats


def _tally_keyed(
    tally: _Tally, source_rows: list[tuple[str, int]], target_rows: list[tuple[str, int]]
) -> None:
    """Tally differences between rows matched by key."""
    s_map, s_repeats = _by_key(source_rows)
    t_map, t_repeats = _by_key(target_rows)
    # A key held twice is a difference a dict would hide.
    for k in s_repeats:
        tally.note("missing", k)
    for k in t_repeats:
        tally.note("extra", k)
    for k, h in s_map.items():
        other = t_map.get(k)
        if other is None:
            tally.note("missing", k)
        elif other != h:
            tally.note("changed", k)
    for k in t_map.keys() - s_map.keys():
        tally.note("extra", k)


def _tally_multiset(
    tally: _Tally, source_rows: list[tuple[str, int]], target_rows: list[tuple[str, int]]
) -> None:
    """Tally differences between rows compared as a multiset (tables without a key)."""
    s_count = Counter(source_rows)
    t_count = Counter(target_rows)
    for (text, _), n in (s_count - t_count).items():
        tally.note("missing", text, n)
    for (text, _), n in (t_count - s_count).items():
        tally.note("extra", text, n)


def _drill_down(
    pool: ThreadPoolExecutor,
    sides: tuple[_Side, _Side],
    *,
    scope: _Scope,
    differing: list[int],
    keyed: bool,
) -> _Tally:
    """Read the `differing` buckets row by row on both sides, a batch at a time, and tally."""
    source, target = sides
    tally = _Tally()
    tally_batch = _tally_keyed if keyed else _tally_multiset
    for i in range(0, len(differing), _BUCKET_BATCH):
        batch = differing[i : i + _BUCKET_BATCH]
        s_f = pool.submit(scope.rows, source, batch)
        t_f = pool.submit(scope.rows, target, batch)
        tally_batch(tally, s_f.result(), t_f.result())
    return tally


def compare(
    table: TableSpec,
    *,
    source: psycopg.Connection,
    source_relation: QualifiedName | CheckedSql | Projection,
    target: psycopg.Connection,
    columns: Sequence[str],
    key: Sequence[str],
    same_snapshot: bool,
    hashable: Sequence[str] = (),
    window: Window | None = None,
    target_rows: int | None = None,
) -> IntegrityReport:
    """Compare source and target scopes; both connections must be inside a transaction.

    `key` may be empty (tables without a key): rows are then compared as a multiset.
    `hashable` names the columns whose types hash portably (binary fingerprints, faster than
    text; both servers must be PostgreSQL 14+); see :func:`portable_columns`. With `window`
    (after an incremental copy) only the window's rows are compared row by row; the scope's
    rows outside it are counted on both sides, and a difference in that count is reported as
    missing (or extra) rows without sample keys. `target_rows` (with `window`): the target
    scope's rows as the copy counted them in its own transaction, so they are not counted again.
    """
    started = time.perf_counter()
    keyed = bool(key)
    where = table.where
    scope = _Scope(list(columns), list(key) if keyed else list(columns), where, hashable, window)
    sides = (_Side(source, source_relation), _Side(target, table.target_table))
    with ThreadPoolExecutor(max_workers=2) as pool:
        src_f = pool.submit(scope.digests, sides[0])
        tgt_f = pool.submit(scope.digests, sides[1], target_rows)
        (src_d, src_out), (tgt_d, tgt_out) = src_f.result(), tgt_f.result()
        differing = sorted(b for b in set(src_d) | set(tgt_d) if src_d.get(b) != tgt_d.get(b))
        tally = _drill_down(pool, sides, scope=scope, differing=differing, keyed=keyed)
    # Outside the window only counts are known: a shortfall is missing rows, a surplus extra.
    outside = src_out - tgt_out
    src_window = sum(n for n, _ in src_d.values())
    return IntegrityReport(
        table=table.label,
        mode=table.mode,
        scope=None if where is None else where.text,
        source_rows=src_window + src_out,
        target_rows=sum(n for n, _ in tgt_d.values()) + tgt_out,
        missing_rows=tally.counts["missing"] + max(outside, 0),
        extra_rows=tally.counts["extra"] + max(-outside, 0),
        changed_rows=tally.counts["changed"],
        sample_missing=tuple(tally.samples["missing"]),
        sample_extra=tuple(tally.samples["extra"]),
        sample_changed=tuple(tally.samples["changed"]),
        seconds=time.perf_counter() - started,
        same_snapshot=same_snapshot,
        check_scope="full" if window is None else "window",
        window=None if window is None else window.text,
        window_rows=None if window is None else src_window,
    )
