"""The diff path (PostgreSQL 18 and 15): keys and row hashes first, then only what changed.

A full re-copy into a filled target streams `(key, hash of the row's image)` for every row in
scope, finds on the target the keys that are new or hash differently, and copies only those
rows. These tests pin down what "differently" means (everything MERGE's byte-image comparison
tells apart, nothing else), that awkward keys survive the trip as array literals, and when the
copier streams every row instead.
"""

from __future__ import annotations

import psycopg
import pytest

from stagecopy_dagster.copier import CopyOptions
from stagecopy_dagster.errors import DuplicateKeyError
from stagecopy_dagster_tests.copyhelpers import (
    assert_same_rows,
    checksum,
    run_and_check,
    run_copy,
    staging_leftovers,
    xmins,
)
from stagecopy_dagster_tests.pg import PgPair

# (column type, value before, value after): equal under `=`, different bytes. Each must be copied.
SAME_VALUE_OTHER_BYTES = [
    ("numeric", "1.0", "1.00"),
    ("float8", "0", "-0"),
    ("real", "0", "-0"),
    ("jsonb", '{"a": 1.0}', '{"a": 1.00}'),
    ("interval", "1 day", "24 hours"),
    ("numeric[]", "{1.0,2}", "{1.00,2}"),
    ("text COLLATE ci", "abc", "ABC"),
    ("timetz", "12:00+01", "11:00+00"),
    ("text", "", None),
    ("int", None, "0"),
]


@pytest.mark.parametrize(
    ("column_type", "before", "after"),
    SAME_VALUE_OTHER_BYTES,
    ids=[f"{t}:{b}->{a}" for t, b, a in SAME_VALUE_OTHER_BYTES],
)
def test_the_row_hash_sees_what_the_byte_image_sees(
    pg: PgPair, column_type: str, before: str | None, after: str | None
) -> None:
    if "COLLATE ci" in column_type:
        collation = (
            "CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', "
            "deterministic = false)"
        )
        try:
            pg.target(collation)
        except psycopg.errors.FeatureNotSupported:
            pytest.skip(f"PostgreSQL {pg.version} here is built without ICU")
        pg.source(collation)
    pg.source(
        f"CREATE TABLE v (id int PRIMARY KEY, x {column_type})",
        "INSERT INTO v SELECT g, NULL FROM generate_series(1, 50) g",
        "UPDATE v SET x = %s WHERE id = 7" % ("NULL" if before is None else f"'{before}'"),
    )
    run_copy(pg, {"source": "public.v"})
    kept = xmins(pg, "v")
    pg.source("UPDATE v SET x = %s WHERE id = 7" % ("NULL" if after is None else f"'{after}'"))

    result = run_copy(pg, {"source": "public.v"})

    assert result.path == "diff"
    assert (result.rows_compared, result.rows_copied, result.updated) == (50, 1, 1)
    source_text = pg.source_rows("SELECT x::text FROM v WHERE id = 7")
    assert pg.target_rows("SELECT x::text FROM v WHERE id = 7") == source_text
    assert_same_rows(pg, "v")
    now = xmins(pg, "v")
    assert {k for k in kept if kept[k] != now[k]} == {7}
    # And nothing more to do afterwards.
    again = run_copy(pg, {"source": "public.v"})
    assert (again.rows_copied, again.updated) == (0, 0)


AWKWARD_KEYS = [
    "plain",
    "a,b",
    '"quoted"',
    "{braces}",
    "NULL",
    "back\\slash",
    " space ",
    "",
    "한국어 키",
    "tab\there",
]
KEYS_ARRAY = "ARRAY[" + ", ".join("'" + k.replace("'", "''") + "'" for k in AWKWARD_KEYS) + "]"


@pytest.mark.parametrize("chunk", [3, 100_000], ids=["chunks-of-3", "one-chunk"])
def test_composite_awkward_keys_travel_as_literals(pg: PgPair, chunk: int) -> None:
    pg.source(
        'CREATE TABLE "Order Items" (code text, day date, n int, note text, '
        "PRIMARY KEY (code, day))",
        "INSERT INTO \"Order Items\" SELECT k, date '2024-01-01' + d, d, 'v0' "
        f"FROM unnest({KEYS_ARRAY}) k, generate_series(0, 9) d",
    )
    entry = {"source": '"Order Items"'}
    options = CopyOptions(diff_chunk=chunk)
    first = run_copy(pg, entry, options=options)
    assert first.inserted == len(AWKWARD_KEYS) * 10
    kept = xmins(pg, '"Order Items"', key="(code, day)")

    pg.source(
        "UPDATE \"Order Items\" SET note = 'v1' WHERE n IN (3, 8)",
        "INSERT INTO \"Order Items\" SELECT k, date '2030-01-01', 99, 'new' "
        f"FROM unnest({KEYS_ARRAY}) k",
    )
    second = run_copy(pg, entry, options=options)

    changed, new = len(AWKWARD_KEYS) * 2, len(AWKWARD_KEYS)
    assert second.path == "diff"
    assert (second.rows_copied, second.inserted, second.updated) == (changed + new, new, changed)
    assert_same_rows(pg, '"Order Items"')
    now = xmins(pg, '"Order Items"', key="(code, day)")
    rewritten = {k for k in kept if kept[k] != now[k]}
    assert len(rewritten) == changed
    assert staging_leftovers(pg) == []


