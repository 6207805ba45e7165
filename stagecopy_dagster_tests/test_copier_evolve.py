"""`on_schema_change`: the target follows the source's columns (evolve), refuses (fail) or copies
what both sides hold (ignore); every refusal comes before any write."""

from __future__ import annotations

from typing import Any

import pytest

from stagecopy_dagster.assets import SCHEMA_CHANGES, materialize_metadata
from stagecopy_dagster.errors import CopyError, SchemaMismatchError
from stagecopy_dagster_tests.copyhelpers import (
    assert_same_rows,
    checksum,
    column_types,
    run_and_check,
    run_copy,
    staging_leftovers,
    table_spec,
)
from stagecopy_dagster_tests.pg import PgPair

NARROW = (
    "CREATE TABLE t (id int PRIMARY KEY, name varchar(10), amount numeric(10,2), n smallint, "
    "at timestamp(3), old text, note text)",
    "INSERT INTO t SELECT g, 'n' || g, g / 4.0, g, '2024-01-01'::timestamp + g * interval '1s', "
    "'old ' || g, 'x' FROM generate_series(1, 100) g",
)


def changes(result: Any) -> list[dict[str, Any]]:
    return [c.as_dict() for c in result.schema_changes]


def test_evolve_widens_adds_and_keeps_gone_columns(pg: PgPair) -> None:
    pg.source(*NARROW)
    entry = {"source": "public.t"}
    run_copy(pg, entry)
    pg.source(
        "ALTER TABLE t ALTER COLUMN id TYPE bigint, ALTER COLUMN name TYPE varchar(40), "
        "ALTER COLUMN amount TYPE numeric(14,4), ALTER COLUMN n TYPE int, "
        "ALTER COLUMN at TYPE timestamp(6), ALTER COLUMN note TYPE text",
        "ALTER TABLE t DROP COLUMN old, ADD COLUMN score real",
        # Values only the wider types hold, a changed row and a new one.
        "UPDATE t SET name = repeat('긴', 40), amount = 1234567890.1234, n = 100000, "
        "at = '2024-06-01 00:00:00.123456', score = 1.5 WHERE id = 1",
        "INSERT INTO t VALUES (5000000000, 'new', 1, 1, now(), 'x', 2)",
    )
    result, report = run_and_check(pg, entry)
    assert report.passed, report.summary
    assert changes(result) == [
        {"column": "id", "change": "widened", "from": "integer", "to": "bigint"},
        {
            "column": "name",
            "change": "widened",
            "from": "character varying(10)",
            "to": "character varying(40)",
        },
        {"column": "amount", "change": "widened", "from": "numeric(10,2)", "to": "numeric(14,4)"},
        {"column": "n", "change": "widened", "from": "smallint", "to": "integer"},
        {
            "column": "at",
            "change": "widened",
            "from": "timestamp(3) without time zone",
            "to": "timestamp(6) without time zone",
        },
        {"column": "score", "change": "added", "type": "real"},
        {"column": "old", "change": "gone_from_source", "from": "text"},
    ]
    assert result.added_columns == ("score",)
    # Both sides rewrote `amount` to scale 4 in their ALTER: only row 1 changed.
    assert (result.inserted, result.updated) == (1, 1)
    # The target has the source's types, and still the gone column where it was.
    source_types = column_types(pg, "source", "t")
    assert column_types(pg, "target", "t") == [
        *source_types[:5],
        ("old", "text", False),
        *source_types[5:],
    ]
    # The gone column is NULL in the new and the changed row, kept in the others.
    assert pg.target_rows("SELECT id FROM t WHERE old IS NULL ORDER BY id") == [(1,), (5000000000,)]
    assert_same_rows(pg, "t", columns="id, name, amount, n, at, note, score")
    metadata = materialize_metadata(table_spec(entry), result)
    assert metadata[SCHEMA_CHANGES].data == changes(result)


@pytest.mark.parametrize("diff", [True, False], ids=["diff", "staged"])
def test_a_gone_column_stays_and_is_null_only_in_new_and_changed_rows(
    pg: PgPair, diff: bool
) -> None:
    pg.source(*NARROW)
    entry = {"source": "public.t", "mode": "sync", "diff": diff}
    run_copy(pg, entry)
    pg.source(
        "ALTER TABLE t DROP COLUMN old",
        "UPDATE t SET note = 'changed' WHERE id IN (1, 2)",
        "DELETE FROM t WHERE id = 3",
        "INSERT INTO t (id, name, note) VALUES (101, 'new', 'y')",
    )
    result, report = run_and_check(pg, entry)
    assert report.passed, report.summary
    assert (result.path, result.inserted, result.updated, result.deleted) == (
        "diff" if diff else "staged",
        1,
        2,
        1,
    )
    assert changes(result) == [{"column": "old", "change": "gone_from_source", "from": "text"}]
    assert pg.target_rows("SELECT id, old FROM t WHERE id IN (1, 2, 4, 101) ORDER BY id") == [
        (1, None),
        (2, None),
        (4, "old 4"),  # unchanged rows keep their value: user data is never dropped
        (101, None),
    ]
    assert pg.target_rows("SELECT count(old) FROM t") == [(97,)]  # 100 - deleted - changed


