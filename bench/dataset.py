"""The benchmark's data sets (two shapes) and the changes each round makes to them.

`bench.items` in the source database, in one of two shapes (:data:`SHAPES`):

* `narrow`: a bigint key, Korean text with tabs, newlines, quotes and backslashes, numeric,
  float8, int, bool, date, a `timestamptz updated_at` (indexed, as an incremental field would
  be) and jsonb, about 10% NULLs in every nullable column; about 280 bytes per row on disk.
* `wide`: 20 columns, about 1 KB per row: a long Korean text that is stored out of line
  (TOAST) in one row of ten, two jsonb, two numeric, timestamptz, text[] and int[], with the
  primary key and **no** index on `updated_at` (a source nobody indexed for stagecopy).

Generated inside PostgreSQL, so 1M rows take seconds, not minutes.

Every result is checked with :func:`table_digest`: row count and the sum of a 64-bit hash of
each row's text, computed on both sides with the same session settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from stagecopy_dagster import statements as st
from stagecopy_dagster.identifiers import QualifiedName

SCHEMA = "bench"
SOURCE_TABLE = QualifiedName(SCHEMA, "items")
KEY = "id"
COLUMNS = (
    ("id", "bigint NOT NULL"),
    ("name", "text"),
    ("amount", "numeric(14,2)"),
    ("ratio", "double precision"),
    ("qty", "integer"),
    ("active", "boolean"),
    ("day", "date"),
    ("updated_at", "timestamp with time zone NOT NULL"),
    ("payload", "jsonb"),
)
COLUMN_NAMES = tuple(name for name, _ in COLUMNS)

WIDE_COLUMNS = (
    ("id", "bigint NOT NULL"),
    ("title", "text"),
    ("body", "text"),
    ("summary", "text"),
    ("category", "character varying(20)"),
    ("amount", "numeric(14,2)"),
    ("price", "numeric(20,6)"),
    ("ratio", "double precision"),
    ("score", "real"),
    ("qty", "integer"),
    ("version", "bigint"),
    ("active", "boolean"),
    ("day", "date"),
    ("created_at", "timestamp with time zone"),
    ("updated_at", "timestamp with time zone NOT NULL"),
    ("payload", "jsonb"),
    ("attrs", "jsonb"),
    ("tags", "text[]"),
    ("scores", "integer[]"),
    ("note", "text"),
)

# Each nullable column is NULL for ~10% of rows, drawn independently (r1..r7).
_FILL = sql.SQL(
    r"""
INSERT INTO {table} (id, name, amount, ratio, qty, active, day, updated_at, payload)
SELECT n,
       CASE WHEN r1 < 0.1 THEN NULL ELSE
         (ARRAY['삼성전자 보통주', '현대자동차', 'LG에너지솔루션', '카카오뱅크', '네이버',
                '셀트리온헬스케어', '한국전력공사'])[1 + n % 7]
         || E' 주문\t#' || n || ' "'
         || (ARRAY['빠른 배송', '문 앞', '경비실', '직접 수령'])[1 + n % 4]
         || E'"\n메모: ' || repeat('가나다라마바사', 1 + (n % 4))
         || CASE WHEN n % 9 = 0 THEN E' 백슬래시 \\ 포함' ELSE '' END
       END,
       CASE WHEN r2 < 0.1 THEN NULL ELSE round((r3 * 10000000)::numeric, 2) END,
       CASE WHEN r3 < 0.1 THEN NULL ELSE r4 * 1000 - 500 END,
       CASE WHEN r4 < 0.1 THEN NULL ELSE (r5 * 100000)::int END,
       CASE WHEN r5 < 0.1 THEN NULL ELSE r6 < 0.5 END,
       CASE WHEN r6 < 0.1 THEN NULL ELSE date '2015-01-01' + (n % 3650)::int END,
       timestamptz '2024-01-01 00:00:00+09' + n * interval '1 second',
       CASE WHEN r7 < 0.1 THEN NULL ELSE jsonb_build_object(
         'channel', (ARRAY['web', 'app', '전화'])[1 + n % 3],
         'tags', jsonb_build_array('태그' || n % 10, n % 3 = 0),
         'score', round((r1 * 100)::numeric, 3),
         'note', E'줄\n바꿈 "인용" \\ 끝')
       END
FROM (
  SELECT n, random() AS r1, random() AS r2, random() AS r3, random() AS r4, random() AS r5,
         random() AS r6, random() AS r7
  FROM generate_series({first}, {last}) AS n
) AS g
"""
)


# Random Hangul syllables do not compress, so one body in ten, eight fragments (about 3.8 KB), is
# stored out of line (TOAST); the others (about 240 bytes) stay in the row. The pool is made
# once; rows pick fragments by their id (scalar sub-selects, not joins, so rows land in key
# order as in a table filled over time: `pg_stats.correlation` of id and updated_at is 1).
_WIDE_POOL = sql.SQL(
    """
