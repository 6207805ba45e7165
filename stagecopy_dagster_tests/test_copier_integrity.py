"""The integrity comparison as an oracle after real copies, and when the target drifts."""

from __future__ import annotations

from typing import Any

import pytest

from stagecopy_dagster import runner
from stagecopy_dagster.integrity import IntegrityReport
from stagecopy_dagster_tests.copyhelpers import endpoints, run_copy, table_spec
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
