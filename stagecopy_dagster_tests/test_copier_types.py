"""Every common type round-trips byte for byte, through binary COPY and through text COPY.

Binary COPY is used when every column's type is portable (built-in types and enums); one
non-portable column (an array of an enum, a composite, a domain) switches the whole table to
text COPY. Both paths are run directly into a new table and through staging + MERGE, and the
copied values are compared with each type's binary send function (the exact bytes) as well as
their text form.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, LiteralString, cast

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from stagecopy_dagster import statements as st
from stagecopy_dagster.errors import CopyError
from stagecopy_dagster_tests.copyhelpers import (
    assert_same_rows,
    column_types,
    run_and_check,
    run_copy,
    staging_leftovers,
)
from stagecopy_dagster_tests.pg import READER, PgPair

TYPES_SETUP = (
    "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', '행복')",
    "CREATE TYPE pair AS (x int, label text)",
    "CREATE DOMAIN positive AS int CHECK (VALUE > 0)",
)

BASE_COLUMNS = (
    "id int PRIMARY KEY, i int, b bigint, n numeric, n2 numeric(12,2), f float8, r real, "
    "t text, vc varchar(10), bt bytea, jb jsonb, js json, ia int[], ta text[], u uuid, "
    "d date, tz timestamptz, ts timestamp, iv interval, bo boolean, m mood"
)
# One of these forces text COPY.
TEXT_ONLY_COLUMNS = {
    "enum_array": "extra mood[]",
    "composite": "extra pair",
    "domain": "extra positive",
}
TEXT_ONLY_VALUES = {
    "enum_array": "ARRAY[(enum_range(NULL::mood))[1 + g % 4], NULL]::mood[]",
    "composite": "ROW(g, 'p,(' || g || ')\"')::pair",
    "domain": "g",
}

# Hand-picked edge cases: (id, column list, values).
SPECIAL_ROWS = (
    "INSERT INTO types (id, i, b, n, n2, f, r, t, vc, bt, jb, js, ia, ta, u, d, tz, ts, iv, bo, m) "
    "VALUES "
    "(1, 42, 42, 3.14159, 12.50, 2.5, 1.5, 'plain', 'short', '\\x01', "
    "'{\"a\": 1, \"b\": 2}', '{\"a\": 1}', '{1,2,3}', '{a,b}', "
    "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '2024-02-29 23:59:59.999999+09', "
    "'2024-02-29 23:59:59.999999', '1 year 2 mons -3 days 04:05:06.789', true, 'happy'), "
    "(2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, NULL, NULL, NULL, NULL, NULL), "
    "(3, -2147483648, 9223372036854775807, 'NaN', -9999999999.99, 'Infinity', 'Infinity', "
    "E'tab\\there\\nnew line\\\\back\\\\slash ''single'' \"double\" 한국어 \\u00e9', "
    "'한국어abc', '\\x00ff5c0a0d09', "
    '\'{"한": "글", "nested": [1, 2.50, {"x": null}], "e": "\\\\u0000x"}\', '
    '\'{"b":1,  "a" : 2, "a": 3}\', \'{1,NULL,3}\', '
    "ARRAY['a b', 'c,d', 'NULL', NULL, '\"q\"', E'back\\\\slash', '{}', ''], "
    "'00000000-0000-0000-0000-000000000000', 'infinity', '-infinity', 'infinity', "
    "'-178000000 years', false, '행복'), "
    "(4, 0, -9223372036854775808, 1.0, 0.00, '-Infinity', '-Infinity', '', '', '\\x', "
    "'{}', '[]', '{}', '{}', 'ffffffff-ffff-ffff-ffff-ffffffffffff', '4713-01-01 BC', "
    "'0001-01-01 00:00:00+00 BC', '294276-12-31 23:59:59.999999', '0', false, 'sad'), "
    "(5, 1, 1, 1.00, 1.00, 'NaN', 'NaN', E'\\\\N', '\\N', '\\x5c4e', "
    "'null', 'null', '{{1,2},{3,4}}', '{\"\\\\\\\\N\"}', "
    "'12345678-1234-1234-1234-123456789abc', '2000-01-01', '1970-01-01 00:00:00+00', "
    "'1970-01-01 00:00:00', '-1 days -00:00:01', true, 'ok'), "
    "(6, 2, 2, -0.000001, -0.01, '-0', '-0', E'\\r\\n', ' ', '\\x00', "
    "'1.50', '\"str\"', ARRAY[NULL]::int[], ARRAY[NULL]::text[], "
    "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12', '2024-01-01', '2024-06-30 12:00:00.5-07:30', "
    "'2024-06-30 12:00:00.5', '00:00:00.000001', false, 'sad'), "
    "(7, 2147483647, 0, 123456789012345678901234567890.123456789012345678901, 9999999999.99, "
    "1e-310, 1.17549435e-38, repeat('긴텍스트', 5000), '0123456789', "
    "decode(repeat('00ff', 5000), 'hex'), "
    "'{\"big\": 12345678901234567890.123456789, \"f\": 1e-7}', '[1e-7, 1E+2]', "
    "'{2147483647,-2147483648}', '{\"\\t\",\"\\n\"}', "
    "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a13', '5874897-12-31', "
    "'2000-01-01 00:00:00.000001+14', '2000-01-01 00:00:00.000001', "
    "'178000000 years', true, 'happy'), "
    "(8, 3, 3, 1.7976931348623157e308, 0, 1.7976931348623157e308, 3.4028235e38, 'x', 'x', "
    "'\\x', '{\"k\": \"\\u00e9\\ud55c\"}', '{\"k\": \"\\u00e9\"}', '{}', '{}', "
    "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a14', '2024-01-01', '2024-01-01 00:00:00+00', "
    "'2024-01-01 00:00:00', '-178000000 years', true, 'ok')"
)

BULK_ROWS = (
    "INSERT INTO types (id, i, b, n, n2, f, r, t, vc, bt, jb, js, ia, ta, u, d, tz, ts, iv, bo, "
    "m{extra}) "
    "SELECT g, g, g * 1000000007::bigint, g / 7.0, (g / 3.0)::numeric(12,2), g / 3.0::float8, "
    "(g / 3.0)::real, 'row ' || g || E'\\t탭\\n\\\\' || repeat('x', g % 50), "
    "left(md5(g::text), 10), decode(md5(g::text), 'hex'), "
    "jsonb_build_object('g', g, 'k', '값', 'arr', jsonb_build_array(g, NULL, 'x')), "
    "json_build_object('g', g), ARRAY[g, NULL, -g], ARRAY['a' || g, NULL, '', 'q\"'], "
    "md5(g::text)::uuid, date '2024-01-01' + g, "
    "timestamptz '2024-01-01 00:00:00+09' + g * interval '1.5 s', "
    "timestamp '2024-01-01' + g * interval '1 ms', g * interval '1 day 1 second', "
    "g % 2 = 0, (enum_range(NULL::mood))[1 + g % 4]{extra_values} "
    "FROM generate_series(100, 2000) g"
)

VARIANTS = ["binary", "enum_array", "composite", "domain"]


def create_types_table(pg: PgPair, variant: str) -> None:
    extra_column = "" if variant == "binary" else ", " + TEXT_ONLY_COLUMNS[variant]
    # The target needs the user types too: stagecopy creates tables, not types.
    pg.target(*TYPES_SETUP)
    pg.source(
        *TYPES_SETUP,
        f"CREATE TABLE types ({BASE_COLUMNS}{extra_column})",
        SPECIAL_ROWS,
        BULK_ROWS.format(
            extra="" if variant == "binary" else ", extra",
            extra_values="" if variant == "binary" else ", " + TEXT_ONLY_VALUES[variant],
        ),
    )


def send_fingerprints(url: str, columns: list[tuple[str, str]]) -> tuple[Any, ...]:
    """Per column: md5 over every row of the type's binary send output (NULL marked)."""
    aggregates = ", ".join(
        f"md5(string_agg(coalesce(encode({send}({name}), 'hex'), 'NULL'), ',' ORDER BY id))"
        for name, send in columns
    )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(st.set_session())
        row = conn.execute(cast(LiteralString, f"SELECT {aggregates} FROM types")).fetchone()
    assert row is not None
    return tuple(row)