CREATE TEMP TABLE IF NOT EXISTS wide_pool AS
SELECT i, string_agg(chr(44032 + (random() * 11171)::int), '') AS t
FROM generate_series(0, 2047) AS i, generate_series(1, 160) AS j
GROUP BY i;
CREATE UNIQUE INDEX IF NOT EXISTS wide_pool_i ON wide_pool (i)
"""
)

_WIDE_FILL = sql.SQL(
    r"""
INSERT INTO {table}
SELECT n,
       (ARRAY['삼성전자 보통주', '현대자동차', 'LG에너지솔루션', '카카오뱅크', '네이버'])[1 + n % 5]
         || ' 공시 #' || n,
       CASE WHEN n % 10 = 0
         THEN (SELECT string_agg(t, '' ORDER BY k) FROM wide_pool, generate_series(0, 7) AS k
               WHERE i = (n * (7 + 4 * k) + k) % 2048)
         ELSE (SELECT left(t, 80) FROM wide_pool WHERE i = n % 2048) END,
       CASE WHEN r1 < 0.1 THEN NULL ELSE E'요약: "'
         || (SELECT left(t, 24) FROM wide_pool WHERE i = (n * 7 + 1) % 2048) || E'"\t끝' END,
       (ARRAY['전자', '자동차', '에너지', '금융', '인터넷', '바이오'])[1 + n % 6],
       CASE WHEN r2 < 0.1 THEN NULL ELSE round((r3 * 10000000)::numeric, 2) END,
       round((r4 * 100000)::numeric, 6),
       CASE WHEN r3 < 0.1 THEN NULL ELSE r4 * 1000 - 500 END,
       (r5 * 100)::real,
       CASE WHEN r4 < 0.1 THEN NULL ELSE (r5 * 100000)::int END,
       n * 7,
       CASE WHEN r5 < 0.1 THEN NULL ELSE r6 < 0.5 END,
       date '2015-01-01' + (n % 3650)::int,
       timestamptz '2023-01-01 00:00:00+09' + n * interval '1 second',
       timestamptz '2024-01-01 00:00:00+09' + n * interval '1 second',
       CASE WHEN r6 < 0.1 THEN NULL ELSE jsonb_build_object(
         'channel', (ARRAY['web', 'app', '전화'])[1 + n % 3],
         'tags', jsonb_build_array('태그' || n % 10, n % 3 = 0),
         'score', round((r1 * 100)::numeric, 3),
         'note', E'줄\n바꿈 "인용" \\ 끝')
       END,
       jsonb_build_object('seq', n, 'ok', n % 2 = 0, 'name', '항목 ' || n % 1000),
       ARRAY['태그' || n % 10, '분류' || n % 7, E'탭\t포함'],
       ARRAY[n % 100, n % 1000, (r7 * 1000)::int],
       CASE WHEN r7 < 0.1 THEN NULL ELSE E'메모 "따옴표"\n백슬래시 \\ ' || n END
FROM (
  SELECT n, random() AS r1, random() AS r2, random() AS r3, random() AS r4, random() AS r5,
         random() AS r6, random() AS r7
  FROM generate_series({first}, {last}) AS n
) AS g
"""
)


@dataclass(frozen=True)
class Shape:
    """One data set: its columns, how it is filled and what the source indexes."""

    name: str
    columns: tuple[tuple[str, str], ...]
    fill: sql.SQL
    default_rows: int
    quick_rows: int
    index_watermark: bool
    """The source has an index on `updated_at` (the narrow shape; the wide one has none)."""
    prepare: sql.SQL | None = None
    """Run once on the filling session before the batches (the wide shape's text pool)."""

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)


NARROW = Shape("narrow", COLUMNS, _FILL, 1_000_000, 100_000, index_watermark=True)
WIDE = Shape(
    "wide", WIDE_COLUMNS, _WIDE_FILL, 1_500_000, 20_000, index_watermark=False, prepare=_WIDE_POOL
)
SHAPES = {s.name: s for s in (NARROW, WIDE)}


def create_table_sql(
    table: QualifiedName, *, primary_key: bool, unlogged: bool = False, shape: Shape = NARROW
) -> sql.Composed:
    """`CREATE TABLE` with the data set's columns (optionally UNLOGGED, optionally with the key)."""
    defs = [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in shape.columns]  # type: ignore[arg-type]
    if primary_key:
        defs.append(sql.SQL("PRIMARY KEY ({})").format(sql.Identifier(KEY)))
    return sql.SQL("CREATE {}TABLE {} ({})").format(
        sql.SQL("UNLOGGED " if unlogged else ""), table.identifier, sql.SQL(", ").join(defs)
    )


