"""Each mode on real PostgreSQL (18 and 15): exact counts, scope on both sides, watermarks."""

from __future__ import annotations

import pytest

from stagecopy_dagster.errors import SpecError
from stagecopy_dagster.spec import Mode
from stagecopy_dagster_tests.copyhelpers import (
    assert_same_rows,
    checksum,
    run_and_check,
    run_copy,
    staging_leftovers,
    xmins,
)
from stagecopy_dagster_tests.pg import PgPair

N = 3_000
ORDERS = "sales.orders"

CREATE_ORDERS = (
    "CREATE SCHEMA sales",
    "CREATE TABLE sales.orders (id int PRIMARY KEY, region text NOT NULL, "
    "amount numeric(12,2), note text, updated_at timestamptz NOT NULL)",
)


def fill_orders(pg: PgPair, first: int, last: int) -> None:
    """Rows first..last: every third one in region US, the rest KR; updated_at = 2024 + id s."""
    pg.source(
        "INSERT INTO sales.orders SELECT g, CASE WHEN g % 3 = 0 THEN 'US' ELSE 'KR' END, "
        "g * 1.25, 'note ' || g, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second' "
        f"FROM generate_series({first}, {last}) g"
    )


@pytest.fixture
def orders(pg: PgPair) -> PgPair:
    pg.source(*CREATE_ORDERS)
    fill_orders(pg, 1, N)
    return pg


def ids(pg: PgPair, side: str, query: str) -> set[int]:
    rows = pg.source_rows(query) if side == "source" else pg.target_rows(query)
    return {r[0] for r in rows}


# --- merge ------------------------------------------------------------------------------------


