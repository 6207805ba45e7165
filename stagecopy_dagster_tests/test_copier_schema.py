"""Creating and reconciling the target table; names PostgreSQL allows but tools often break."""

from __future__ import annotations

import pytest

from stagecopy_dagster.errors import DuplicateKeyError, SchemaMismatchError
from stagecopy_dagster_tests.copyhelpers import (
    assert_same_rows,
    checksum,
    column_types,
    primary_key_of,
    run_and_check,
    run_copy,
    staging_leftovers,
    xmins,
)
from stagecopy_dagster_tests.pg import PgPair

KOREAN_25 = "인포맥스종목마스터코드별일별시세변동이력정보테이블"  # 75 bytes; PostgreSQL keeps 63


# --- creating the target ----------------------------------------------------------------------


def test_created_table_has_the_source_types_not_nulls_and_key(pg: PgPair) -> None:
    pg.source(
        "CREATE SCHEMA sales",
        "CREATE TYPE sales.mood AS ENUM ('a', 'b')",
        "CREATE TABLE sales.lines (order_id bigint, line smallint, sku varchar(20) NOT NULL, "
        "price numeric(12,2) NOT NULL, qty real, at timestamp(3) with time zone, "
        "tags character(3)[], m sales.mood, bits bit varying(8), "
        "PRIMARY KEY (line, order_id))",
        "INSERT INTO sales.lines VALUES (1, 1, 'A', 1.5, 2, now(), '{abc}', 'a', B'101')",
    )
    pg.target("CREATE SCHEMA sales", "CREATE TYPE sales.mood AS ENUM ('a', 'b')")
    result = run_copy(pg, {"source": "sales.lines"})
    assert result.created_table
    assert result.key == ("line", "order_id")
    assert column_types(pg, "target", "sales.lines") == column_types(pg, "source", "sales.lines")
    assert column_types(pg, "target", "sales.lines")[:4] == [
        ("order_id", "bigint", True),
        ("line", "smallint", True),
        ("sku", "character varying(20)", True),
        ("price", "numeric(12,2)", True),
    ]
    assert primary_key_of(pg, "target", "sales.lines") == ["line", "order_id"]
    assert_same_rows(pg, "sales.lines")


def test_created_table_in_a_new_schema_with_explicit_key_and_watermark_index(pg: PgPair) -> None:
    pg.source(
        "CREATE TABLE src (code text NOT NULL, v int, changed timestamptz)",
        "INSERT INTO src SELECT 'c' || g, g, now() FROM generate_series(1, 10) g",
    )
    result = run_copy(
        pg,
        {
            "source": "public.src",
            "target": "mart.dst",
            "primary_key": "code",
            "incremental_field": "changed",
        },
    )
    assert result.created_table
    assert primary_key_of(pg, "target", "mart.dst") == ["code"]
    indexes = pg.target_rows(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'mart' AND tablename = 'dst' "
        "AND indexdef NOT LIKE '%UNIQUE%'"
    )
    assert len(indexes) == 1 and "(changed)" in indexes[0][0]
    assert_same_rows(pg, "public.src", target_relation="mart.dst")


def test_created_table_for_a_query_source(pg: PgPair) -> None:
    pg.source(
        "CREATE TABLE a (id int PRIMARY KEY, price numeric(8,3), name varchar(30))",
        "INSERT INTO a VALUES (1, 1.5, 'x'), (2, NULL, 'y')",
    )
    result = run_copy(
        pg,
        {
            "query": "SELECT id AS item_id, price, name, price * 2 AS doubled FROM a",
            "target": "mart.items",
            "primary_key": "item_id",
        },
    )
    assert result.created_table
    assert column_types(pg, "target", "mart.items") == [
        ("item_id", "integer", True),
        ("price", "numeric(8,3)", False),
        ("name", "character varying(30)", False),
        ("doubled", "numeric", False),
    ]
    assert primary_key_of(pg, "target", "mart.items") == ["item_id"]


# --- reconciling an existing target -----------------------------------------------------------


