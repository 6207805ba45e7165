"""User-defined types: created in the target as the source defines them, before the table.

Enums, domains (NOT NULL, CHECK, DEFAULT, COLLATE, over other user types), composites (with
user-typed attributes), ranges and their multiranges, and arrays of them, in their own schemas;
a differing target type is an error before any write; enum labels added at the source are
added in order. On PostgreSQL 15 and 18 and from 15 to 18.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from stagecopy_dagster import runner
from stagecopy_dagster.engine.usertypes import read_user_types
from stagecopy_dagster.errors import UserTypeError
from stagecopy_dagster_tests.copyhelpers import (
    assert_same_rows,
    column_types,
    endpoints,
    run_and_check,
    run_copy,
    table_spec,
)
from stagecopy_dagster_tests.pg import PgPair

TYPES = (
    "CREATE SCHEMA app",
    "CREATE TYPE app.mood AS ENUM ('sad', 'ok', 'happy', '행복')",
    "CREATE DOMAIN app.positive AS integer DEFAULT 1 "
    "CONSTRAINT positive_gt_0 CHECK (VALUE > 0) CONSTRAINT positive_small CHECK (VALUE < 1000000)",
    "CREATE DOMAIN app.small_positive AS app.positive CHECK (VALUE < 100)",
    'CREATE DOMAIN app.code AS text COLLATE "C" CHECK (length(VALUE) <= 8)',
    "CREATE DOMAIN app.moods AS app.mood[]",
    'CREATE TYPE app."Pair" AS (x app.positive, label text COLLATE "C", m app.mood, '
    "tags app.mood[])",
    'CREATE TYPE app.nested AS (p app."Pair", n numeric(10,2), r app.floatrange)',
    "CREATE TYPE public.status AS ENUM ('new', 'done')",
    "CREATE DOMAIN app.required AS text NOT NULL DEFAULT 'x'",
)
# Ranges are made first: `nested` uses one.
RANGES = (
    "CREATE SCHEMA app",
    "CREATE TYPE app.floatrange AS RANGE (SUBTYPE = float8, SUBTYPE_DIFF = float8mi, "
    "MULTIRANGE_TYPE_NAME = app.floatmultirange)",
    'CREATE TYPE app.textrange AS RANGE (SUBTYPE = text, COLLATION = "C")',
)

TABLE = (
    "CREATE TABLE raw.events (id int PRIMARY KEY, m app.mood, ms app.mood[], p app.positive, "
    'sp app.small_positive, c app.code, mm app.moods, pr app."Pair", prs app."Pair"[], '
    "ne app.nested, fr app.floatrange, fmr app.floatmultirange, tr app.textrange, "
    "st status, sts status[], rq app.required)"
)
ROWS = (
    "INSERT INTO raw.events SELECT g, (enum_range(NULL::app.mood))[1 + g % 4], "
    "ARRAY[(enum_range(NULL::app.mood))[1 + g % 4], NULL, '행복']::app.mood[], g, 1 + g % 99, "
    "'c' || g % 100, ARRAY['ok', 'sad']::app.moods, "
    "ROW(g, 'p,(\"' || g || ')', 'happy', '{sad,ok}')::app.\"Pair\", "
    'ARRAY[ROW(1, NULL, NULL, NULL)::app."Pair", NULL], '
    "ROW(ROW(2, 'x', 'ok', NULL)::app.\"Pair\", g / 3.0, app.floatrange(g, g + 1.5))::app.nested, "
    "app.floatrange(-g, 'infinity', '(]'), "
    "app.floatmultirange(app.floatrange(1, 2), app.floatrange(g + 3, g + 4)), "
    "app.textrange('a' || g, 'b'), CASE WHEN g % 2 = 0 THEN 'new' ELSE 'done' END::status, "
    "ARRAY['new', NULL]::status[], 'r' || g "
    "FROM generate_series(1, 500) g",
    "INSERT INTO raw.events (id) VALUES (0)",
)


def create_source(pg: PgPair) -> None:
    pg.source(
        *RANGES,
        *TYPES[1:],
        "CREATE SCHEMA raw",
        TABLE,
        ROWS[0],
    )


def definitions(url: str, version: int) -> tuple[Any, ...]:
    """Every user type the table's columns use, as the engine reads them."""
    with psycopg.connect(url, autocommit=True) as conn:
        types = [
            r[0]
            for r in conn.execute(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = 'raw.events'::regclass AND attnum > 0 ORDER BY attnum"
            ).fetchall()
        ]
        return read_user_types(conn, types, version=version)


