"""Exact SQL text of the scope's WHERE, watermarks and scoped reads, without a database.

:mod:`stagecopy_dagster.statements.scope`; ``as_string(None)``.
"""

from __future__ import annotations

from psycopg import sql

from stagecopy_dagster import statements as st
from stagecopy_dagster.sqlguard import parse_query, parse_where
from stagecopy_dagster_tests.statementhelpers import SCOPE, TARGET, T, text


def test_scope_filter_empty() -> None:
    assert text(st.scope_filter(None)) == ""
    # A watermark of None (empty target) means a full copy.
    assert text(st.scope_filter(None, incremental_field="updated_at", watermark=None)) == ""


def test_scope_filter_where_only() -> None:
    assert text(st.scope_filter(SCOPE)) == " WHERE (region = 'KR' AND amount > 0)"


def test_scope_filter_with_inclusive_watermark() -> None:
    statement = st.scope_filter(
        SCOPE, incremental_field="updated_at", watermark="2024-01-01 00:00:00+00"
    )
    assert text(statement) == (
        " WHERE (region = 'KR' AND amount > 0) AND \"updated_at\" >= '2024-01-01 00:00:00+00'"
    )


def test_scope_filter_with_exclusive_watermark_and_extra() -> None:
    statement = st.scope_filter(
        None,
        incremental_field="버전",
        watermark=41,
        inclusive=False,
        extra=sql.SQL("ctid >= '(0,0)'::tid"),
    )
    assert text(statement) == " WHERE \"버전\" > 41 AND ctid >= '(0,0)'::tid"


def test_scope_filter_keeps_an_or_scope_together() -> None:
    # Parenthesised, so `a OR b` cannot leak out of the scope next to the watermark.
    statement = st.scope_filter(parse_where("a = 1 OR b = 2"), incremental_field="u", watermark=5)
    assert text(statement) == ' WHERE (a = 1 OR b = 2) AND "u" >= 5'


def test_max_watermark_with_lookback_and_scope() -> None:
    assert text(st.max_watermark(TARGET, "updated_at", SCOPE, "10 minutes")) == (
        "SELECT max(\"updated_at\") - '10 minutes'::interval FROM "
        f"{T} WHERE (region = 'KR' AND amount > 0)"
    )


def test_max_watermark_plain() -> None:
    assert text(st.max_watermark(TARGET, "updated_at", None, None)) == (
        f'SELECT max("updated_at") FROM {T}'
    )


def test_is_empty_uses_the_scope() -> None:
    assert text(st.is_empty(TARGET, SCOPE)) == (
        f"SELECT NOT EXISTS (SELECT FROM {T} WHERE (region = 'KR' AND amount > 0))"
    )
    assert text(st.is_empty(TARGET, None)) == f"SELECT NOT EXISTS (SELECT FROM {T})"


def test_small_scope_statements() -> None:
    assert text(st.count_rows(TARGET)) == f"SELECT count(*) FROM {T}"
    assert text(st.describe_query(parse_query("SELECT 1 AS a"))) == (
        "SELECT * FROM (SELECT 1 AS a) AS q LIMIT 0"
    )


def test_explain_estimate_and_count_select_wrap_the_scoped_select() -> None:
    select = st.select_rows(TARGET, ["id", "region"], st.scope_filter(SCOPE))
    assert text(st.explain_estimate(select)) == (
        f'EXPLAIN (FORMAT JSON) SELECT "id", "region" FROM {T} '
        "WHERE (region = 'KR' AND amount > 0)"
    )
    assert text(st.count_select(select)) == (
        f'SELECT count(*) FROM (SELECT "id", "region" FROM {T} '
        "WHERE (region = 'KR' AND amount > 0)) AS s"
    )