def portable_send_functions(pg: PgPair) -> list[tuple[str, str]]:
    """(column, send function) of the columns whose binary form holds no database OIDs."""
    rows = pg.source_rows(
        "SELECT a.attname, t.typsend::text FROM pg_attribute a "
        "JOIN pg_type t ON t.oid = a.atttypid "
        "WHERE a.attrelid = 'types'::regclass AND a.attnum > 0 AND NOT a.attisdropped "
        "AND (t.oid < 16384 OR t.typtype = 'e') ORDER BY a.attnum"
    )
    return [(name, send) for name, send in rows]


def assert_byte_identical(pg: PgPair) -> None:
    assert_same_rows(pg, "types")
    columns = portable_send_functions(pg)
    assert len(columns) >= 21
    assert send_fingerprints(pg.source_admin_url, columns) == send_fingerprints(
        pg.target_admin_url, columns
    )


@pytest.mark.parametrize("diff", [True, False], ids=["diff", "stream-all"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_types_round_trip_byte_identically(pg: PgPair, variant: str, diff: bool) -> None:
    create_types_table(pg, variant)
    expected_format = "binary" if variant == "binary" else "text"
    total = 8 + (2000 - 100 + 1)
    entry = {"source": "public.types", "diff": diff}

    first = run_copy(pg, entry)
    assert (first.path, first.copy_format) == ("direct", expected_format)
    assert (first.rows_copied, first.inserted) == (total, total)
    assert column_types(pg, "target", "types") == column_types(pg, "source", "types")
    assert_byte_identical(pg)

    # Changes only a byte image can see, and one it must not see.
    pg.source(
        "UPDATE types SET n = 1.00 WHERE id = 4",  # 1.0 -> 1.00: same value, other scale
        "UPDATE types SET f = 0 WHERE id = 6",  # -0 -> 0
        "UPDATE types SET t = '' WHERE id = 2",  # NULL -> empty string
        'UPDATE types SET js = \'{"b":1, "a" : 2, "a": 3}\' WHERE id = 3',  # json keeps spaces
        'UPDATE types SET jb = \'{"b": 2, "a": 1}\' WHERE id = 1',  # same jsonb: no change
        "UPDATE types SET t = NULL WHERE id = 4",
    )
    second, report = run_and_check(pg, entry)
    assert (second.path, second.copy_format) == ("diff" if diff else "staged", expected_format)
    # The diff's row hash sees what the byte image sees: the same 4 rows, and only those.
    assert (second.rows_copied, second.inserted, second.updated, second.deleted) == (
        4 if diff else total,
        0,
        4,
        0,
    )
    assert report.passed, report.summary
    assert_byte_identical(pg)
    assert staging_leftovers(pg) == []

    unchanged = run_copy(pg, entry)
    assert (unchanged.inserted, unchanged.updated) == (0, 0)
    assert unchanged.rows_copied == (0 if diff else total)


def test_empty_string_and_null_stay_apart(pg: PgPair) -> None:
    pg.source(
        "CREATE TABLE s (id int PRIMARY KEY, t text, b bytea, a text[])",
        "INSERT INTO s VALUES (1, '', '\\x', '{}'), (2, NULL, NULL, NULL), "
        "(3, E'\\\\N', '\\x5c4e', '{NULL}'), (4, 'NULL', '\\x00', '{\"\"}')",
    )
    for fmt_forcing in (False, True):
        if fmt_forcing:
            # The same rows through text COPY: add a non-portable column.
            pg.source("CREATE TYPE e AS ENUM ('x')", "ALTER TABLE s ADD COLUMN z e[]")
            pg.target("CREATE TYPE e AS ENUM ('x')", "DROP TABLE s")
        result = run_copy(pg, {"source": "public.s"})
        assert result.copy_format == ("text" if fmt_forcing else "binary")
        rows = pg.target_rows(
            "SELECT id, t IS NULL, t, b IS NULL, length(b), a IS NULL, cardinality(a) "
            "FROM s ORDER BY id"
        )
        assert rows == [
            (1, False, "", False, 0, False, 0),
            (2, True, None, True, None, True, None),
            (3, False, "\\N", False, 2, False, 1),
            (4, False, "NULL", False, 1, False, 1),
        ]


def test_float_specials_and_numeric_scale_are_updates(pg: PgPair) -> None:
    pg.source(
        "CREATE TABLE v (id int PRIMARY KEY, n numeric, f float8)",
        "INSERT INTO v VALUES (1, 1.0, 0), (2, 'NaN', 'NaN'), (3, 5, 'Infinity')",
    )
    run_copy(pg, {"source": "public.v"})
    pg.source(
        "UPDATE v SET n = 1.00 WHERE id = 1",
        "UPDATE v SET f = '-0' WHERE id = 1",
        "UPDATE v SET f = '-Infinity' WHERE id = 3",
    )
    result = run_copy(pg, {"source": "public.v"})
    assert (result.inserted, result.updated) == (0, 2)
    assert pg.target_rows("SELECT n::text, f::text FROM v ORDER BY id") == [
        ("1.00", "-0"),
        ("NaN", "NaN"),
        ("5", "-Infinity"),
    ]
    # NaN = NaN in a byte image: re-running changes nothing.
    assert run_copy(pg, {"source": "public.v"}).updated == 0


@pytest.fixture
def euc_kr_source(pg: PgPair) -> Iterator[PgPair]:
    """The same pair, but the source database is encoded in EUC_KR (common for Korean data)."""
    name = pg.source_db + "_euckr"
    with pg.cluster.connect() as conn:
        conn.execute(
            sql.SQL(
                "CREATE DATABASE {} TEMPLATE template0 ENCODING 'EUC_KR' "
                "LC_COLLATE 'C' LC_CTYPE 'C'"
            ).format(sql.Identifier(name))
        )
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(name), sql.Identifier(READER)
            )
        )
    try:
        yield replace(
            pg,
            source_db=name,
            source_url=make_conninfo(pg.source_url, dbname=name),
            source_admin_url=make_conninfo(pg.source_admin_url, dbname=name),
        )
    finally:
        with pg.cluster.connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.mark.parametrize("fmt", ["binary", "text"])