@pytest.mark.parametrize("diff", [True, False], ids=["diff", "stream-all"])
def test_merge_inserts_updates_and_leaves_unchanged_rows_alone(orders: PgPair, diff: bool) -> None:
    pg = orders
    entry = {"source": ORDERS, "diff": diff}

    first = run_copy(pg, entry)
    assert (first.path, first.created_table) == ("direct", True)
    assert (first.rows_copied, first.inserted, first.updated, first.deleted) == (N, N, 0, 0)
    assert first.target_rows == N
    assert first.key == ("id",)
    assert first.mode is Mode.MERGE
    assert_same_rows(pg, ORDERS)
    before = xmins(pg, ORDERS)

    # 1% of the rows change, 50 are new, 20 leave the source (merge keeps them in the target).
    pg.source(
        "UPDATE sales.orders SET amount = amount + 1 WHERE id % 100 = 7",
        "DELETE FROM sales.orders WHERE id BETWEEN 551 AND 570",
    )
    fill_orders(pg, N + 1, N + 50)
    second = run_copy(pg, entry)
    assert (second.path, second.created_table) == ("diff" if diff else "staged", False)
    # The diff compares every key in scope and copies only the new and changed rows.
    assert (second.rows_compared, second.rows_copied) == (
        (N - 20 + 50, N // 100 + 50) if diff else (0, N - 20 + 50)
    )
    assert (second.inserted, second.updated, second.deleted) == (50, N // 100, 0)
    assert second.target_rows == N + 50
    assert_same_rows(pg, ORDERS, where="id NOT BETWEEN 551 AND 570")
    assert len(pg.target_rows("SELECT 1 FROM sales.orders WHERE id BETWEEN 551 AND 570")) == 20

    after = xmins(pg, ORDERS)
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {k for k in before if k % 100 == 7}

    # Nothing changed at the source: nothing is rewritten.
    third = run_copy(pg, entry)
    assert (third.inserted, third.updated, third.deleted) == (0, 0, 0)
    assert third.rows_copied == (0 if diff else N + 30)
    assert xmins(pg, ORDERS) == after
    assert staging_leftovers(pg) == []


def test_merge_result_passes_the_integrity_comparison(orders: PgPair) -> None:
    pg = orders
    run_copy(pg, {"source": ORDERS})
    pg.source("UPDATE sales.orders SET note = note || '!' WHERE id <= 10")
    result, report = run_and_check(pg, {"source": ORDERS})
    assert result.updated == 10
    assert report.passed
    assert (report.missing_rows, report.extra_rows, report.changed_rows) == (0, 0, 0)
    assert report.source_rows == report.target_rows == N


def test_merge_with_scope_reads_only_the_scope(orders: PgPair) -> None:
    pg = orders
    entry = {"source": ORDERS, "where": "region = 'KR'"}
    result = run_copy(pg, entry)
    kr = N - N // 3
    assert (result.rows_copied, result.inserted) == (kr, kr)
    assert ids(pg, "target", "SELECT id FROM sales.orders") == ids(
        pg, "source", "SELECT id FROM sales.orders WHERE region = 'KR'"
    )
    # A row that leaves the scope at the source stays in the target under merge.
    pg.source("UPDATE sales.orders SET region = 'US', amount = 0 WHERE id = 1")
    again = run_copy(pg, entry)
    assert (again.inserted, again.updated, again.deleted) == (0, 0, 0)
    assert pg.target_rows("SELECT region, amount::text FROM sales.orders WHERE id = 1") == [
        ("KR", "1.25")
    ]


# --- sync -------------------------------------------------------------------------------------


@pytest.mark.parametrize("diff", [True, False], ids=["diff", "stream-all"])
def test_sync_deletes_missing_keys(orders: PgPair, diff: bool) -> None:
    pg = orders
    entry = {"source": ORDERS, "mode": "sync", "diff": diff}
    run_copy(pg, entry)
    pg.source(
        "DELETE FROM sales.orders WHERE id % 1000 = 1",
        "UPDATE sales.orders SET note = 'changed' WHERE id % 1000 = 2",
    )
    result = run_copy(pg, entry)
    assert result.path == ("diff" if diff else "staged")
    assert result.rows_copied == (N // 1000 if diff else N - N // 1000)
    assert (result.inserted, result.updated, result.deleted) == (0, N // 1000, N // 1000)
    assert result.target_rows == N - N // 1000
    assert_same_rows(pg, ORDERS)


@pytest.mark.parametrize("diff", [True, False], ids=["diff", "stream-all"])
def test_sync_deletes_only_inside_the_scope(orders: PgPair, diff: bool) -> None:
    pg = orders
    entry = {"source": ORDERS, "mode": "sync", "where": "region = 'KR'", "diff": diff}
    first = run_copy(pg, entry)
    kr = N - N // 3
    assert first.inserted == kr
    # Rows outside the scope reach the target some other way (another spec, a person).
    pg.target(
        "INSERT INTO sales.orders VALUES "
        "(3, 'US', 1, 'outside', now()), (6, 'US', 2, 'outside', now()), "
        "(-1, 'JP', 3, 'not at the source at all', now())"
    )
    outside_before = xmins(pg, ORDERS)
    # At the source: KR rows 1, 2 and US row 3 disappear; KR row 4 changes.
    pg.source(
        "DELETE FROM sales.orders WHERE id IN (1, 2, 3)",
        "UPDATE sales.orders SET note = 'changed' WHERE id = 4",
    )
    result = run_copy(pg, entry)
    assert (result.inserted, result.updated, result.deleted) == (0, 1, 2)
    assert_same_rows(pg, ORDERS, where="region = 'KR'")
    outside = pg.target_rows("SELECT id, note FROM sales.orders WHERE region <> 'KR' ORDER BY id")
    assert outside == [(-1, "not at the source at all"), (3, "outside"), (6, "outside")]
    after = xmins(pg, ORDERS)
    assert all(after[k] == outside_before[k] for k in (-1, 3, 6))


def test_sync_scope_with_a_correlated_sub_select(pg: PgPair) -> None:
    for side in (pg.source, pg.target):
        side(
            "CREATE TABLE regions (code text PRIMARY KEY, active bool NOT NULL)",
            "INSERT INTO regions VALUES ('KR', true), ('US', false)",
        )
    pg.source(
        "CREATE TABLE t (id int PRIMARY KEY, region text)",
        "INSERT INTO t SELECT g, CASE WHEN g % 2 = 0 THEN 'KR' ELSE 'US' END "
        "FROM generate_series(1, 100) g",
    )
    entry = {
        "source": "public.t",
        "mode": "sync",
        "where": "EXISTS (SELECT 1 FROM regions r WHERE r.code = region AND r.active)",
    }
    assert run_copy(pg, entry).inserted == 50
    pg.source("DELETE FROM t WHERE id IN (2, 3)")  # 2 is in scope, 3 is not
    result = run_copy(pg, entry)
    assert (result.inserted, result.updated, result.deleted) == (0, 0, 1)
    assert ids(pg, "target", "SELECT id FROM t") == set(range(4, 101, 2))


def test_sync_with_incremental_field_still_propagates_deletes(orders: PgPair) -> None:
    pg = orders
    entry = {"source": ORDERS, "mode": "sync", "incremental_field": "updated_at"}
    run_copy(pg, entry)
    pg.source(
        "DELETE FROM sales.orders WHERE id IN (10, 20, 30)",
        "UPDATE sales.orders SET note = 'new', updated_at = '2030-01-01' WHERE id IN (40, 50)",
    )
    fill_orders(pg, N + 1, N + 5)
    pg.source(f"UPDATE sales.orders SET updated_at = '2030-01-02' WHERE id > {N}")
    result = run_copy(pg, entry)
    assert result.watermark is not None and result.watermark.startswith("2024-01-01")
    # Only rows at or after the watermark are read; deletes come from the full key list.
    assert result.rows_copied == 2 + 5 + 1  # + the row that holds the watermark itself
    assert (result.inserted, result.updated, result.deleted) == (5, 2, 3)
    assert_same_rows(pg, ORDERS)
    assert staging_leftovers(pg) == []


def test_sync_with_incremental_field_and_scope(orders: PgPair) -> None:
    pg = orders
    entry = {
        "source": ORDERS,
        "mode": "sync",
        "incremental_field": "updated_at",
        "where": "region = 'KR'",
    }
    run_copy(pg, entry)
    pg.target("INSERT INTO sales.orders VALUES (-5, 'US', 0, 'outside', '2099-01-01')")
    pg.source("DELETE FROM sales.orders WHERE id IN (1, 3)")  # 1 is KR, 3 is US
    result = run_copy(pg, entry)
    assert result.deleted == 1
    assert_same_rows(pg, ORDERS, where="region = 'KR'")
    assert ids(pg, "target", "SELECT id FROM sales.orders WHERE region = 'US'") == {-5}


def test_sync_with_an_empty_source_scope_empties_the_target_scope(orders: PgPair) -> None:
    pg = orders
    entry = {"source": ORDERS, "mode": "sync", "where": "region = 'US'"}
    run_copy(pg, entry)
    pg.source("DELETE FROM sales.orders WHERE region = 'US'")
    pg.target("INSERT INTO sales.orders VALUES (1, 'KR', 0, 'outside', now())")
    result = run_copy(pg, entry)
    assert (result.rows_copied, result.inserted, result.deleted) == (0, 0, N // 3)
    assert pg.target_rows("SELECT id, region FROM sales.orders") == [(1, "KR")]


# --- replace ----------------------------------------------------------------------------------


def test_replace_without_scope_replaces_everything(orders: PgPair) -> None:
    pg = orders
    entry = {"source": ORDERS, "mode": "replace"}
    first = run_copy(pg, entry)
    assert (first.path, first.inserted, first.deleted) == ("direct", N, 0)
    pg.target("INSERT INTO sales.orders VALUES (-1, 'XX', 0, 'extra', now())")
    pg.source("DELETE FROM sales.orders WHERE id > 100", "UPDATE sales.orders SET note = 'r'")
    second = run_copy(pg, entry)
    assert second.path == "direct"
    assert (second.rows_copied, second.inserted, second.updated, second.deleted) == (
        100,
        100,
        0,
        N + 1,
    )
    assert second.target_rows == 100
    assert_same_rows(pg, ORDERS)


def test_replace_with_scope_leaves_rows_outside_alone(orders: PgPair) -> None:
    pg = orders
    entry = {"source": ORDERS, "mode": "replace", "where": "region = 'US'"}
    first = run_copy(pg, entry)
    assert first.inserted == N // 3
    pg.target("INSERT INTO sales.orders VALUES (1, 'KR', 0, 'outside', now())")
    kept = xmins(pg, ORDERS)[1]
    pg.source("DELETE FROM sales.orders WHERE id = 3", "UPDATE sales.orders SET note = 'r'")
    second = run_copy(pg, entry)
    assert (second.inserted, second.deleted) == (N // 3 - 1, N // 3)
    assert_same_rows(pg, ORDERS, where="region = 'US'")
    assert pg.target_rows("SELECT note FROM sales.orders WHERE region <> 'US'") == [("outside",)]
    assert xmins(pg, ORDERS)[1] == kept


# --- append -----------------------------------------------------------------------------------


def test_append_with_incremental_field_copies_only_new_rows(pg: PgPair) -> None:
    pg.source(
        "CREATE TABLE events (id bigint, payload text, at timestamptz NOT NULL)",
        "INSERT INTO events SELECT g, 'e' || g, timestamptz '2024-01-01' + g * interval '1 s' "
        "FROM generate_series(1, 2000) g",
    )
    entry = {"source": "public.events", "mode": "append", "incremental_field": "at"}
    first = run_copy(pg, entry)
    assert (first.path, first.rows_copied, first.inserted) == ("direct", 2000, 2000)
    assert first.watermark is None

    pg.source(
        "INSERT INTO events SELECT g, 'e' || g, timestamptz '2024-01-01' + g * interval '1 s' "
        "FROM generate_series(2001, 2300) g"
    )
    second = run_copy(pg, entry)
    assert second.watermark is not None
    assert (second.path, second.rows_copied, second.inserted, second.deleted) == (
        "direct",
        300,
        300,
        0,
    )
    assert second.target_rows == 2300
    assert_same_rows(pg, "public.events")

    third = run_copy(pg, entry)
    assert (third.rows_copied, third.target_rows) == (0, 2300)


def test_append_without_incremental_field_appends_every_run(pg: PgPair) -> None:
    pg.source("CREATE TABLE log (msg text)", "INSERT INTO log VALUES ('a'), ('b')")
    entry = {"source": "public.log", "mode": "append"}
    run_copy(pg, entry)
    result = run_copy(pg, entry)
    assert (result.inserted, result.target_rows) == (2, 4)


def test_append_with_lookback_never_duplicates_rows(pg: PgPair) -> None:
    """`lookback` re-reads rows already appended; append has no key to match them.

    Either the spec refuses the combination, or the copy must not insert those rows again.
    """
    pg.source(
        "CREATE TABLE events (id int, at timestamptz NOT NULL)",
        "INSERT INTO events SELECT g, timestamptz '2024-01-01' + g * interval '1 minute' "
        "FROM generate_series(1, 100) g",
    )
    entry = {
        "source": "public.events",
        "mode": "append",
        "incremental_field": "at",
        "lookback": "10 minutes",
    }
    try:
        run_copy(pg, entry)
    except SpecError:
        return  # refused up front: fine
    pg.source("INSERT INTO events VALUES (101, timestamptz '2024-01-01' + interval '101 minutes')")
    run_copy(pg, entry)
    assert pg.target_rows("SELECT count(*), count(DISTINCT id) FROM events") == [(101, 101)]


# --- watermarks and lookback ------------------------------------------------------------------


def test_incremental_merge_copies_rows_from_the_watermark(orders: PgPair) -> None:
    pg = orders
    entry = {"source": ORDERS, "incremental_field": "updated_at"}
    run_copy(pg, entry)
    pg.source("UPDATE sales.orders SET note = 'late', updated_at = '2030-01-01' WHERE id IN (5, 6)")
    result = run_copy(pg, entry)
    assert result.watermark is not None
    assert result.rows_copied == 3  # the two updated rows and the row at the old watermark
    assert (result.inserted, result.updated) == (0, 2)
    assert_same_rows(pg, ORDERS)


def test_lookback_picks_up_a_late_row_with_an_older_timestamp(orders: PgPair) -> None:
    pg = orders
    entry = {"source": ORDERS, "incremental_field": "updated_at", "lookback": "10 minutes"}
    run_copy(pg, entry)
    # The newest target row is at 2024-01-01 + N s; the window reaches back 600 s.
    pg.source(
        f"UPDATE sales.orders SET note = 'late, in window' WHERE id = {N - 300}",
        f"UPDATE sales.orders SET note = 'late, too old' WHERE id = {N - 700}",
    )
    result = run_copy(pg, entry)
    assert result.rows_copied == 601  # every row in [watermark - 10 min, watermark]
    assert (result.inserted, result.updated) == (0, 1)
    notes = dict(
        pg.target_rows("SELECT id, note FROM sales.orders WHERE id IN (%s, %s)", (N - 300, N - 700))
    )
    assert notes == {N - 300: "late, in window", N - 700: f"note {N - 700}"}


def test_watermark_is_taken_inside_the_scope(orders: PgPair) -> None:
    pg = orders
    entry = {"source": ORDERS, "incremental_field": "updated_at", "where": "region = 'KR'"}
    run_copy(pg, entry)
    # An out-of-scope row with a far-future time must not move the scope's watermark.
    pg.target("INSERT INTO sales.orders VALUES (-1, 'US', 0, 'other spec', '2099-01-01')")
    fill_orders(pg, N + 1, N + 9)
    result = run_copy(pg, entry)
    assert result.watermark is not None and result.watermark.startswith("2024-01-01")
    assert result.inserted == 6  # the KR rows among the 9 new ones
    assert_same_rows(pg, ORDERS, where="region = 'KR'")


# --- query sources ----------------------------------------------------------------------------


def test_query_source_with_explicit_key(pg: PgPair) -> None:
    pg.source(
        "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL)",
        "CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers, "
        "total numeric(10,2))",
        "INSERT INTO customers SELECT g, '고객 ' || g FROM generate_series(1, 100) g",
        "INSERT INTO orders SELECT g, 1 + g % 100, g / 10.0 FROM generate_series(1, 2000) g",
    )
    entry = {
        "query": "SELECT o.id AS order_id, c.name AS customer, o.total "
        "FROM orders o JOIN customers c ON c.id = o.customer_id -- 주문",
        "target": "mart.order_report",
        "primary_key": "order_id",
        "where": "total > 10",
    }
    first = run_copy(pg, entry)
    assert first.source == "query"
    assert first.key == ("order_id",)
    assert first.inserted == 1900  # totals 10.1 .. 200.0
    pg.source(
        "UPDATE customers SET name = 'renamed' WHERE id = 7",
        "INSERT INTO orders VALUES (2001, 1, 99.99)",
    )
    second = run_copy(pg, entry)
    assert (second.inserted, second.updated, second.deleted) == (1, 20 - 1, 0)
    report_rows = checksum(pg, "target", "mart.order_report")
    expected = checksum(
        pg,
        "source",
        "(SELECT o.id AS order_id, c.name AS customer, o.total FROM orders o "
        "JOIN customers c ON c.id = o.customer_id WHERE o.total > 10) AS q",
    )
    assert report_rows == expected


def test_query_source_in_sync_mode_with_incremental_field(pg: PgPair) -> None:
    pg.source(
        "CREATE TABLE items (id int PRIMARY KEY, v text, changed int NOT NULL)",
        "INSERT INTO items SELECT g, 'v', g FROM generate_series(1, 1000) g",
    )
    entry = {
        "query": "SELECT id, v, changed FROM items",
        "target": "public.items_copy",
        "primary_key": "id",
        "mode": "sync",
        "incremental_field": "changed",
    }
    run_copy(pg, entry)
    pg.source(
        "DELETE FROM items WHERE id <= 10",
        "UPDATE items SET v = 'w', changed = 5000 WHERE id = 500",
    )
    result, report = run_and_check(pg, entry)
    assert (result.inserted, result.updated, result.deleted) == (0, 1, 10)
    assert report.passed
    assert_same_rows(pg, "public.items", target_relation="public.items_copy")