def test_evolve_refuses_timestamp_to_timestamptz_before_any_write(pg: PgPair) -> None:
    pg.source(*NARROW)
    run_copy(pg, {"source": "public.t"})
    pg.source(
        "ALTER TABLE t ADD COLUMN extra int",
        "ALTER TABLE t ALTER COLUMN name TYPE text",  # a widening, refused with the rest
        "ALTER TABLE t ALTER COLUMN at TYPE timestamptz",
        "UPDATE t SET note = 'changed'",
    )
    before = checksum(pg, "target", "t")
    columns_before = column_types(pg, "target", "t")
    with pytest.raises(SchemaMismatchError) as caught:
        run_copy(pg, {"source": "public.t"})
    message = str(caught.value)
    assert message.startswith("public.t: column types differ between source and target")
    assert (
        "at is timestamp with time zone at the source, timestamp(3) without time zone here"
        in message
    )
    assert "USING at AT TIME ZONE '<that zone>'" in message
    assert checksum(pg, "target", "t") == before
    assert column_types(pg, "target", "t") == columns_before  # nothing added, nothing widened
    assert staging_leftovers(pg) == []
    # Converted by hand as the message says, the next run goes through.
    pg.target("ALTER TABLE t ALTER COLUMN at TYPE timestamptz USING at AT TIME ZONE 'UTC'")
    result, report = run_and_check(pg, {"source": "public.t"})
    assert report.passed, report.summary
    assert [c["column"] for c in changes(result)] == ["name", "extra"]


def test_fail_refuses_any_difference_before_any_write(pg: PgPair) -> None:
    pg.source(*NARROW)
    entry = {"source": "public.t", "on_schema_change": "fail"}
    run_copy(pg, entry)
    before = checksum(pg, "target", "t")
    columns_before = column_types(pg, "target", "t")
    for change, says in [
        ("ALTER TABLE t ADD COLUMN extra int", "column extra (integer) is new at the source"),
        ("ALTER TABLE t DROP COLUMN old", "column old is gone from the source"),
        (
            "ALTER TABLE t ALTER COLUMN name TYPE text",
            "name is text at the source, character varying(10) here",
        ),
    ]:
        pg.source(change, "UPDATE t SET note = 'changed'")
        with pytest.raises(SchemaMismatchError) as caught:
            run_copy(pg, entry)
        assert "(on_schema_change: fail)" in str(caught.value)
        assert says in str(caught.value)
        assert checksum(pg, "target", "t") == before
        assert column_types(pg, "target", "t") == columns_before
    assert staging_leftovers(pg) == []


def test_ignore_copies_the_common_columns_and_changes_nothing(pg: PgPair) -> None:
    pg.source(*NARROW)
    entry = {"source": "public.t", "on_schema_change": "ignore"}
    run_copy(pg, entry)
    columns_before = column_types(pg, "target", "t")
    pg.source(
        "ALTER TABLE t ADD COLUMN extra int",
        "ALTER TABLE t DROP COLUMN old",
        "UPDATE t SET note = 'changed', extra = 1 WHERE id <= 10",
    )
    result, report = run_and_check(pg, entry)
    assert report.passed, report.summary
    assert (result.inserted, result.updated) == (0, 10)
    assert changes(result) == [
        {"column": "extra", "change": "not_added", "type": "integer"},
        {"column": "old", "change": "not_copied", "from": "text"},
    ]
    assert column_types(pg, "target", "t") == columns_before
    assert pg.target_rows("SELECT count(old) FROM t") == [(100,)]  # left as it was
    assert_same_rows(pg, "t", columns="id, name, amount, n, at, note")


def test_a_widening_blocked_by_a_target_view_fails_and_changes_nothing(any_pg: PgPair) -> None:
    any_pg.source(*NARROW)
    run_copy(any_pg, {"source": "public.t"})
    any_pg.target("CREATE VIEW names AS SELECT id, name FROM t")
    any_pg.source("ALTER TABLE t ALTER COLUMN name TYPE text, ADD COLUMN extra int")
    before = checksum(any_pg, "target", "t")
    columns_before = column_types(any_pg, "target", "t")
    with pytest.raises(CopyError) as caught:
        run_copy(any_pg, {"source": "public.t"})
    assert str(caught.value).startswith(
        "public.t: prepare failed: cannot alter type of a column used by a view or rule"
    )
    assert checksum(any_pg, "target", "t") == before
    assert column_types(any_pg, "target", "t") == columns_before  # `extra` rolled back too
