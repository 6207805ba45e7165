"""Column selection and masking: computed in the source's SELECT, so plaintext never leaves it.

`hash` must equal Python's `hmac` (HMAC-SHA256 of the value's text, keyed by the UTF-8 bytes of
`$STAGECOPY_MASK_KEY`) on every server; the key must appear in no statement, log or metadata.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

import psycopg
import pytest
from psycopg import sql

from stagecopy_dagster import runner
from stagecopy_dagster.assets import materialize_metadata
from stagecopy_dagster.connection import Endpoint
from stagecopy_dagster.errors import SchemaMismatchError, SpecError
from stagecopy_dagster.masking import MASK_KEY_ENV, install_mask_key, padded_keys
from stagecopy_dagster.statements.projection import hmac_sha256
from stagecopy_dagster_tests.copyhelpers import (
    checksum,
    column_types,
    endpoints,
    run_and_check,
    run_copy,
    staging_leftovers,
    table_spec,
)
from stagecopy_dagster_tests.pg import PgPair, PgPairFactory

KEY = "마스크-key 🔑"


def expected(value: str | None, key: str = KEY) -> str | None:
    """What `mask: hash` must produce, by Python's hmac module."""
    if value is None:
        return None
    return hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()


@pytest.fixture
def mask_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(MASK_KEY_ENV, KEY)
    return KEY


# --- the HMAC itself, in SQL ---------------------------------------------------------------------


def test_padded_keys_give_pythons_hmac() -> None:
    for key in (b"", b"k", b"x" * 64, b"y" * 65, KEY.encode() * 20):
        inner, outer = padded_keys(key)
        ours = hashlib.sha256(outer + hashlib.sha256(inner + b"message").digest()).hexdigest()
        assert ours == hmac.new(key, b"message", hashlib.sha256).hexdigest()


@pytest.mark.parametrize("key", ["k", "x" * 64, "y" * 65, KEY * 20])
def test_sql_hmac_equals_pythons_on_the_server(pg: PgPair, key: str) -> None:
    values = ["", "a", "주민번호 900101-1234567", "x" * 10_000, "tab\tnew\nline", "NULL"]
    with psycopg.connect(pg.source_url) as conn:
        install_mask_key(conn, key.encode())
        for value in [*values, None]:
            row = conn.execute(
                sql.SQL("SELECT {}").format(hmac_sha256(sql.SQL("%s::text"))), (value,)
            ).fetchone()
            assert row is not None
            assert row[0] == expected(value, key), value


def test_the_key_setting_ends_with_the_transaction(any_pg: PgPair) -> None:
    with psycopg.connect(any_pg.source_url) as conn:
        install_mask_key(conn, b"k")
        conn.rollback()
        with pytest.raises(psycopg.Error):  # unset: a masked read fails instead of leaking
            conn.execute(sql.SQL("SELECT {}").format(hmac_sha256(sql.SQL("'a'::text"))))


# --- copying masked columns ----------------------------------------------------------------------

PEOPLE = (
    "CREATE TABLE people (id int PRIMARY KEY, 주민번호 varchar(14) NOT NULL, 전화번호 text, "
    "born date, n int, memo text)",
    "INSERT INTO people VALUES (1, '900101-1234567', '010-1234-5678', '1990-01-01', 42, 'a'), "
    "(2, '851231-2345678', NULL, NULL, NULL, 'b'), (3, '000229-3456789', '02-123', "
    "'2000-02-29', -7, '메모')",
)
MASKED = {"source": "public.people", "mask": {"주민번호": "hash", "전화번호": None, "born": "hash"}}


def _masked_rows(pg: PgPair) -> list[tuple[Any, ...]]:
    return pg.target_rows("SELECT id, 주민번호, 전화번호, born, n FROM people ORDER BY id")