def enum_labels(pg: PgPair, side: str, name: str) -> list[str]:
    rows = pg.source_rows if side == "source" else pg.target_rows
    return [r[0] for r in rows(f"SELECT unnest(enum_range(NULL::{name}))::text")]


def test_user_types_are_created_like_the_source(pg_cross: PgPair) -> None:
    pg = pg_cross
    create_source(pg)
    entry = {"source": "raw.events"}
    result, report = run_and_check(pg, entry)
    assert (result.created_table, result.copy_format, result.inserted) == (True, "text", 500)
    assert report.passed, report.summary
    source_types = definitions(pg.source_admin_url, 150000)
    assert [str(t.name) for t in source_types] == [
        "app.mood",
        "app.positive",
        "app.small_positive",
        "app.code",
        "app.moods",
        'app."Pair"',
        "app.floatrange",
        "app.nested",
        "app.textrange",
        "public.status",
        "app.required",
    ]
    assert definitions(pg.target_admin_url, 180000) == source_types
    assert column_types(pg, "target", "raw.events") == column_types(pg, "source", "raw.events")
    assert_same_rows(pg, "raw.events")
    # The domain's constraints hold in the target: a row the source refuses, the target does.
    with pytest.raises(psycopg.errors.CheckViolation):
        pg.target("INSERT INTO raw.events (id, sp) VALUES (-1, 100)")
    assert pg.target_rows("SELECT 5::app.positive, NULL::app.positive IS NULL") == [(5, True)]

    # Identical types are left alone; new and changed rows still copy and check.
    pg.source("UPDATE raw.events SET m = '행복', pr = NULL WHERE id = 7", ROWS[1])
    again, report = run_and_check(pg, entry)
    assert (again.inserted, again.updated) == (1, 1)
    assert report.passed, report.summary
    assert_same_rows(pg, "raw.events")


def test_enum_labels_added_at_the_source_are_added_in_order(pg_cross: PgPair) -> None:
    pg = pg_cross
    create_source(pg)
    entry = {"source": "raw.events"}
    run_copy(pg, entry)
    pg.source(
        "ALTER TYPE app.mood ADD VALUE 'meh' AFTER 'sad'",
        "ALTER TYPE app.mood ADD VALUE 'awful' BEFORE 'sad'",
        "ALTER TYPE app.mood ADD VALUE 'ecstatic'",
        "ALTER TYPE public.status ADD VALUE 'doing' BEFORE 'done'",
    )
    pg.source(
        "UPDATE raw.events SET m = 'meh', ms = '{awful,ecstatic}', st = 'doing' WHERE id < 10"
    )
    # A dry run shows the labels it would commit first, and adds none.
    planned = runner.plan_statements(table_spec(entry), *endpoints(pg))
    first = planned.index("-- committed before the copy's transaction:")
    assert planned[first + 1 : first + 5] == [
        "ALTER TYPE \"app\".\"mood\" ADD VALUE IF NOT EXISTS 'awful' BEFORE 'sad'",
        "ALTER TYPE \"app\".\"mood\" ADD VALUE IF NOT EXISTS 'meh' AFTER 'sad'",
        "ALTER TYPE \"app\".\"mood\" ADD VALUE IF NOT EXISTS 'ecstatic' AFTER '행복'",
        "ALTER TYPE \"public\".\"status\" ADD VALUE IF NOT EXISTS 'doing' AFTER 'new'",
    ]
    assert enum_labels(pg, "target", "app.mood") == ["sad", "ok", "happy", "행복"]
    result, report = run_and_check(pg, entry)
    assert result.updated == 9
    assert report.passed, report.summary
    assert "types" in result.steps  # the labels' own committed step
    for name in ("app.mood", "public.status"):
        assert enum_labels(pg, "target", name) == enum_labels(pg, "source", name)
    assert enum_labels(pg, "target", "app.mood") == [
        "awful",
        "sad",
        "meh",
        "ok",
        "happy",
        "행복",
        "ecstatic",
    ]
    assert_same_rows(pg, "raw.events")
    # Sorting by the enum sorts alike on both sides.
    order = "SELECT id FROM raw.events ORDER BY m, id LIMIT 20"
    assert pg.target_rows(order) == pg.source_rows(order)


