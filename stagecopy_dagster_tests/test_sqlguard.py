"""The trust boundary for user SQL: `where` and `query` (no database)."""

from __future__ import annotations

import pytest

from stagecopy_dagster.errors import SpecError, UnsafeSqlError
from stagecopy_dagster.sqlguard import parse_query, parse_where

# --- where: accepted --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "canonical"),
    [
        ("region = 'KR'", "region = 'KR'"),
        ("coalesce(amount, 0) > 1 + 2", "COALESCE(amount, 0) > 1 + 2"),
        ("a OR b AND c", "a OR (b AND c)"),
        ("created_at >= now() - interval '7 days'", None),
        (
            "id IN (SELECT id FROM ref.active WHERE ok)",
            "id IN (SELECT id FROM ref.active WHERE ok)",
        ),
        ("EXISTS (SELECT 1 FROM r WHERE r.code = region)", None),
        ("시장구분 = 'KOSPI'", "\"시장구분\" = 'KOSPI'"),
        ("\"Region\" = 'KR'", "\"Region\" = 'KR'"),
        ("true", "TRUE"),
        ("status IS NOT NULL AND NOT deleted", None),
        ("x.a = 1", "x.a = 1"),
    ],
)
def test_where_accepts_one_expression(where: str, canonical: str | None) -> None:
    checked = parse_where(where)
    if canonical is not None:
        assert checked.text == canonical
    # The canonical text parses back to itself.
    assert parse_where(checked.text).text == checked.text


def test_where_keeps_korean_text_and_names() -> None:
    checked = parse_where("종목명 LIKE '삼성%' AND 시장구분 = 'KOSPI'")
    assert checked.text == "\"종목명\" LIKE '삼성%' AND \"시장구분\" = 'KOSPI'"


def test_where_records_called_functions() -> None:
    checked = parse_where("now() > ts AND pg_catalog.lower(name) = 'x'")
    assert set(checked.functions) == {(None, "now"), ("pg_catalog", "lower")}


def test_comments_are_stripped_from_the_canonical_text() -> None:
    checked = parse_where("region = 'KR' /* block */ -- line")
    assert checked.text == "region = 'KR'"
    # A comment cannot hide a second condition.
    assert parse_where("a = 1 -- ) OR (1=1").text == "a = 1"


def test_composable_is_parenthesised() -> None:
    assert parse_where("a = 1 OR b = 2").composable().as_string(None) == "(a = 1 OR b = 2)"


# --- where: rejected --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "problem"),
    [
        ("1=1; DROP TABLE x", "must be a single statement, found 2"),
        ("1=1) --", "is not valid SQL"),
        ("1=1) OR (1=1", "is not valid SQL"),
        ("1=1 UNION SELECT 1", "must be one boolean expression"),
        ("1=1 ORDER BY 1", "must be one boolean expression, not a clause or statement"),
        ("1=1 LIMIT 1", "must be one boolean expression, not a clause or statement"),
        ("1=1 OFFSET 1", "must be one boolean expression, not a clause or statement"),
        ("a = 1 GROUP BY a", "must be one boolean expression, not a clause or statement"),
        ("a = 1 FOR UPDATE", "must be one boolean expression, not a clause or statement"),
        ("id IN (SELECT id FROM x FOR UPDATE)", "row locks (FOR UPDATE/SHARE) are not allowed"),
        ("EXISTS (SELECT 1 FROM x FOR SHARE)", "row locks (FOR UPDATE/SHARE) are not allowed"),
        ("a = 1 /* unterminated", "is not valid SQL"),
        ("", "is empty"),
        ("   ", "is empty"),
    ],
)
def test_where_rejects(where: str, problem: str) -> None:
    with pytest.raises(UnsafeSqlError) as info:
        parse_where(where)
    message = str(info.value)
    assert message.startswith(f"where {where!r}")
    assert problem in message


def test_unsafe_sql_is_a_spec_error() -> None:
    with pytest.raises(SpecError):
        parse_where("1=1; DROP TABLE x")


# --- qualified(): only outer columns ----------------------------------------------------------


