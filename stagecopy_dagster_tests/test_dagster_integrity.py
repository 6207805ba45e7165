"""The `integrity` asset check: passes after a copy, fails on drift in scope, per mode.

The check runs alone (`selection=AssetSelection.all_asset_checks()`), so it compares the current
source with the current target; the target is tampered with as superuser in between.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest

from stagecopy_dagster import build_definitions
from stagecopy_dagster_tests.dghelpers import materialize as run
from stagecopy_dagster_tests.pg import PgPair, PgPairFactory

pytestmark = pytest.mark.integration

SCOPE = "region = 'KR'"


@pytest.fixture(scope="module")
def pair(pg18: PgPairFactory) -> Iterator[PgPair]:
    """One PostgreSQL 18 pair for the module; each test uses its own table."""
    pair = pg18("dagster_integrity")
    try:
        yield pair
    finally:
        pair.drop()


def make_table(pg: PgPair, name: str) -> None:
    """100 rows: even ids in scope (KR), odd ids out of scope (US)."""
    pg.source(
        f"CREATE TABLE {name} (id int PRIMARY KEY, v text, region text)",
        f"INSERT INTO {name} SELECT g, 'v' || g, CASE WHEN g % 2 = 0 THEN 'KR' ELSE 'US' END "
        "FROM generate_series(1, 100) g",
    )


def build(pg: PgPair, name: str, mode: str, **extra: Any) -> dg.Definitions:
    entry = {"source": f"public.{name}", "mode": mode, "where": SCOPE, **extra}
    return build_definitions(
        {"tables": [entry]}, source_url=pg.source_url, target_url=pg.target_url
    )


def check_alone(defs: dg.Definitions) -> tuple[dg.AssetCheckEvaluation, dict[str, Any]]:
    result = run(defs, selection=dg.AssetSelection.all_asset_checks())
    assert result.success
    assert result.get_asset_materialization_events() == []
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == "integrity"
    return evaluation, {k: v.value for k, v in evaluation.metadata.items()}


def counts(meta: dict[str, Any]) -> tuple[int, int, int]:
    return meta["missing_rows"], meta["extra_rows"], meta["changed_rows"]


@pytest.mark.parametrize("mode", ["sync", "replace"])
def test_check_reports_each_kind_of_drift_in_scope(pair: PgPair, mode: str) -> None:
    name = f"drift_{mode}"
    make_table(pair, name)
    defs = build(pair, name, mode)
    result = run(defs)
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed

    evaluation, meta = check_alone(defs)
    assert evaluation.passed
    assert meta["same_snapshot_as_copy"] is False
    assert meta["check_scope"] == "full"
    assert (meta["source_rows"], meta["target_rows"]) == (50, 50)

    pair.target(
        f"UPDATE {name} SET v = 'tampered' WHERE id = 4",
        f"DELETE FROM {name} WHERE id = 6",
        f"INSERT INTO {name} VALUES (1000, 'extra', 'KR')",
    )
    evaluation, meta = check_alone(defs)
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert counts(meta) == (1, 1, 1)
    assert (meta["source_rows"], meta["target_rows"]) == (50, 50)
    assert meta["sample_missing_keys"] == "(6)"
    assert meta["sample_extra_keys"] == "(1000)"
    assert meta["sample_changed_keys"] == "(4)"
    assert meta["scope"] == SCOPE
    assert meta["mode"] == mode

    # A new materialization repairs the target; the check in the same run says so.
    result = run(defs)
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed
    evaluation, meta = check_alone(defs)
    assert evaluation.passed
    assert counts(meta) == (0, 0, 0)


def test_changes_outside_the_scope_do_not_fail_the_check(pair: PgPair) -> None:
    name = "outside"
    make_table(pair, name)
    defs = build(pair, name, "sync")
    run(defs)
    pair.source(
        f"UPDATE {name} SET v = 'changed' WHERE id IN (1, 3)",
        f"DELETE FROM {name} WHERE id = 5",
        f"INSERT INTO {name} VALUES (1001, 'new', 'US')",
    )
    pair.target(
        f"INSERT INTO {name} VALUES (7, 'us row', 'US'), (2001, 'stray', NULL)",
    )
    evaluation, meta = check_alone(defs)
    assert evaluation.passed, evaluation.description
    assert counts(meta) == (0, 0, 0)
    assert meta["target_rows"] == 50


def test_merge_reports_extra_rows_but_passes_and_fails_on_changed(pair: PgPair) -> None:
    name = "merge_drift"
    make_table(pair, name)
    defs = build(pair, name, "merge")
    run(defs)
    pair.target(f"INSERT INTO {name} VALUES (1000, 'extra', 'KR'), (1002, 'extra', 'KR')")
    evaluation, meta = check_alone(defs)
    assert evaluation.passed
    assert counts(meta) == (0, 2, 0)
    # Samples come in bucket order, not key order.
    assert set(meta["sample_extra_keys"].split(", ")) == {"(1000)", "(1002)"}

    pair.target(f"UPDATE {name} SET v = 'tampered' WHERE id = 8")
    evaluation, meta = check_alone(defs)
    assert not evaluation.passed
    assert counts(meta) == (0, 2, 1)
    assert meta["sample_changed_keys"] == "(8)"


def test_append_fails_only_on_missing_rows(pair: PgPair) -> None:
    name = "append_drift"
    make_table(pair, name)
    defs = build(pair, name, "append")
    run(defs)
    pair.target(
        f"INSERT INTO {name} VALUES (1000, 'extra', 'KR')",
        f"UPDATE {name} SET v = 'tampered' WHERE id = 8",
    )
    evaluation, meta = check_alone(defs)
    assert evaluation.passed, evaluation.description
    # The source's primary key still matches rows, though the appended target has none.
    assert counts(meta) == (0, 1, 1)

    pair.target(f"DELETE FROM {name} WHERE id = 10")
    evaluation, meta = check_alone(defs)
    assert not evaluation.passed
    assert counts(meta) == (1, 1, 1)
    assert meta["sample_missing_keys"] == "(10)"


DUPLICATE_KEYS_BUG = (
    "integrity.compare collapses target rows that share a key (dict(t_rows)), so duplicate "
    "target rows are never counted as extra"
)


def test_sync_fails_when_the_target_holds_a_row_twice(pair: PgPair) -> None:
    name = "dup_sync"
    make_table(pair, name)
    # A target made by hand without a key: sync still matches by the source's key.
    pair.target(f"CREATE TABLE {name} (id int, v text, region text)")
    defs = build(pair, name, "sync")
    run(defs)
    pair.target(f"INSERT INTO {name} SELECT * FROM {name} WHERE id = 2")
    evaluation, meta = check_alone(defs)
    assert (meta["source_rows"], meta["target_rows"]) == (50, 51)
    assert counts(meta) == (0, 1, 0)
    assert meta["sample_extra_keys"] == "(2)"
    assert not evaluation.passed


def test_append_twice_reports_the_duplicates_as_extra_rows(pair: PgPair) -> None:
    name = "append_twice"
    make_table(pair, name)
    defs = build(pair, name, "append")
    run(defs)
    result = run(defs)
    (evaluation,) = result.get_asset_check_evaluations()
    meta = {k: v.value for k, v in evaluation.metadata.items()}
    assert evaluation.passed  # append: only missing rows fail
    assert (meta["source_rows"], meta["target_rows"]) == (50, 100)
    assert meta["missing_rows"] == 0
    assert meta["extra_rows"] == 50


def test_check_alone_before_any_copy_fails_the_run_naming_the_table(pair: PgPair) -> None:
    name = "never_copied"
    make_table(pair, name)
    defs = build(pair, name, "sync")
    result = run(defs, selection=dg.AssetSelection.all_asset_checks(), raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = str(failure.step_failure_data.error)
    assert "public.never_copied" in message
    assert "does not exist" in message


def test_blocking_check_fails_the_run_when_it_fails(pair: PgPair) -> None:
    name = "blocking"
    make_table(pair, name)
    defs = build(pair, name, "sync", blocking=True)
    (check_spec,) = defs.resolve_asset_graph().asset_check_keys
    assert check_spec.name == "integrity"
    assert run(defs).success
    pair.target(f"DELETE FROM {name} WHERE id = 2")
    result = run(defs, selection=dg.AssetSelection.all_asset_checks(), raise_on_error=False)
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert not result.success