def test_korean_text_from_an_euc_kr_source(euc_kr_source: PgPair, fmt: str) -> None:
    pg = euc_kr_source
    extra = "" if fmt == "binary" else ", e mood[]"
    pg.target("CREATE TYPE mood AS ENUM ('기쁨')")
    pg.source(
        "CREATE TYPE mood AS ENUM ('기쁨')",
        f"CREATE TABLE k (id int PRIMARY KEY, 종목명 text, names text[], j jsonb{extra})",
        "INSERT INTO k (id, 종목명, names, j) VALUES "
        "(1, '삼성전자 우선주', '{가,\"나 다\"}', '{\"이름\": \"값\"}'), "
        "(2, E'탭\\t줄\\n', NULL, NULL)",
    )
    result = run_copy(pg, {"source": "public.k"})
    assert result.copy_format == fmt
    assert pg.target_rows("SELECT id, 종목명, names, j FROM k ORDER BY id") == [
        (1, "삼성전자 우선주", ["가", "나 다"], {"이름": "값"}),
        (2, "탭\t줄\n", None, None),
    ]


# Edge values, each byte for byte (issue #13): specials, infinities, arrays of every shape,
# "char", intervals, money under another lc_monetary, and the network, bit, text search,
# multirange and uuid[] types; then a 10 MB bytea and a 50 MB jsonb, tsquery and xml.
EDGE_COLUMNS = (
    "id int PRIMARY KEY, n numeric, f8 float8, f4 real, ts timestamp, tz timestamptz, d date, "
    'ia int[], ta text[], bt bytea, jb jsonb, ch "char", iv interval, mo money, '
    "tv tsvector, ip inet, ci cidr, m8 macaddr8, ma macaddr, vb bit varying, "
    "b4 bit(4), mr int4multirange, nm nummultirange, dm datemultirange, tm tstzmultirange, "
    "ua uuid[]"
)
EDGE_ROWS = (
    "INSERT INTO edge VALUES "
    "(1, 'NaN', 'NaN', 'NaN', 'infinity', 'infinity', 'infinity', '{}', '{}', '\\x', '{}', "
    "'a', '1 mon 2 days 00:00:00.000003', '12.34', "
    "'a:1A fat:2B,4C cat:5D', '192.168.1.5/24', '10.0.0.0/8', "
    "'08:00:2b:01:02:03:04:05', '08:00:2b:01:02:03', B'', B'1010', "
    "'{[1,3), [5,9)}', '{}', '{[2024-01-01,infinity)}', "
    "'{[2024-01-01 00:00:00+09,2024-01-02 00:00:00+00)}', '{}'), "
    "(2, 'Infinity', '-0', '-0', '-infinity', '-infinity', '-infinity', '{NULL,1,NULL}', "
    "'{NULL,\"\",\"NULL\",\"a,b\"}', '\\x00', '[]', '', '-1 mon +2 days -00:00:00.000001', "
    "'-92233720368547758.08', to_tsvector('simple', 'The quick 한국어 fox'), "
    "'::ffff:1.2.3.4/128', '2001:db8::/32', '00:00:00:00:00:00:00:00', "
    "'ff:ff:ff:ff:ff:ff', B'1', B'0000', '{[-2147483648,2147483647)}', "
    "'{(,0], [1.5,NaN]}', '{}', '{}', ARRAY[NULL]::uuid[]), "
    "(3, '-Infinity', 'Infinity', '-Infinity', '294276-12-31 23:59:59.999999', "
    "'4713-01-01 00:00:00+00 BC', '5874897-12-31', '{{1,2},{3,NULL}}', '[0:1]={x,y}', "
    "'\\x5c4e0a', '{\"deep\": [[[[1]]]]}', chr(200)::\"char\", 'P1Y2M3DT4H5M6.789S', "
    "'92233720368547758.07', '', '0.0.0.0/0', '::/0', '08:00:2b:ff:fe:01:02:03', "
    "'00:00:00:00:00:00', repeat('10', 50)::varbit, B'1111', '{[1,2)}', '{[-1e-20,1e20)}', "
    "'{(,)}', '{(,)}', ARRAY['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', NULL, "
    "'ffffffff-ffff-ffff-ffff-ffffffffffff']::uuid[]), "
    "(4, -0.0, -1e-308, 1.4e-45, '2000-01-01', '2000-01-01 00:00:00.000001+14', '2000-01-01', "
    "'{{{1},{2}},{{3},{4}}}', '{{a,NULL},{NULL,\"}\"}}', NULL, NULL, NULL, "
    "'-178000000 years 11 mons 30 days 23:59:59.999999', '0', NULL, NULL, NULL, "
    "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '{}')",
)
#: A 10 MiB bytea (incompressible) and a jsonb of about 50 MB.
BIG_ROW = (
    "INSERT INTO big (id, bt, jb) SELECT 5, (SELECT string_agg(decode(md5(g::text), 'hex'), "
    "'' ORDER BY g) FROM generate_series(1, 655360) g), (SELECT jsonb_agg(md5(g::text) "
    "ORDER BY g) FROM generate_series(1, 1400000) g)"
)


