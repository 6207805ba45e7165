"""A created table gets its key before or after the first load, as the source's statistics say.

The rule itself is a table of cases in test_plan.py; here the copier reads the statistics of a
real source and acts on the decision. The size floor and the row width are lowered so a
small table of ~830-byte rows is "wide" (the measured crossing point is near 4 KB a row).
"""

from __future__ import annotations

import pytest

from stagecopy_dagster.engine import plan
from stagecopy_dagster_tests.copyhelpers import assert_same_rows, run_copy
from stagecopy_dagster_tests.pg import PgPair

# ~830 bytes a row of hex text (it does not compress), or ~40 bytes.
WIDE = "(SELECT string_agg(md5(g::text || i), '') FROM generate_series(1, 25) AS i)"
NARROW = "md5(g::text)"


@pytest.fixture(autouse=True)
def _small_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plan, "SMALL_TABLE_BYTES", 0)
    monkeypatch.setattr(plan, "WIDE_ROW_BYTES", 500)


@pytest.mark.parametrize(
    ("body", "key_built_after"), [(WIDE, False), (NARROW, True)], ids=["wide", "narrow"]
)
def test_the_key_is_built_before_the_load_only_for_wide_ordered_rows(
    any_pg: PgPair, body: str, key_built_after: bool
) -> None:
    any_pg.source(
        "CREATE TABLE t (id int PRIMARY KEY, body text, at timestamptz NOT NULL)",
        f"INSERT INTO t SELECT g, {body}, timestamptz '2024-01-01' + g * interval '1 s' "
        "FROM generate_series(1, 2000) AS g",
        "VACUUM ANALYZE t",
    )
    entry = {"source": "public.t", "mode": "merge", "incremental_field": "at"}
    result = run_copy(any_pg, entry)
    assert result.created_table and result.rows_copied == 2000
    assert ("index" in result.steps) is key_built_after
    assert_same_rows(any_pg, "public.t")
    indexes = any_pg.target_rows(
        "SELECT indexdef FROM pg_indexes WHERE tablename = 't' ORDER BY indexname"
    )
    assert len(indexes) == 2  # the key and the watermark index, either way