MISMATCHES = {
    "enum_extra_label": (
        ("CREATE TYPE status AS ENUM ('new', 'done', 'gone')",),
        "enum public.status has labels ['new', 'done'] at the source, "
        "['new', 'done', 'gone'] in the target",
    ),
    "enum_order": (
        ("CREATE TYPE status AS ENUM ('done', 'new')",),
        "enum public.status has labels ['new', 'done'] at the source, ['done', 'new']",
    ),
    "domain_base": (
        ("CREATE SCHEMA app", "CREATE DOMAIN app.positive AS bigint DEFAULT 1"),
        "domain app.positive: base type is integer at the source, bigint in the target",
    ),
    "domain_check": (
        ("CREATE SCHEMA app", "CREATE DOMAIN app.positive AS integer DEFAULT 1"),
        "domain app.positive: checks is CHECK ((VALUE > 0)), CHECK ((VALUE < 1000000)) at the "
        "source, none in the target",
    ),
    "composite_attribute": (
        ("CREATE SCHEMA app", 'CREATE TYPE app."Pair" AS (x bigint, label text)'),
        'composite app."Pair": attributes is (x app.positive, label text COLLATE pg_catalog."C", '
        "m app.mood, tags app.mood[]) at the source, (x bigint, label text) in the target",
    ),
    "range_subtype": (
        ("CREATE SCHEMA app", "CREATE TYPE app.textrange AS RANGE (SUBTYPE = int4)"),
        "range app.textrange: subtype is text at the source, integer in the target",
    ),
    "kind": (
        ("CREATE SCHEMA app", "CREATE TYPE app.mood AS (a int)"),
        "app.mood is an enum at the source, a composite in the target",
    ),
}


@pytest.mark.parametrize("case", list(MISMATCHES))
def test_a_differing_target_type_is_an_error_before_any_write(pg: PgPair, case: str) -> None:
    setup, message = MISMATCHES[case]
    create_source(pg)
    pg.target(*setup)
    before = pg.target_rows("SELECT count(*) FROM pg_class")
    with pytest.raises(UserTypeError) as raised:
        run_copy(pg, {"source": "raw.events"})
    assert message in str(raised.value)
    assert raised.value.table == "raw.events"
    # Nothing was written: no schema, table or type was created.
    assert pg.target_rows("SELECT count(*) FROM pg_class") == before
    assert pg.target_rows("SELECT count(*) FROM pg_namespace WHERE nspname = 'raw'") == [(0,)]


def test_a_column_added_at_the_source_brings_its_type(pg_cross: PgPair) -> None:
    pg = pg_cross
    pg.source(
        "CREATE SCHEMA raw",
        "CREATE TABLE raw.t (id int PRIMARY KEY)",
        "INSERT INTO raw.t SELECT generate_series(1, 10)",
    )
    run_copy(pg, {"source": "raw.t"})
    pg.source(
        "CREATE SCHEMA extra",
        "CREATE TYPE extra.level AS ENUM ('low', 'high')",
        "CREATE DOMAIN extra.levels AS extra.level[] CHECK (cardinality(VALUE) < 5)",
        "ALTER TABLE raw.t ADD COLUMN l extra.levels",
        "UPDATE raw.t SET l = '{high,low}' WHERE id % 2 = 0",
    )
    result, report = run_and_check(pg, {"source": "raw.t"})
    assert result.added_columns == ("l",)
    assert report.passed, report.summary
    assert_same_rows(pg, "raw.t")
    assert enum_labels(pg, "target", "extra.level") == ["low", "high"]


def test_the_plan_shows_the_types_it_would_create(any_pg: PgPair) -> None:
    pg = any_pg
    pg.source(
        "CREATE TYPE mood AS ENUM ('a', 'b')",
        "CREATE TABLE t (id int PRIMARY KEY, m mood)",
    )
    statements = runner.plan_statements(table_spec({"source": "public.t"}), *endpoints(pg))
    create_type = statements.index("CREATE TYPE \"public\".\"mood\" AS ENUM ('a', 'b')")
    create_table = next(i for i, s in enumerate(statements) if s.startswith("CREATE TABLE"))
    assert create_type < create_table
    assert pg.target_rows("SELECT count(*) FROM pg_type WHERE typname = 'mood'") == [(0,)]


def test_parallel_streams_wait_until_the_types_are_committed(any_pg: PgPair) -> None:
    pg = any_pg
    create_source(pg)
    pg.target("CREATE SCHEMA raw")  # an existing schema: only the new types hold parallel back
    entry = {"source": "raw.events", "parallel": 2, "mode": "replace"}
    first = run_copy(pg, entry)  # types made in this transaction: one stream can see them
    assert (first.inserted, "staging" in first.steps) == (500, False)
    second, report = run_and_check(pg, entry)
    assert (second.inserted, "staging" in second.steps) == (500, True)
    assert report.passed, report.summary
    assert_same_rows(pg, "raw.events")