def test_a_column_added_at_the_source_is_added_to_the_target(pg: PgPair) -> None:
    pg.source(
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
        "INSERT INTO t SELECT g, 'v' FROM generate_series(1, 100) g",
    )
    run_copy(pg, {"source": "public.t"})
    pg.source(
        "ALTER TABLE t ADD COLUMN score numeric(5,1)",
        "UPDATE t SET score = id / 10.0 WHERE id <= 30",
    )
    result, report = run_and_check(pg, {"source": "public.t"})
    assert result.added_columns == ("score",)
    assert [c.name for c in result.columns] == ["id", "v", "score"]
    # Rows whose new column is still NULL at the source match as they are.
    assert (result.inserted, result.updated) == (0, 30)
    assert report.passed
    assert column_types(pg, "target", "t") == column_types(pg, "source", "t")
    assert_same_rows(pg, "t")


def test_a_changed_type_is_refused_and_the_target_is_untouched(pg: PgPair) -> None:
    pg.source(
        "CREATE SCHEMA s",
        "CREATE TABLE s.t (id int PRIMARY KEY, amount numeric(12,2), v text)",
        "INSERT INTO s.t SELECT g, g, 'v' FROM generate_series(1, 100) g",
    )
    run_copy(pg, {"source": "s.t"})
    pg.source(
        # Fewer integer digits: a narrowing, which `evolve` refuses (widenings it applies).
        "ALTER TABLE s.t ALTER COLUMN amount TYPE numeric(10,2)",
        "ALTER TABLE s.t ADD COLUMN extra int",
        "UPDATE s.t SET v = 'changed'",
    )
    before = checksum(pg, "target", "s.t")
    columns_before = column_types(pg, "target", "s.t")
    with pytest.raises(SchemaMismatchError) as info:
        run_copy(pg, {"source": "s.t"})
    assert info.value.table == "s.t"
    message = str(info.value)
    assert message.startswith("s.t: ")
    assert "amount is numeric(10,2) at the source, numeric(12,2) here" in message
    assert checksum(pg, "target", "s.t") == before
    assert column_types(pg, "target", "s.t") == columns_before  # `extra` was not added
    assert staging_leftovers(pg) == []


def test_an_extra_target_column_is_left_alone(pg: PgPair) -> None:
    pg.source("CREATE TABLE t (id int PRIMARY KEY, v text)", "INSERT INTO t VALUES (1, 'a')")
    pg.target(
        "CREATE TABLE t (id int PRIMARY KEY, v text, loaded_at timestamptz DEFAULT '2000-01-01')"
    )
    run_copy(pg, {"source": "public.t"})
    pg.source("INSERT INTO t VALUES (2, 'b')", "UPDATE t SET v = 'z' WHERE id = 1")
    result = run_copy(pg, {"source": "public.t"})
    assert (result.inserted, result.updated) == (1, 1)
    assert pg.target_rows("SELECT id, v, loaded_at::date::text FROM t ORDER BY id") == [
        (1, "z", "2000-01-01"),
        (2, "b", "2000-01-01"),
    ]


def test_a_generated_target_column_is_computed_by_the_target(pg: PgPair) -> None:
    pg.source(
        "CREATE TABLE lines (id int PRIMARY KEY, qty int, price numeric(10,2), "
        "total numeric(12,2))",
        "INSERT INTO lines SELECT g, g, 1.50, -1 FROM generate_series(1, 50) g",
    )
    pg.target(
        "CREATE TABLE lines (id int PRIMARY KEY, qty int, price numeric(10,2), "
        "total numeric(12,2) GENERATED ALWAYS AS (qty * price) STORED)"
    )
    first = run_copy(pg, {"source": "public.lines"})  # empty target: direct COPY
    assert [c.name for c in first.columns] == ["id", "qty", "price"]
    assert first.inserted == 50
    pg.source("UPDATE lines SET qty = 100 WHERE id = 1", "INSERT INTO lines VALUES (51, 2, 3, -1)")
    second = run_copy(pg, {"source": "public.lines"})  # staged MERGE
    assert (second.path, second.inserted, second.updated) == ("diff", 1, 1)
    assert pg.target_rows("SELECT count(*) FROM lines WHERE total <> qty * price") == [(0,)]
    assert pg.target_rows("SELECT total::text FROM lines WHERE id IN (1, 51) ORDER BY id") == [
        ("150.00",),
        ("6.00",),
    ]
    assert_same_rows(pg, "lines", columns="id, qty, price")