@pytest.mark.usefixtures("mask_key")
def test_masked_columns_hold_the_hmac_or_null_and_the_check_passes(pg: PgPair) -> None:
    pg.source(*PEOPLE)
    result, report = run_and_check(pg, MASKED)
    assert report.passed, report.summary
    assert result.inserted == 3
    assert column_types(pg, "target", "people") == [
        ("id", "integer", True),
        ("주민번호", "text", True),
        ("전화번호", "text", False),
        ("born", "text", False),
        ("n", "integer", False),
        ("memo", "text", False),
    ]
    assert _masked_rows(pg) == [
        (1, expected("900101-1234567"), None, expected("1990-01-01"), 42),
        (2, expected("851231-2345678"), None, None, None),
        (3, expected("000229-3456789"), None, expected("2000-02-29"), -7),
    ]
    # Changes at the source arrive masked (the diff compares masked values with masked values).
    pg.source(
        "UPDATE people SET 주민번호 = '111111-1111111', 전화번호 = '010' WHERE id = 2",
        "UPDATE people SET 전화번호 = '011' WHERE id = 3",  # masked to NULL: nothing changed
        "INSERT INTO people VALUES (4, '222222-2222222', '019', '2001-01-01', 1, 'd')",
    )
    again, report = run_and_check(pg, MASKED)
    assert (again.path, again.inserted, again.updated) == ("diff", 1, 1)
    assert report.passed, report.summary
    assert pg.target_rows(
        "SELECT 주민번호, 전화번호 FROM people WHERE id IN (2, 4) ORDER BY id"
    ) == [
        (expected("111111-1111111"), None),
        (expected("222222-2222222"), None),
    ]
    # The staged path too; a run with nothing new changes nothing.
    unchanged, report = run_and_check(pg, {**MASKED, "diff": False})
    assert (unchanged.path, unchanged.inserted, unchanged.updated) == ("staged", 0, 0)
    assert report.passed
    # The integrity check compares masked values: a tampered hash is a changed row.
    pg.target("UPDATE people SET 주민번호 = 'tampered' WHERE id = 1")
    report = runner.verify(table_spec(MASKED), *endpoints(pg))
    assert (report.passed, report.changed_rows, report.sample_changed) == (False, 1, ("(1)",))


@pytest.mark.usefixtures("mask_key")
def test_the_key_is_in_no_statement_log_or_metadata(
    any_pg: PgPair, caplog: pytest.LogCaptureFixture
) -> None:
    any_pg.source(*PEOPLE)
    secrets = [KEY, KEY.encode().hex(), *(p.hex() for p in padded_keys(KEY.encode()))]
    caplog.set_level(logging.DEBUG)
    result = run_copy(any_pg, MASKED)
    planned = "\n".join(runner.plan_statements(table_spec(MASKED), *endpoints(any_pg)))
    assert "current_setting('stagecopy.mask_inner', true)" in planned  # the masked read was planned
    shown = [
        planned,
        caplog.text,
        repr(result),
        repr(materialize_metadata(table_spec(MASKED), result)),
    ]
    for secret in secrets:
        for text in shown:
            assert secret not in text