@pytest.fixture(scope="session")
def korean_locale() -> str:
    """A locale whose money has no fraction digits and another symbol (compiled when missing).

    Compiled into its own folder (`--no-archive`): a server started while the machine had no
    locale archive would not look into one made afterwards.
    """
    name = "ko_KR.UTF-8"
    listed = subprocess.run(["locale", "-a"], capture_output=True, text=True, check=True)
    if "ko_KR.utf8" not in listed.stdout.split():
        # Debian ships the definition (package `locales`); compiling it needs root.
        done = subprocess.run(
            ["localedef", "--no-archive", "-i", "ko_KR", "-f", "UTF-8", name],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, (
            f"this test needs the {name} locale: run `localedef --no-archive -i ko_KR -f UTF-8 "
            f"{name}` as root ({done.stderr.strip()})"
        )
    return name


def edge_send_fingerprints(url: str, table: str = "edge") -> list[tuple[Any, ...]]:
    """Per row: the md5 of each built-in column's binary send output (the exact stored bytes)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(st.set_session())
        columns = conn.execute(
            "SELECT a.attname, t.typsend::text FROM pg_attribute a "
            "JOIN pg_type t ON t.oid = a.atttypid WHERE a.attrelid = %s::regclass "
            "AND a.attnum > 0 AND t.oid < 16384 ORDER BY a.attnum",
            (table,),
        ).fetchall()
        digests = ", ".join(f"md5({send}({name}))" for name, send in columns)
        return conn.execute(
            cast(LiteralString, f"SELECT id, {digests} FROM {table} ORDER BY id")
        ).fetchall()


@pytest.mark.parametrize("fmt", ["binary", "text"])
def test_edge_values_round_trip_byte_identically(
    pg_cross: PgPair, fmt: str, korean_locale: str
) -> None:
    pg = pg_cross
    # The source renders money in won (no fraction digits, another symbol); the target does not.
    pg.source(f"ALTER DATABASE {pg.source_db} SET lc_monetary = '{korean_locale}'")
    extra = "" if fmt == "binary" else ", z mood[]"  # a user type's array forces text COPY
    pg.source(
        "CREATE TYPE mood AS ENUM ('a', 'b')",
        f"CREATE TABLE edge ({EDGE_COLUMNS}{extra})",
        *EDGE_ROWS,
    )
    assert pg.source_rows("SELECT mo::text FROM edge WHERE id = 1") == [("₩12",)]
    entry = {"source": "public.edge"}
    result, report = run_and_check(pg, entry)
    assert (result.copy_format, result.inserted) == (fmt, 4)
    assert report.passed, report.summary
    fingerprints = edge_send_fingerprints(pg.source_admin_url)
    assert len(fingerprints[0]) == 1 + 26
    assert edge_send_fingerprints(pg.target_admin_url) == fingerprints
    assert_same_rows(pg, "edge")
    # Each value changed to another with the same text or equal value is seen and copied.
    pg.source(
        "UPDATE edge SET f8 = 0 WHERE id = 2",  # -0 -> 0
        "UPDATE edge SET ia = '{1,2,3,NULL}' WHERE id = 3",  # same values, another shape
        "UPDATE edge SET ta = '{x,y}' WHERE id = 3",  # lower bound 0 -> 1
        "UPDATE edge SET mo = mo + 1::money WHERE id = 1",
    )
    again, report = run_and_check(pg, entry)
    assert (again.inserted, again.updated) == (0, 3)
    assert report.passed, report.summary
    assert edge_send_fingerprints(pg.target_admin_url) == edge_send_fingerprints(
        pg.source_admin_url
    )


def test_a_10_mb_bytea_and_a_50_mb_jsonb_round_trip_byte_identically(pg15to18: PgPair) -> None:
    """Large values through text COPY (hex bytea, escaped jsonb); compared by their send bytes.

    From PostgreSQL 15 to 18 only: both servers' sides of the COPY, once (about a minute).
    """
    pg = pg15to18
    pg.source(
        "CREATE TYPE mood AS ENUM ('a')",
        "CREATE TABLE big (id int PRIMARY KEY, bt bytea, jb jsonb, z mood[])",
        BIG_ROW,
        "INSERT INTO big VALUES (6, '\\x', '\"tab\\t back\\\\slash\"', '{a}')",
    )
    size = "SELECT length(bt), length(jb::text) > 50000000 FROM big WHERE id = 5"
    assert pg.source_rows(size) == [(10 * 1024 * 1024, True)]
    result, report = run_and_check(pg, {"source": "public.big"})
    assert (result.copy_format, result.inserted) == ("text", 2)
    assert result.bytes > 70_000_000
    assert report.passed, report.summary
    assert edge_send_fingerprints(pg.target_admin_url, "big") == edge_send_fingerprints(
        pg.source_admin_url, "big"
    )


def test_an_empty_tsquery_copies_as_text(pg_cross: PgPair) -> None:
    """Binary COPY writes an empty tsquery that it cannot read back: tsquery travels as text."""
    pg = pg_cross
    pg.source(
        "CREATE TABLE q (id int PRIMARY KEY, tq tsquery, tqs tsquery[])",
        "INSERT INTO q VALUES (1, '', '{}'), "
        "(2, 'fat & (rat | !cat)', ARRAY['', 'a <-> b']::tsquery[]), "
        "(3, '한국어:* & b:AB', NULL), (4, NULL, ARRAY[NULL]::tsquery[])",
    )
    result, report = run_and_check(pg, {"source": "public.q"})
    assert (result.copy_format, result.inserted) == ("text", 4)
    assert report.passed, report.summary
    assert_same_rows(pg, "q")
    send = "SELECT id, md5(tsquerysend(tq)), md5(array_send(tqs)) FROM q ORDER BY id"
    assert pg.target_rows(send) == pg.source_rows(send)


def has_libxml(url: str) -> bool:
    """Whether the server was built with libxml (the embedded PostgreSQL 18 is not)."""
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            conn.execute("SELECT '<a/>'::xml")
        except psycopg.errors.FeatureNotSupported:
            return False
    return True


def test_xml_round_trips_where_both_servers_read_it(pg_cross: PgPair) -> None:
    pg = pg_cross
    pg.source("CREATE TABLE x (id int PRIMARY KEY, x xml)", "INSERT INTO x VALUES (0, NULL)")
    if has_libxml(pg.source_admin_url):
        pg.source(
            "INSERT INTO x VALUES (1, '<a b=\"1\">x &amp; y<c/></a>'), (2, 'text<x/>more'), "
            '(3, \'<?xml version="1.0"?><r xmlns="urn:x"><![CDATA[<&>]]></r>\'), '
            "(4, ''), (5, '<한>글</한>')"
        )
    values = pg.source_rows("SELECT count(x) FROM x")[0][0]
    if values and not has_libxml(pg.target_admin_url):
        # A target built without libxml stores no xml value: a clear error, nothing written.
        with pytest.raises(CopyError, match="requires the server to be built with libxml"):
            run_copy(pg, {"source": "public.x"})
        assert pg.target_rows("SELECT to_regclass('public.x')") == [(None,)]
        return
    result, report = run_and_check(pg, {"source": "public.x"})
    assert (result.copy_format, result.inserted) == ("binary", 1 + values)
    assert report.passed, report.summary
    send = "SELECT id, md5(xml_send(x)) FROM x ORDER BY id"
    assert pg.target_rows(send) == pg.source_rows(send)