def test_an_identity_always_target_column_takes_the_source_values(pg: PgPair) -> None:
    pg.source(
        "CREATE TABLE t (id int PRIMARY KEY, code text UNIQUE NOT NULL, v text)",
        "INSERT INTO t SELECT g * 10, 'c' || g, 'v' FROM generate_series(1, 50) g",
    )
    pg.target(
        "CREATE TABLE t (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
        "code text UNIQUE NOT NULL, v text)"
    )
    first = run_copy(pg, {"source": "public.t"})
    assert (first.path, first.inserted) == ("direct", 50)
    pg.source("UPDATE t SET v = 'w' WHERE id <= 30", "INSERT INTO t VALUES (1000, 'new', 'n')")
    second = run_copy(pg, {"source": "public.t"})
    assert (second.path, second.inserted, second.updated) == ("diff", 1, 3)
    assert_same_rows(pg, "t")
    # Keyed on another column, the identity column is inserted but never updated.
    pg.source("UPDATE t SET v = 'k' WHERE code = 'c1'")
    third = run_copy(pg, {"source": "public.t", "primary_key": "code"})
    assert (third.inserted, third.updated) == (0, 1)
    assert_same_rows(pg, "t")


# --- names ------------------------------------------------------------------------------------


def test_korean_schema_table_and_key(pg: PgPair) -> None:
    pg.source(
        "CREATE SCHEMA raw_data",
        "CREATE TABLE raw_data.인포맥스종목마스터 (종목코드 text PRIMARY KEY, "
        "종목명 text NOT NULL, 시장구분 text, 상장주식수 bigint)",
        "INSERT INTO raw_data.인포맥스종목마스터 SELECT lpad(g::text, 6, '0'), '종목 ' || g, "
        "CASE WHEN g % 2 = 0 THEN 'KOSPI' ELSE 'KOSDAQ' END, g * 1000 "
        "FROM generate_series(1, 1000) g",
    )
    entry = {
        "source": "raw_data.인포맥스종목마스터",
        "mode": "sync",
        "where": "시장구분 = 'KOSPI' -- 코스피만",
    }
    first = run_copy(pg, entry)
    assert first.table == "raw_data.인포맥스종목마스터"
    assert first.key == ("종목코드",)
    assert first.inserted == 500
    pg.source(
        "DELETE FROM raw_data.인포맥스종목마스터 WHERE 종목코드 IN ('000002', '000003')",
        "UPDATE raw_data.인포맥스종목마스터 SET 종목명 = '삼성전자' WHERE 종목코드 = '000004'",
    )
    second, report = run_and_check(pg, entry)
    assert (second.inserted, second.updated, second.deleted) == (0, 1, 1)
    assert report.passed
    assert primary_key_of(pg, "target", "raw_data.인포맥스종목마스터") == ["종목코드"]
    assert_same_rows(pg, "raw_data.인포맥스종목마스터", where="시장구분 = 'KOSPI'")


def test_mixed_case_quoted_names(pg: PgPair) -> None:
    pg.source(
        'CREATE SCHEMA "Sales"',
        'CREATE TABLE "Sales"."Order Items" ("OrderId" int, "Line" int, "Qty" int, '
        'PRIMARY KEY ("OrderId", "Line"))',
        'INSERT INTO "Sales"."Order Items" SELECT g / 10, g % 10, g FROM generate_series(1, 500) g',
        # A lower-case twin that must not be confused with it.
        "CREATE SCHEMA sales",
        "CREATE TABLE sales.order_items (x int)",
    )
    entry = {"source": '"Sales"."Order Items"', "mode": "sync", "where": '"Qty" > 100'}
    first = run_copy(pg, entry)
    assert first.table == '"Sales"."Order Items"'
    assert first.key == ("OrderId", "Line")
    assert first.inserted == 400
    pg.source('DELETE FROM "Sales"."Order Items" WHERE "Qty" IN (100, 101, 102)')
    second = run_copy(pg, entry)
    assert second.deleted == 2
    assert_same_rows(pg, '"Sales"."Order Items"', where='"Qty" > 100')
    assert pg.target_rows("SELECT to_regclass('sales.order_items')") == [(None,)]


