"""The demo data and spec: every table copies and checks clean, before and after a touch."""

from __future__ import annotations

from stagecopy_dagster import runner
from stagecopy_dagster.connection import Endpoint
from stagecopy_dagster.copier import CopyResult
from stagecopy_dagster.integrity import IntegrityReport
from stagecopy_dagster.local.demo import DEMO_SPEC, seed_source, seed_target, touch_source
from stagecopy_dagster.local.demo.seed import MASTER, ORDER_ITEMS, PRICES
from stagecopy_dagster.spec import Mode, TableSpec, load_spec
from stagecopy_dagster_tests.pg import PgPair

PRICE_ROWS = 5_000


def _copy_and_check(pair: PgPair, table: TableSpec) -> tuple[CopyResult, IntegrityReport]:
    """One copy and its check, as the asset runs them (least-privilege roles)."""
    done = runner.replicate(table, Endpoint(pair.source_url), Endpoint(pair.target_url))
    assert done.report is not None
    return done.result, done.report


def _run_all(pair: PgPair) -> dict[str, tuple[CopyResult, IntegrityReport]]:
    spec = load_spec(DEMO_SPEC)
    runs = {}
    for table in spec.tables:
        result, report = _copy_and_check(pair, table)
        assert report.passed, report.summary
        assert report.missing_rows == report.changed_rows == 0, report.summary
        runs[table.asset_name] = (result, report)
    return runs


def test_demo_spec_loads_with_every_mode() -> None:
    spec = load_spec(DEMO_SPEC)
    modes = {t.source: t.mode for t in spec.tables}
    assert set(modes.values()) == {Mode.MERGE, Mode.SYNC, Mode.REPLACE}
    master = spec.table("infomax_master")
    assert master.source == MASTER
    assert master.where is not None and master.group_name == "market"
    assert master.schedule == "0 * * * *"
    prices = spec.table(str(PRICES))
    assert prices.partition is not None and prices.partition.column == "거래일"
    assert spec.table(str(ORDER_ITEMS)).mode is Mode.SYNC


def test_demo_copies_clean_twice(any_pg: PgPair) -> None:
    seed_source(any_pg.source_admin_url, large_rows=PRICE_ROWS)
    seed_source(any_pg.source_admin_url, large_rows=PRICE_ROWS)  # a second call does nothing
    any_pg.source()  # re-grant SELECT to the reader
    seed_target(any_pg.target_admin_url)
    seed_target(any_pg.target_admin_url)
    any_pg.target()  # hand the schema and the type to the writer

    (count,) = any_pg.source_rows("SELECT count(*) FROM raw_data.일별시세")[0]
    assert count == PRICE_ROWS
    markets = dict(
        any_pg.source_rows("SELECT 시장구분, count(*) FROM raw_data.인포맥스종목마스터 GROUP BY 1")
    )
    assert set(markets) == {"KOSPI", "KOSDAQ", "KONEX"}
    notes = [r[0] for r in any_pg.source_rows('SELECT note FROM "Sales"."Order Items"')]
    assert any("\t" in n for n in notes if n) and any("\n" in n for n in notes if n)
    assert any('"' in n for n in notes if n) and any("\\" in n for n in notes if n)

    first = _run_all(any_pg)
    master, _ = first["infomax_master"]
    assert master.target_rows == markets["KOSPI"] + markets["KOSDAQ"]
    prices, _ = first[load_spec(DEMO_SPEC).table(str(PRICES)).asset_name]
    assert prices.rows_copied == PRICE_ROWS and prices.path == "direct"
    assert all(result.created_table for result, _ in first.values())
    (enum_type,) = any_pg.target_rows(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'raw_data.공시목록'::regclass AND attname = '공시구분'"
    )[0]
    assert enum_type == 'raw_data."공시유형"'

    touch_source(any_pg.source_admin_url)
    second = _run_all(any_pg)
    spec = load_spec(DEMO_SPEC)
    prices, _ = second[spec.table(str(PRICES)).asset_name]
    # The whole table (no partition named): keys and hashes first, then the ~1% touched rows.
    assert prices.path == "diff"
    assert 0 < prices.rows_copied < PRICE_ROWS
    assert prices.updated > 0 and prices.inserted == 5
    items, items_report = second[spec.table(str(ORDER_ITEMS)).asset_name]
    assert items.deleted == 3 and items.inserted == 5
    assert items_report.extra_rows == 0
    master, _ = second["infomax_master"]
    assert master.inserted == 3  # the new KOSDAQ listings
    disclosures, _ = second[spec.table("raw_data.공시목록").asset_name]
    assert disclosures.path == "direct" and disclosures.deleted == disclosures.rows_copied - 3