def test_most_rows_changed_streams_every_row(pg: PgPair) -> None:
    pg.source(
        "CREATE TABLE t (id bigint PRIMARY KEY, v int)",
        "INSERT INTO t SELECT g, 0 FROM generate_series(1, 1000) g",
    )
    run_copy(pg, {"source": "public.t"})
    pg.source("UPDATE t SET v = 1 WHERE id <= 600")
    result = run_copy(pg, {"source": "public.t"})
    # 600 of 1000 differ: one full stream is cheaper than 600 keys as literals.
    assert (result.path, result.rows_compared, result.rows_copied) == ("diff", 1000, 1000)
    assert (result.inserted, result.updated) == (0, 600)
    assert_same_rows(pg, "public.t")


def test_scope_with_percent_and_rows_leaving_it(pg: PgPair) -> None:
    pg.source(
        "CREATE TABLE t (id int PRIMARY KEY, name text, v int)",
        "INSERT INTO t SELECT g, 'name ' || g, 0 FROM generate_series(1, 300) g",
    )
    entry = {"source": "public.t", "mode": "sync", "where": "name LIKE 'name 1%'"}
    first = run_copy(pg, entry)
    in_scope = first.inserted
    pg.source(
        "UPDATE t SET v = 1 WHERE id IN (1, 10, 2)",  # 2 is outside the scope
        "UPDATE t SET name = 'gone' WHERE id = 11",  # leaves the scope: sync deletes it
    )
    result, report = run_and_check(pg, entry)
    assert result.path == "diff"
    assert (result.rows_compared, result.rows_copied) == (in_scope - 1, 2)
    assert (result.inserted, result.updated, result.deleted) == (0, 2, 1)
    assert report.passed, report.summary
    assert_same_rows(pg, "public.t", where="name LIKE 'name 1%'")


def test_duplicate_keys_are_refused_before_anything_changes(pg: PgPair) -> None:
    pg.source(
        "CREATE TABLE t (id int, v text)",
        "INSERT INTO t SELECT g, 'a' FROM generate_series(1, 20) g",
    )
    entry = {"source": "public.t", "primary_key": ["id"]}
    run_copy(pg, entry)
    before = checksum(pg, "target", "public.t")
    pg.source("INSERT INTO t VALUES (5, 'b')")
    with pytest.raises(DuplicateKeyError, match=r"repeat or lack the key \(id\): \(5\) x2"):
        run_copy(pg, entry)
    assert checksum(pg, "target", "public.t") == before
    assert staging_leftovers(pg) == []


def test_diff_is_skipped_where_it_cannot_help(pg: PgPair) -> None:
    user_types = (
        "CREATE TYPE colour AS ENUM ('red', 'blue')",
        "CREATE DOMAIN code AS text CHECK (VALUE <> '')",
    )
    pg.target(*user_types)
    pg.source(
        *user_types,
        "CREATE TABLE e (c colour PRIMARY KEY, v int)",
        "INSERT INTO e VALUES ('red', 1), ('blue', 2)",
        "CREATE TABLE d (c code PRIMARY KEY, v int)",
        "INSERT INTO d VALUES ('x', 1), ('y', 2)",
        "CREATE TABLE w (id int PRIMARY KEY, v int, updated_at timestamptz)",
        "INSERT INTO w SELECT g, g, now() FROM generate_series(1, 10) g",
    )
    # An enum key travels by its label (binary COPY of an enum is its label, too).
    run_copy(pg, {"source": "public.e"})
    pg.source("UPDATE e SET v = 3 WHERE c = 'red'")
    enum_key = run_copy(pg, {"source": "public.e"})
    assert (enum_key.path, enum_key.rows_copied, enum_key.updated) == ("diff", 1, 1)
    assert_same_rows(pg, "public.e")
    # A key of a domain (its binary COPY would carry a database's OIDs): every row streams.
    run_copy(pg, {"source": "public.d"})
    pg.source("UPDATE d SET v = 3 WHERE c = 'x'")
    assert run_copy(pg, {"source": "public.d"}).path == "staged"
    assert_same_rows(pg, "public.d")
    # A watermark already limits the rows.
    incremental = {"source": "public.w", "incremental_field": "updated_at"}
    run_copy(pg, incremental)
    assert run_copy(pg, incremental).path == "staged"
    # A column just added at the target: every row differs.
    pg.source("ALTER TABLE w ADD COLUMN extra int")
    added = run_copy(pg, {"source": "public.w"})
    assert (added.path, added.added_columns) == ("staged", ("extra",))
    # Switched off.
    assert run_copy(pg, {"source": "public.w", "diff": False}).path == "staged"
    assert run_copy(pg, {"source": "public.w"}).path == "diff"
