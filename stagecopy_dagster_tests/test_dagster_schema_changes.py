"""`on_schema_change` and `mask` through Dagster: metadata, the run's log, the check."""

from __future__ import annotations

import dagster as dg
import pytest

from stagecopy_dagster import build_definitions
from stagecopy_dagster.masking import MASK_KEY_ENV
from stagecopy_dagster_tests.dghelpers import materialize
from stagecopy_dagster_tests.pg import PgPair

pytestmark = pytest.mark.integration

KEY = "dagster-test-key-비밀"


def test_schema_changes_land_in_metadata_and_the_log(
    any_pg: PgPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MASK_KEY_ENV, KEY)
    any_pg.source(
        "CREATE TABLE t (id int PRIMARY KEY, name varchar(10), old text, 주민번호 text)",
        "INSERT INTO t SELECT g, 'n' || g, 'o', 'rrn' || g FROM generate_series(1, 20) g",
    )
    spec = {"tables": [{"source": "public.t", "mask": {"주민번호": "hash"}}]}
    defs = build_definitions(spec, source_url=any_pg.source_url, target_url=any_pg.target_url)
    instance = dg.DagsterInstance.ephemeral()
    first = materialize(defs, instance=instance)
    assert first.success
    any_pg.source(
        "ALTER TABLE t ALTER COLUMN name TYPE text, DROP COLUMN old, ADD COLUMN score int",
        "UPDATE t SET score = 1 WHERE id = 1",
    )
    second = materialize(defs, instance=instance)
    assert second.success
    (event,) = second.get_asset_materialization_events()
    assert event.materialization is not None
    metadata = {k: v.value for k, v in event.materialization.metadata.items()}
    assert metadata["stagecopy/schema_changes"] == [
        {"column": "name", "change": "widened", "from": "character varying(10)", "to": "text"},
        {"column": "score", "change": "added", "type": "integer"},
        {"column": "old", "change": "gone_from_source", "from": "text"},
    ]
    assert metadata["stagecopy/added_columns"] == "score"
    (check,) = second.get_asset_check_evaluations()
    assert check.passed
    logged = [entry.user_message for entry in instance.all_logs(second.run_id)]
    messages = [m for m in logged if "schema change" in m]
    assert messages == [
        "public.t: schema change: widened name from character varying(10) to text",
        "public.t: schema change: added column score integer",
        "public.t: schema change: old is gone from the source: kept, NULL in new and changed rows",
    ]
    every_message = "\n".join(
        entry.user_message for run in (first, second) for entry in instance.all_logs(run.run_id)
    )
    assert KEY not in every_message
    assert KEY not in repr(metadata)