def test_hash_without_the_key_is_refused_before_any_write(
    any_pg: PgPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(MASK_KEY_ENV, raising=False)
    any_pg.source(*PEOPLE)
    with pytest.raises(SpecError) as caught:
        run_copy(any_pg, MASKED)
    assert str(caught.value).startswith("public.people: `mask: hash` needs the key in the ")
    assert MASK_KEY_ENV in str(caught.value)
    assert any_pg.target_rows("SELECT to_regclass('public.people')::text") == [(None,)]


@pytest.mark.usefixtures("mask_key")
def test_masking_the_sources_own_key_is_refused(any_pg: PgPair) -> None:
    any_pg.source(*PEOPLE)
    with pytest.raises(SpecError, match=r"key column 'id' cannot be masked"):
        run_copy(any_pg, {"source": "public.people", "mask": {"id": "hash"}})
    assert any_pg.target_rows("SELECT to_regclass('public.people')::text") == [(None,)]


def test_null_mask_into_a_not_null_target_column_is_refused(any_pg: PgPair) -> None:
    any_pg.source(*PEOPLE)
    run_copy(any_pg, {"source": "public.people"})
    before = checksum(any_pg, "target", "people")
    with pytest.raises(SchemaMismatchError, match="주민번호 is masked with null but NOT NULL"):
        run_copy(any_pg, {"source": "public.people", "mask": {"주민번호": None}})
    assert checksum(any_pg, "target", "people") == before


# --- column selection ----------------------------------------------------------------------------


def test_columns_and_exclude_columns_copy_only_the_chosen_columns(pg: PgPair) -> None:
    pg.source(*PEOPLE)
    only = {"source": "public.people", "target": "public.chosen", "columns": ["n", "id"]}
    result, report = run_and_check(pg, only)
    assert [c.name for c in result.columns] == ["id", "n"]
    assert report.passed
    assert pg.target_rows("SELECT * FROM chosen ORDER BY id") == [(1, 42), (2, None), (3, -7)]
    without = {"source": "public.people", "target": "public.without"}
    result, report = run_and_check(pg, {**without, "exclude_columns": ["주민번호", "전화번호"]})
    assert [c.name for c in result.columns] == ["id", "born", "n", "memo"]
    assert report.passed
    assert result.copy_format == "binary" and result.path == "direct"


def test_a_selected_column_the_source_lacks_is_named(any_pg: PgPair) -> None:
    any_pg.source(*PEOPLE)
    with pytest.raises(SpecError) as caught:
        run_copy(any_pg, {"source": "public.people", "exclude_columns": ["nope", "memo"]})
    assert "exclude_columns names 'nope', not a column of the source" in str(caught.value)
    assert any_pg.target_rows("SELECT to_regclass('public.people')::text") == [(None,)]


@pytest.mark.usefixtures("mask_key")
def test_fail_stops_a_new_source_column_before_it_leaks(pg: PgPair) -> None:
    pg.source(*PEOPLE)
    entry = {**MASKED, "exclude_columns": ["memo"], "on_schema_change": "fail"}
    run_copy(pg, entry)
    pg.source(
        "ALTER TABLE people ADD COLUMN card_no text",
        "UPDATE people SET card_no = '4111-1111-1111-1111', n = 0",
    )
    before = checksum(pg, "target", "people")
    with pytest.raises(SchemaMismatchError) as caught:
        run_copy(pg, entry)
    assert "column card_no (text) is new at the source" in str(caught.value)
    assert "(on_schema_change: fail)" in str(caught.value)
    assert checksum(pg, "target", "people") == before
    assert [c[0] for c in column_types(pg, "target", "people")] == [
        "id",
        "주민번호",
        "전화번호",
        "born",
        "n",
    ]
    assert staging_leftovers(pg) == []


@pytest.mark.usefixtures("mask_key")
def test_a_query_source_can_be_masked(any_pg: PgPair) -> None:
    any_pg.source(*PEOPLE)
    entry = {
        "query": "SELECT id, upper(memo) AS memo, 주민번호 FROM people",
        "target": "public.q",
        "primary_key": "id",
        "mask": {"주민번호": "hash"},
        "where": "memo <> 'B'",
    }
    result, report = run_and_check(any_pg, entry)
    assert report.passed and result.inserted == 2
    assert any_pg.target_rows("SELECT id, memo, 주민번호 FROM q ORDER BY id") == [
        (1, "A", expected("900101-1234567")),
        (3, "메모", expected("000229-3456789")),
    ]


# --- across versions -----------------------------------------------------------------------------


@pytest.mark.usefixtures("mask_key")
def test_masked_and_evolving_from_postgresql_15_to_18(
    pg_factories: dict[str, PgPairFactory],
) -> None:
    if not {"pg15", "pg18"} <= set(pg_factories):
        pytest.skip("needs PostgreSQL 15 and 18")
    old, new = pg_factories["pg15"]("mask_15"), pg_factories["pg18"]("mask_18")
    try:
        old.source(*PEOPLE)
        ends = Endpoint(old.source_url), Endpoint(new.target_url)
        entry = table_spec({**MASKED, "exclude_columns": ["memo"]})
        done = runner.replicate(entry, *ends)
        assert done.report is not None and done.report.passed
        assert new.target_rows("SELECT id, 주민번호 FROM people ORDER BY id") == [
            (1, expected("900101-1234567")),
            (2, expected("851231-2345678")),
            (3, expected("000229-3456789")),
        ]
        old.source(
            "ALTER TABLE people ALTER COLUMN n TYPE bigint, DROP COLUMN born",
            "UPDATE people SET n = 10000000000 WHERE id = 1",
        )
        masked_gone = {
            "source": "public.people",
            "mask": {"주민번호": "hash", "전화번호": None},
            "exclude_columns": ["memo"],
        }
        done = runner.replicate(table_spec(masked_gone), *ends)
        assert done.report is not None and done.report.passed, done.report
        assert [c.as_dict() for c in done.result.schema_changes] == [
            {"column": "n", "change": "widened", "from": "integer", "to": "bigint"},
            {"column": "born", "change": "gone_from_source", "from": "text"},
        ]
        # Row 1 changed: its gone `born` is NULL; the others keep their (masked) value.
        assert new.target_rows("SELECT id, n, born FROM people ORDER BY id") == [
            (1, 10000000000, None),
            (2, None, None),
            (3, -7, expected("2000-02-29")),
        ]
    finally:
        old.drop()
        new.drop()
