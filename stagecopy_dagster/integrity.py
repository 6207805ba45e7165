"""The integrity comparison behind the `integrity` asset check.

It compares the source rows in scope with the target rows in the *same* scope (same `where`),
over the columns stagecopy copies. Both sides first compute a digest per bucket of keys in one
scan; only buckets whose digests differ are read key by key, so a clean 1M-row table costs two
parallel scans and a drifted one reports exact counts and sample keys.

Run inside the copy's source snapshot, it sees exactly what the copy read, so writers on the
source during the copy cannot cause a false alarm; run on its own it opens a fresh snapshot and
reports honest drift.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg

from stagecopy_dagster import statements as st
from stagecopy_dagster.identifiers import QualifiedName
from stagecopy_dagster.spec import Mode, TableSpec
from stagecopy_dagster.sqlguard import CheckedSql
from stagecopy_dagster.statements import Column

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
        return (
            f"{self.table} ({self.mode.value}): {verdict}: source {self.source_rows}, "
            f"target {self.target_rows}, missing {self.missing_rows}, extra {self.extra_rows}, "
            f"changed {self.changed_rows}"
        )


#: `hash_record_extended` arrived in PostgreSQL 14.
_RECORD_HASH_VERSION = 140000


def portable_columns(columns: Sequence[Column], *versions: int) -> list[str]:
    """Columns the check may hash in binary: portable types, every server PostgreSQL 14+."""
    if any(v < _RECORD_HASH_VERSION for v in versions):
        return []
    return [c.name for c in columns if st.has_portable_hash(c.type)]


def _digests(
    conn: psycopg.Connection,
    relation: QualifiedName | CheckedSql,
    columns: Sequence[str],
    key: Sequence[str],
    where: CheckedSql | None,
    hashable: Sequence[str],
) -> dict[int, tuple[int, Any]]:
    rows = conn.execute(st.bucket_digests(relation, columns, key, where, hashable)).fetchall()
    return {int(b): (int(n), s) for b, n, s in rows}


def _rows(
    conn: psycopg.Connection,
    relation: QualifiedName | CheckedSql,
    columns: Sequence[str],
    key: Sequence[str],
    where: CheckedSql | None,
    buckets: list[int],
    hashable: Sequence[str],
) -> list[tuple[str, int]]:
    return conn.execute(st.row_digests(relation, columns, key, where, buckets, hashable)).fetchall()


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


def compare(
    table: TableSpec,
    *,
    source: psycopg.Connection,
    source_relation: QualifiedName | CheckedSql,
    target: psycopg.Connection,
    columns: Sequence[str],
    key: Sequence[str],
    same_snapshot: bool,
    hashable: Sequence[str] = (),
) -> IntegrityReport:
    """Compare source and target scopes; both connections must be inside a transaction.

    `key` may be empty (tables without a key): rows are then compared as a multiset.
    `hashable` names the columns whose types hash portably (binary fingerprints, faster than
    text; both servers must be PostgreSQL 14+); see :func:`portable_columns`.
    """
    started = time.perf_counter()
    keyed = bool(key)
    bucket_key = list(key) if keyed else list(columns)
    where = table.where
    target_rel = table.target_table
    with ThreadPoolExecutor(max_workers=2) as pool:
        src_f = pool.submit(_digests, source, source_relation, columns, bucket_key, where, hashable)
        tgt_f = pool.submit(_digests, target, target_rel, columns, bucket_key, where, hashable)
        src_d, tgt_d = src_f.result(), tgt_f.result()
        source_rows = sum(n for n, _ in src_d.values())
        target_rows = sum(n for n, _ in tgt_d.values())
        differing = sorted(b for b in set(src_d) | set(tgt_d) if src_d.get(b) != tgt_d.get(b))
        missing = extra = changed = 0
        samples: dict[str, list[str]] = {"missing": [], "extra": [], "changed": []}

        def note(kind: str, value: str) -> None:
            if len(samples[kind]) < SAMPLE_SIZE:
                samples[kind].append(value)

        for i in range(0, len(differing), _BUCKET_BATCH):
            batch = differing[i : i + _BUCKET_BATCH]
            s_f = pool.submit(
                _rows, source, source_relation, columns, bucket_key, where, batch, hashable
            )
            t_f = pool.submit(
                _rows, target, target_rel, columns, bucket_key, where, batch, hashable
            )
            s_rows, t_rows = s_f.result(), t_f.result()
            if keyed:
                s_map, s_repeats = _by_key(s_rows)
                t_map, t_repeats = _by_key(t_rows)
                # A key held twice is a difference a dict would hide.
                for k in s_repeats:
                    missing += 1
                    note("missing", k)
                for k in t_repeats:
                    extra += 1
                    note("extra", k)
                for k, h in s_map.items():
                    other = t_map.get(k)
                    if other is None:
                        missing += 1
                        note("missing", k)
                    elif other != h:
                        changed += 1
                        note("changed", k)
                for k in t_map.keys() - s_map.keys():
                    extra += 1
                    note("extra", k)
            else:
                s_count = Counter(s_rows)
                t_count = Counter(t_rows)
                for (text, _), n in (s_count - t_count).items():
                    missing += n
                    note("missing", text)
                for (text, _), n in (t_count - s_count).items():
                    extra += n
                    note("extra", text)
    return IntegrityReport(
        table=table.label,
        mode=table.mode,
        scope=None if where is None else where.text,
        source_rows=source_rows,
        target_rows=target_rows,
        missing_rows=missing,
        extra_rows=extra,
        changed_rows=changed,
        sample_missing=tuple(samples["missing"]),
        sample_extra=tuple(samples["extra"]),
        sample_changed=tuple(samples["changed"]),
        seconds=time.perf_counter() - started,
        same_snapshot=same_snapshot,
    )