def test_a_name_longer_than_63_bytes_is_clipped_like_postgresql(pg: PgPair) -> None:
    clipped = KOREAN_25[:21]
    pg.source(
        f'CREATE TABLE "{KOREAN_25}" (id int PRIMARY KEY, "{KOREAN_25}" text)',
        f"INSERT INTO \"{KOREAN_25}\" SELECT g, '값' || g FROM generate_series(1, 100) g",
    )
    assert pg.source_rows(
        "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname LIKE %s",
        (KOREAN_25[:5] + "%",),
    ) == [(clipped,)]
    entry = {"source": f"public.{KOREAN_25}", "mode": "sync"}
    first = run_copy(pg, entry)
    assert first.created_table
    assert [c.name for c in first.columns] == ["id", clipped]
    pg.source(f'DELETE FROM "{KOREAN_25}" WHERE id = 1')
    second = run_copy(pg, entry)
    assert second.deleted == 1
    assert_same_rows(pg, f'public."{clipped}"')


def test_a_63_byte_target_name_with_a_watermark_index(pg: PgPair) -> None:
    """The watermark index is named `<table>_<field>_idx` clipped to 63 bytes.

    With a 63-byte table name that clips back to the table's own name, and creating the
    index fails with "relation already exists".
    """
    pg.source(
        f'CREATE TABLE "{KOREAN_25}" (id int PRIMARY KEY, changed int NOT NULL)',
        f'INSERT INTO "{KOREAN_25}" SELECT g, g FROM generate_series(1, 10) g',
    )
    result = run_copy(pg, {"source": f"public.{KOREAN_25}", "incremental_field": "changed"})
    assert result.created_table
    assert result.inserted == 10


def test_names_with_quotes_dots_spaces_and_semicolons(pg: PgPair) -> None:
    table = '"we""ird.sch"."a;b c.d"'
    pg.source(
        'CREATE SCHEMA "we""ird.sch"',
        f'CREATE TABLE {table} ("i""d" int PRIMARY KEY, "v; DROP TABLE x; --" text, '
        '"Sp Ace.col" int)',
        f"INSERT INTO {table} SELECT g, 'v' || g, g % 3 FROM generate_series(1, 300) g",
    )
    entry = {
        "source": table,
        "mode": "sync",
        "where": '"Sp Ace.col" <> 0',
        "incremental_field": '"v; DROP TABLE x; --"',
    }
    first = run_copy(pg, entry)
    assert first.table == table
    assert first.key == ('i"d',)
    assert first.inserted == 200
    pg.source(
        f'DELETE FROM {table} WHERE "i""d" IN (1, 3)',
        f'UPDATE {table} SET "v; DROP TABLE x; --" = \'zzz\' WHERE "i""d" = 2',
    )
    second = run_copy(pg, entry)
    assert (second.inserted, second.updated, second.deleted) == (0, 1, 1)
    assert_same_rows(pg, table, where='"Sp Ace.col" <> 0')
    assert staging_leftovers(pg) == []


def test_names_that_are_reserved_words(pg: PgPair) -> None:
    pg.source(
        'CREATE TABLE "select" ("from" int PRIMARY KEY, "where" text, "order" int)',
        "INSERT INTO \"select\" VALUES (1, 'a', 1), (2, 'b', 2)",
    )
    entry = {"source": 'public."select"', "primary_key": '"from"', "where": '"order" > 0'}
    run_copy(pg, entry)
    pg.source('UPDATE "select" SET "where" = \'c\' WHERE "from" = 2')
    before = xmins(pg, '"select"', key='"from"')
    result = run_copy(pg, entry)
    assert (result.inserted, result.updated) == (0, 1)
    after = xmins(pg, '"select"', key='"from"')
    assert before[1] == after[1] and before[2] != after[2]


# --- other kinds of relations -----------------------------------------------------------------