def test_qualified_prefixes_bare_columns() -> None:
    assert parse_where("region = 'KR' AND amount > 0").qualified("t") == (
        "t.region = 'KR' AND t.amount > 0"
    )
    assert (
        parse_where('"Region" = 1 OR 시장 = 2').qualified("t") == 't."Region" = 1 OR t."시장" = 2'
    )


def test_qualified_keeps_already_qualified_columns() -> None:
    assert parse_where("x.a = 1").qualified("t") == "x.a = 1"


def test_qualified_leaves_sub_selects_alone_but_qualifies_the_tested_expression() -> None:
    checked = parse_where("id IN (SELECT id FROM ref WHERE ok) AND EXISTS (SELECT 1 FROM r)")
    assert checked.qualified("t") == (
        "t.id IN (SELECT id FROM ref WHERE ok) AND EXISTS (SELECT 1 FROM r)"
    )


def test_qualified_inside_functions_and_casts() -> None:
    assert parse_where("coalesce(a, b)::int > 0").qualified("t") == (
        "CAST(COALESCE(t.a, t.b) AS integer) > 0"
    )


def test_qualified_does_not_change_the_checked_text() -> None:
    checked = parse_where("a = 1")
    checked.qualified("t")
    assert checked.text == "a = 1"


# --- query ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "canonical"),
    [
        ("SELECT 1 AS a", "SELECT 1 AS a"),
        ("select a from t -- hi", "SELECT a FROM t"),
        ("WITH x AS (SELECT 1 AS a) SELECT a FROM x", "WITH x AS (SELECT 1 AS a) SELECT a FROM x"),
        ("SELECT 1 UNION ALL SELECT 2", "SELECT 1 UNION ALL SELECT 2"),
        ("SELECT * FROM t WHERE a IN (VALUES (1))", "SELECT * FROM t WHERE a IN (VALUES (1))"),
        ("SELECT 종목코드, 종목명 FROM raw_data.인포맥스종목마스터", None),
    ],
)
def test_query_accepts_one_select(query: str, canonical: str | None) -> None:
    checked = parse_query(query)
    if canonical is not None:
        assert checked.text == canonical
    assert parse_query(checked.text).text == checked.text


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("DELETE FROM t", "query must be a SELECT, got DELETE"),
        ("UPDATE t SET a = 1", "query must be a SELECT, got UPDATE"),
        ("INSERT INTO t VALUES (1)", "query must be a SELECT, got INSERT"),
        ("EXPLAIN SELECT 1", "query must be a SELECT, got EXPLAIN"),
        (
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            "query: data-modifying statements are not allowed",
        ),
        (
            "WITH x AS (INSERT INTO t VALUES (1) RETURNING 1) SELECT 1",
            "query: data-modifying statements are not allowed",
        ),
        (
            "WITH x AS (UPDATE t SET a = 1 RETURNING 1) SELECT 1",
            "query: data-modifying statements are not allowed",
        ),
        ("SELECT * INTO new_table FROM t", "query: SELECT INTO is not allowed"),
        ("SELECT 1; SELECT 2", "query must be a single statement, found 2"),
        ("SELECT 1; DROP TABLE t", "query must be a single statement, found 2"),
        ("VALUES (1)", "query must be a SELECT, got VALUES"),
        ("SELECT 1 FROM t FOR UPDATE", "query: row locks (FOR UPDATE/SHARE) are not allowed"),
        ("", "query is empty"),
        ("  \n ", "query is empty"),
    ],
)
def test_query_rejects(query: str, message: str) -> None:
    with pytest.raises(UnsafeSqlError) as info:
        parse_query(query)
    assert str(info.value) == message


def test_query_syntax_error() -> None:
    with pytest.raises(UnsafeSqlError, match="query is not valid SQL"):
        parse_query("SELECT (")


def test_query_records_functions_for_the_volatility_check() -> None:
    assert parse_query("SELECT nextval('s'), lower(x) FROM t").functions == (
        (None, "nextval"),
        (None, "lower"),
    )
