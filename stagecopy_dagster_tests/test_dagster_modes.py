"""Materialize each mode through Dagster and hold the metadata to what the target database says.

Each test builds definitions from a one-table spec, materializes twice with known source
changes in between (in scope and out of it), and compares `dagster/*` and `stagecopy/*`
metadata with `SELECT`s on the target.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest

from stagecopy_dagster import build_definitions
from stagecopy_dagster.local import available_installs
from stagecopy_dagster_tests.dghelpers import assets_of, materialize
from stagecopy_dagster_tests.pg import PgPair, PgPairFactory

pytestmark = pytest.mark.integration

SCOPE = "region = 'KR'"
VERSIONS = [install.label for install in available_installs()]


@pytest.fixture(scope="module", params=VERSIONS, ids=VERSIONS)
def pair(
    request: pytest.FixtureRequest, pg_factories: dict[str, PgPairFactory]
) -> Iterator[PgPair]:
    """One pair per PostgreSQL version for the module (creating databases is slow); each test
    uses its own table."""
    pair = pg_factories[request.param]("dagster_modes")
    try:
        yield pair
    finally:
        pair.drop()


def source_setup(table: str) -> tuple[str, ...]:
    """100 rows: even ids in scope (KR), odd ids out of scope (US)."""
    return (
        f"CREATE TABLE {table} (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2), "
        "region text, seen timestamptz)",
        f"INSERT INTO {table} SELECT g, 'item ' || g, g * 1.25, "
        "CASE WHEN g % 2 = 0 THEN 'KR' ELSE 'US' END, "
        "'2024-01-01'::timestamptz + g * interval '1 hour' FROM generate_series(1, 100) g",
    )


def source_changes(table: str) -> tuple[str, ...]:
    """In scope: 3 updates, 2 inserts, 4 deletes. Out of scope: 5 updates, 1 insert, 2 deletes."""
    return (
        f"UPDATE {table} SET price = price + 1 WHERE id IN (2, 4, 6)",
        f"INSERT INTO {table} VALUES (1002, 'new a', 1, 'KR', '2025-01-01'), "
        "(1004, 'new b', 2, 'KR', '2025-01-02'), (1001, 'new us', 3, 'US', '2025-01-03')",
        f"DELETE FROM {table} WHERE id IN (10, 12, 14, 16)",
        f"UPDATE {table} SET price = 0 WHERE id IN (1, 3, 5, 7, 9)",
        f"DELETE FROM {table} WHERE id IN (11, 13)",
    )


def build(pg: PgPair, entry: dict[str, Any]) -> dg.Definitions:
    return build_definitions(
        {"tables": [entry]}, source_url=pg.source_url, target_url=pg.target_url
    )


def only_materialization(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    events = result.get_asset_materialization_events()
    assert len(events) == 1
    materialization = events[0].materialization
    assert materialization is not None
    return {k: v.value for k, v in materialization.metadata.items()}


def only_check(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == 1
    return evaluations[0]


def target_count(pg: PgPair, relation: str, where: str = "TRUE") -> int:
    return pg.target_rows(f"SELECT count(*) FROM {relation} WHERE {where}")[0][0]


def target_columns(pg: PgPair, relation: str) -> list[tuple[str, str, bool]]:
    """(name, type, nullable) of the target table's columns, in order."""
    return [
        (name, type_, not not_null)
        for name, type_, not_null in pg.target_rows(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (relation,),
        )
    ]


def assert_common_metadata(
    pg: PgPair, meta: dict[str, Any], *, table: str, mode: str, scope: str
) -> None:
    assert meta["dagster/row_count"] == target_count(pg, table)
    assert meta["dagster/table_name"] == f"public.{table}"
    assert meta["stagecopy/mode"] == mode
    assert meta["stagecopy/scope"] == scope
    schema: dg.TableSchema = meta["dagster/column_schema"]
    columns = [(c.name, c.type, c.constraints.nullable) for c in schema.columns]
    assert columns == target_columns(pg, table)
    assert ("name", "text", False) in columns
    assert meta["stagecopy/bytes"] > 0
    assert meta["stagecopy/seconds"] > 0


# (mode, extra spec keys, first run, second run): each run is
# (rows_copied, inserted, updated, deleted, target rows). The second merge and sync compare all
# 48 keys in scope (stagecopy/rows_compared) and copy only the 2 new and 3 changed rows.
CASES = {
    "merge": ({}, (50, 50, 0, 0, 50), (5, 2, 3, 0, 52)),
    "sync": ({}, (50, 50, 0, 0, 50), (5, 2, 3, 4, 48)),
    "replace": ({}, (50, 50, 0, 0, 50), (48, 48, 0, 50, 48)),
    # Append with a watermark: only rows past the target's max `seen` in scope are new.
    "append": ({"incremental_field": "seen"}, (50, 50, 0, 0, 50), (2, 2, 0, 0, 52)),
}