def test_partitioned_source_and_target(pg: PgPair) -> None:
    partitioned = (
        "CREATE TABLE m (id int, day date NOT NULL, v text, PRIMARY KEY (id, day)) "
        "PARTITION BY RANGE (day)",
        "CREATE TABLE m_2024 PARTITION OF m FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')",
        "CREATE TABLE m_2025 PARTITION OF m FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')",
    )
    pg.source(
        *partitioned,
        "INSERT INTO m SELECT g, date '2024-06-01' + g, 'v' FROM generate_series(1, 400) g",
    )
    pg.target(*partitioned)
    entry = {"source": "public.m", "mode": "sync"}
    first = run_copy(pg, entry)
    assert first.key == ("id", "day")
    assert first.inserted == 400
    pg.source("DELETE FROM m WHERE id = 1", "UPDATE m SET v = 'w' WHERE id = 400")
    second = run_copy(pg, entry)
    assert (second.inserted, second.updated, second.deleted) == (0, 1, 1)
    assert_same_rows(pg, "m")
    assert pg.target_rows("SELECT count(*) FROM m_2025") == pg.source_rows(
        "SELECT count(*) FROM m_2025"
    )


def test_view_source_with_explicit_key(pg: PgPair) -> None:
    pg.source(
        "CREATE TABLE base (id int PRIMARY KEY, v text, hidden text)",
        "INSERT INTO base SELECT g, 'v' || g, 'h' FROM generate_series(1, 100) g",
        "CREATE VIEW visible AS SELECT id, upper(v) AS v FROM base WHERE id % 2 = 0",
    )
    entry = {"source": "public.visible", "primary_key": "id"}
    assert run_copy(pg, entry).inserted == 50
    pg.source("UPDATE base SET v = 'x' WHERE id IN (1, 2)")
    result = run_copy(pg, entry)
    assert (result.inserted, result.updated) == (0, 1)
    assert_same_rows(pg, "public.visible")


def test_a_source_with_dropped_columns(pg: PgPair) -> None:
    pg.source(
        "CREATE TABLE d (id int PRIMARY KEY, gone text, v int)",
        "INSERT INTO d SELECT g, 'x', g FROM generate_series(1, 100) g",
        "ALTER TABLE d DROP COLUMN gone",
    )
    result = run_copy(pg, {"source": "public.d"})
    assert [c.name for c in result.columns] == ["id", "v"]
    assert column_types(pg, "target", "d") == column_types(pg, "source", "d")
    assert_same_rows(pg, "d")


def test_a_key_column_generated_in_the_target_is_refused(pg: PgPair) -> None:
    pg.source("CREATE TABLE g (id int PRIMARY KEY, v int)", "INSERT INTO g VALUES (1, 1)")
    pg.target("CREATE TABLE g (id int GENERATED ALWAYS AS (v * 10) STORED, v int)")
    with pytest.raises(SchemaMismatchError) as info:
        run_copy(pg, {"source": "public.g"})
    assert str(info.value) == "public.g: key column 'id' is generated in the target"
    assert pg.target_rows("SELECT count(*) FROM g") == [(0,)]


def test_a_created_tables_key_and_watermark_index_are_built_after_the_load(pg: PgPair) -> None:
    pg.source(
        "CREATE TABLE ev (id bigint PRIMARY KEY, at timestamptz NOT NULL)",
        "INSERT INTO ev SELECT g, now() FROM generate_series(1, 500) g",
    )
    result = run_copy(pg, {"source": "public.ev", "incremental_field": "at"})
    assert (result.path, result.inserted) == ("direct", 500)
    assert list(result.steps).index("index") > list(result.steps).index("copy")
    assert primary_key_of(pg, "target", "ev") == ["id"]
    indexes = pg.target_rows(
        "SELECT indexdef FROM pg_indexes WHERE tablename = 'ev' AND indexdef NOT LIKE '%pkey%'"
    )
    assert len(indexes) == 1 and indexes[0][0].endswith("USING btree (at)")


def test_repeated_keys_in_a_created_append_table_name_the_keys(pg: PgPair) -> None:
    pg.source(
        "CREATE TABLE dup (id int, v text)",
        "INSERT INTO dup VALUES (1, 'a'), (2, 'b'), (2, 'c')",
    )
    with pytest.raises(DuplicateKeyError, match=r"repeat or lack the key \(id\): \(2\) x2"):
        run_copy(pg, {"source": "public.dup", "mode": "append", "primary_key": ["id"]})
    assert pg.target_rows("SELECT to_regclass('public.dup')::text") == [(None,)]
    assert staging_leftovers(pg) == []