def create_source(
    conn: psycopg.Connection, table: QualifiedName, rows: int, *, shape: Shape = NARROW
) -> None:
    """(Re)create and fill `table` with `rows` rows, then key, index and VACUUM ANALYZE it.

    `conn` must be in autocommit mode (VACUUM).
    """
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(table.schema)))
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table.identifier))
    conn.execute(create_table_sql(table, primary_key=False, shape=shape))
    conn.execute("SELECT setseed(0.1)")
    if shape.prepare is not None:
        conn.execute(shape.prepare)
    batch = 500_000
    for first in range(1, rows + 1, batch):
        last = min(rows, first + batch - 1)
        conn.execute(
            shape.fill.format(
                table=table.identifier, first=sql.Literal(first), last=sql.Literal(last)
            )
        )
    conn.execute(
        sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(table.identifier, sql.Identifier(KEY))
    )
    if shape.index_watermark:
        conn.execute(
            sql.SQL("CREATE INDEX {} ON {} (updated_at)").format(
                sql.Identifier(f"{table.name}_updated_at_idx"), table.identifier
            )
        )
    conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(table.identifier))


def relation_size(conn: psycopg.Connection, table: QualifiedName) -> tuple[int, int]:
    """(heap bytes, total bytes with indexes and TOAST)."""
    row = conn.execute(
        "SELECT pg_relation_size(c.oid), pg_total_relation_size(c.oid) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
        (table.schema, table.name),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


# --- the changes of one round ---------------------------------------------------------------------


def update_slice(conn: psycopg.Connection, table: QualifiedName, slice_no: int) -> int:
    """Change 1% of the rows (`id % 100 = slice_no`) with a fresh, per-row `updated_at`.

    `clock_timestamp()` gives every row its own timestamp, so an incremental run that starts at
    the target's newest `updated_at` (inclusive) re-reads one row, not the whole last change.
    """
    cur = conn.execute(
        sql.SQL(
            "UPDATE {} SET qty = coalesce(qty, 0) + 1, updated_at = clock_timestamp() "
            "WHERE id % 100 = {}"
        ).format(table.identifier, sql.Literal(slice_no))
    )
    return cur.rowcount


def delete_slice(conn: psycopg.Connection, table: QualifiedName, slice_no: int) -> int:
    """Move 1% of the rows (`id % 100 = slice_no`) into `<table>_deleted`; return how many."""
    saved = QualifiedName(table.schema, f"{table.name}_deleted")
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(saved.identifier))
    conn.execute(
        sql.SQL("CREATE TABLE {} AS SELECT * FROM {} WHERE id % 100 = {}").format(
            saved.identifier, table.identifier, sql.Literal(slice_no)
        )
    )
    cur = conn.execute(
        sql.SQL("DELETE FROM {} WHERE id % 100 = {}").format(
            table.identifier, sql.Literal(slice_no)
        )
    )
    return cur.rowcount


def restore_deleted(conn: psycopg.Connection, table: QualifiedName) -> int:
    """Put back the rows :func:`delete_slice` took out."""
    saved = QualifiedName(table.schema, f"{table.name}_deleted")
    cur = conn.execute(
        sql.SQL("INSERT INTO {} SELECT * FROM {}").format(table.identifier, saved.identifier)
    )
    conn.execute(sql.SQL("DROP TABLE {}").format(saved.identifier))
    return cur.rowcount


# --- checking -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Digest:
    """Row count and the sum of 64-bit row hashes: additive, so changes can be booked."""

    rows: int
    hash_sum: int

    def __add__(self, other: Digest) -> Digest:
        return Digest(self.rows + other.rows, self.hash_sum + other.hash_sum)

    def __sub__(self, other: Digest) -> Digest:
        return Digest(self.rows - other.rows, self.hash_sum - other.hash_sum)

    def __str__(self) -> str:
        return f"{self.rows} rows, hash sum {self.hash_sum}"


# hash_record_extended hashes each column with its type's own extended hash function: twice as
# fast as hashing the row's text, and exact here because both sides have the very same column
# types (numeric(14,2) has one scale, so numeric's scale-blind hash misses nothing).
_DIGEST = sql.SQL(
    "SELECT count(*), coalesce(sum(hash_record_extended(ROW({cols}), 0)), 0) FROM {table}{where}"
)

_COUNT = sql.SQL("SELECT count(*), 0 FROM {table}{where}")


def table_digest(
    conn: psycopg.Connection,
    table: QualifiedName,
    *,
    slice_no: int | None = None,
    count_only: bool = False,
    shape: Shape = NARROW,
) -> Digest:
    """Count and hash the data set's columns of `table`, or of one 1% slice of it.

    With `count_only`, only count (the hash sum is 0).
    """
    where = (
        sql.SQL("")
        if slice_no is None
        else sql.SQL(" WHERE id % 100 = {}").format(sql.Literal(slice_no))
    )
    digest = _COUNT if count_only else _DIGEST
    row = conn.execute(
        digest.format(cols=st.column_list(shape.column_names), table=table.identifier, where=where)
    ).fetchone()
    assert row is not None
    return Digest(int(row[0]), int(row[1]))