@pytest.mark.parametrize("mode", list(CASES))
def test_each_mode_reports_exact_counts(pair: PgPair, mode: str) -> None:
    pg, table = pair, f"items_{mode}"
    extra, first, second = CASES[mode]
    pg.source(*source_setup(table))
    defs = build(pg, {"source": f"public.{table}", "mode": mode, "where": SCOPE, **extra})

    for run, expected in enumerate((first, second)):
        if run:
            pg.source(*source_changes(table))
        result = materialize(defs)
        assert result.success
        meta = only_materialization(result)
        counts = tuple(
            meta[k]
            for k in (
                "stagecopy/rows_copied",
                "stagecopy/inserted",
                "stagecopy/updated",
                "stagecopy/deleted",
            )
        )
        assert (*counts, meta["dagster/row_count"]) == expected
        compared = 48 if run and mode in ("merge", "sync") else 0
        assert meta["stagecopy/rows_compared"] == compared
        assert_common_metadata(pg, meta, table=table, mode=mode, scope=SCOPE)
        check = only_check(result)
        assert check.passed, check.description
        assert check.metadata["same_snapshot_as_copy"].value is True
        # An incremental run's check covers the window it copied; every other, the scope.
        windowed = run and "incremental_field" in extra
        assert check.metadata["check_scope"].value == ("window" if windowed else "full")

    # Nothing outside the scope reached the target.
    assert target_count(pg, table, where="region <> 'KR'") == 0


@pytest.mark.parametrize("pair", VERSIONS[:1], indirect=True)
def test_unscoped_merge_reports_all_rows_scope_and_the_standard_keys(pair: PgPair) -> None:
    pair.source(*source_setup("items"))
    defs = build(pair, {"source": "public.items"})
    result = materialize(defs)
    meta = only_materialization(result)
    assert meta["stagecopy/scope"] == "all rows"
    assert meta["stagecopy/mode"] == "merge"
    assert meta["dagster/row_count"] == target_count(pair, "items") == 100
    assert meta["stagecopy/rows_per_second"] > 0
    assert_common_metadata(pair, meta, table="items", mode="merge", scope="all rows")
    # The asset key is the spec's asset name, and the asset spec carries the table name.
    (spec,) = [s for s in defs.resolve_all_asset_specs() if s.key == dg.AssetKey("items")]
    assert spec.deps[0].asset_key == dg.AssetKey(["source", "items"])  # lineage from the source
    assert spec.metadata["dagster/table_name"] == "public.items"

    # A second run with no source change rewrites nothing.
    meta = only_materialization(materialize(defs))
    assert (meta["stagecopy/inserted"], meta["stagecopy/updated"]) == (0, 0)
    assert meta["dagster/row_count"] == 100


@pytest.mark.parametrize("pair", VERSIONS[:1], indirect=True)
def test_one_table_can_be_copied_alone_with_or_without_its_check(pair: PgPair) -> None:
    pair.source(*source_setup("alone_a"), *source_setup("alone_b"))
    defs = build_definitions(
        {"tables": [{"source": "public.alone_a"}, {"source": "public.alone_b"}]},
        source_url=pair.source_url,
        target_url=pair.target_url,
    )
    result = materialize(defs, selection=dg.AssetSelection.assets("alone_a"))
    assert [e.asset_key for e in result.get_asset_materialization_events()] == [
        dg.AssetKey("alone_a")
    ]
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.asset_key == dg.AssetKey("alone_a")
    assert pair.target_rows("SELECT to_regclass('public.alone_b')") == [(None,)]

    # Without its check: copied, not verified.
    result = materialize(defs, selection=dg.AssetSelection.assets("alone_b").without_checks())
    assert [e.asset_key for e in result.get_asset_materialization_events()] == [
        dg.AssetKey("alone_b")
    ]
    assert result.get_asset_check_evaluations() == []
    assert target_count(pair, "alone_b") == 100


@pytest.mark.parametrize("pair", VERSIONS[:1], indirect=True)
def test_a_broken_table_fails_alone_and_the_others_are_copied(pair: PgPair) -> None:
    pair.source(*source_setup("healthy"))
    defs = build_definitions(
        {"tables": [{"source": "public.healthy"}, {"source": "public.vanished"}]},
        source_url=pair.source_url,
        target_url=pair.target_url,
    )
    result = dg.materialize(assets_of(defs), resources=defs.resources, raise_on_error=False)
    assert not result.success
    assert [e.asset_key for e in result.get_asset_materialization_events()] == [
        dg.AssetKey("healthy")
    ]
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "stagecopy_vanished"
    message = str(failure.step_failure_data.error)
    assert "public.vanished" in message
    assert "does not exist" in message
    assert target_count(pair, "healthy") == 100
