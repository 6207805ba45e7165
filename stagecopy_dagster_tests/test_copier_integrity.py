"""The integrity comparison as an oracle after real copies, and when the target drifts."""

from __future__ import annotations

from typing import Any

import pytest

from stagecopy_dagster import runner
from stagecopy_dagster.integrity import IntegrityReport
from stagecopy_dagster_tests.copyhelpers import endpoints, run_and_check, run_copy, table_spec
from stagecopy_dagster_tests.pg import PgPair


def compare_now(pg: PgPair, entry: dict[str, Any]) -> IntegrityReport:
    """Compare source and target scopes in fresh snapshots, as `stagecopy check` does."""
    return runner.verify(table_spec(entry), *endpoints(pg))


@pytest.mark.parametrize(
    "where",
    ["note <> 'skip'", "note LIKE 'n1%'"],
    ids=["plain-scope", "scope-with-percent"],
)
def test_drift_in_the_target_is_reported_by_kind(pg: PgPair, where: str) -> None:
    pg.source(
        "CREATE TABLE t (id int PRIMARY KEY, note text)",
        "INSERT INTO t SELECT g, 'n1' || g FROM generate_series(1, 2000) g",
    )
    entry = {"source": "public.t", "mode": "sync", "where": where}
    run_copy(pg, entry)
    clean = compare_now(pg, entry)
    assert clean.passed, clean.summary
    assert clean.source_rows == clean.target_rows == 2000

    pg.target(
        "UPDATE t SET note = 'n1 changed' WHERE id IN (1, 2)",
        "DELETE FROM t WHERE id = 3",
        "INSERT INTO t VALUES (-1, 'n1 extra')",
    )
    drift = compare_now(pg, entry)
    assert not drift.passed
    assert (drift.missing_rows, drift.extra_rows, drift.changed_rows) == (1, 1, 2)
    assert set(drift.sample_changed) == {"(1)", "(2)"}
    assert drift.sample_missing == ("(3)",)
    assert drift.sample_extra == ("(-1)",)


# --- the check that runs with an incremental copy covers its window --------------------------


def _events(pg: PgPair) -> dict[str, Any]:
    pg.source(
        "CREATE TABLE ev (id int PRIMARY KEY, note text, at timestamptz NOT NULL)",
        "INSERT INTO ev SELECT g, 'n' || g, timestamptz '2024-01-01' + g * interval '1 minute' "
        "FROM generate_series(1, 3000) g",
    )
    return {"source": "public.ev", "mode": "merge", "incremental_field": "at"}


def test_the_first_copy_checks_the_full_scope(pg: PgPair) -> None:
    entry = _events(pg)
    _, report = run_and_check(pg, entry)
    assert report.passed, report.summary
    assert (report.check_scope, report.window, report.window_rows) == ("full", None, None)
    assert report.source_rows == report.target_rows == 3000


def test_an_incremental_copy_checks_its_window_and_counts_the_rest(pg: PgPair) -> None:
    entry = _events(pg)
    run_copy(pg, entry)
    pg.source("UPDATE ev SET note = 'moved', at = at + interval '1 year' WHERE id % 100 = 7")
    result, report = run_and_check(pg, entry)
    assert result.rows_copied == 31  # 30 moved rows and the newest row at the watermark
    assert report.passed, report.summary
    assert report.check_scope == "window"
    assert report.window is not None and report.window.startswith("at >= ")
    assert report.window_rows == 31
    assert report.source_rows == report.target_rows == 3000


def test_the_window_check_counts_a_row_lost_outside_the_window(pg: PgPair) -> None:
    entry = _events(pg)
    run_copy(pg, entry)
    pg.target("DELETE FROM ev WHERE id = 5")
    pg.source("UPDATE ev SET at = at + interval '1 year' WHERE id = 2999")
    _, report = run_and_check(pg, entry)
    assert report.check_scope == "window"
    assert not report.passed
    assert report.missing_rows == 1  # counted outside the window: no sample key
    assert report.sample_missing == ()
    assert (report.source_rows, report.target_rows) == (3000, 2999)


def test_the_window_check_names_rows_in_the_window_by_key(pg: PgPair) -> None:
    entry = _events(pg)
    run_copy(pg, entry)
    # A target row newer than any source row: the window starts there, and holds it alone.
    pg.target("INSERT INTO ev VALUES (-1, 'extra', timestamptz '2030-01-01')")
    _, report = run_and_check(pg, entry)
    assert report.check_scope == "window"
    assert report.passed, report.summary  # merge keeps extra target rows
    assert (report.extra_rows, report.sample_extra, report.window_rows) == (1, ("(-1)",), 0)


def test_a_row_changed_without_moving_its_watermark_is_caught_by_the_full_check(
    pg: PgPair,
) -> None:
    entry = _events(pg)
    run_copy(pg, entry)
    # A writer that forgets to move `at`: the incremental run cannot see the change, and its
    # window check (honestly) does not claim the row.
    pg.source("UPDATE ev SET note = 'silent' WHERE id = 10")
    _, report = run_and_check(pg, entry)
    assert report.passed and report.check_scope == "window", report.summary
    full = compare_now(pg, entry)
    assert full.check_scope == "full"
    assert not full.passed
    assert (full.changed_rows, full.sample_changed) == (1, ("(10)",))
