"""`parallel: N`: N COPY streams over heap block ranges, all reading one exported snapshot."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from stagecopy_dagster import runner
from stagecopy_dagster.resources import PostgresResource
from stagecopy_dagster.spec import load_spec
from stagecopy_dagster_tests.copyhelpers import assert_same_rows, checksum, staging_leftovers
from stagecopy_dagster_tests.pg import PgPair

pytestmark = pytest.mark.integration

ROWS = 60_000


def _seed(pg: PgPair) -> None:
    pg.source(
        "CREATE TABLE big (id bigint PRIMARY KEY, grp int NOT NULL, note text)",
        f"INSERT INTO big SELECT g, g % 10, repeat(md5(g::text), 4) "
        f"FROM generate_series(1, {ROWS}) g",
    )


def _replicate(pg: PgPair, **entry: object) -> runner.Replication:
    table = load_spec({"tables": [{"source": "public.big", "parallel": 2, **entry}]}).tables[0]
    return runner.replicate(
        table, PostgresResource(url=pg.source_url), PostgresResource(url=pg.target_url)
    )


def test_parallel_streams_copy_every_mode_path(pg: PgPair) -> None:
    _seed(pg)
    first = _replicate(pg, mode="sync")
    assert (first.result.path, first.result.rows_copied, first.result.inserted) == (
        "direct",
        ROWS,
        ROWS,
    )
    assert "copy" in first.result.steps and "insert" in first.result.steps
    assert first.report is not None and first.report.passed
    assert_same_rows(pg, "big")

    pg.source(
        "UPDATE big SET note = 'changed' WHERE id % 100 = 0",
        "DELETE FROM big WHERE id % 1000 = 1",
        "INSERT INTO big VALUES (1000001, 1, 'new')",
    )
    second = _replicate(pg, mode="sync")
    changed, deleted = ROWS // 100, ROWS // 1000
    assert second.result.path == "staged"
    assert (second.result.inserted, second.result.updated, second.result.deleted) == (
        1,
        changed,
        deleted,
    )
    assert second.report is not None and second.report.passed
    assert_same_rows(pg, "big")
    assert staging_leftovers(pg) == []


def test_parallel_streams_respect_the_scope(pg: PgPair) -> None:
    _seed(pg)
    done = _replicate(pg, where="grp < 3", mode="merge")
    assert done.result.rows_copied == ROWS * 3 // 10
    assert_same_rows(pg, "big", where="grp < 3")


def test_parallel_streams_read_one_snapshot(any_pg: PgPair) -> None:
    """A writer committing during the copy: every stream still reads the exported snapshot."""
    pg = any_pg
    _seed(pg)
    stop = threading.Event()

    def write() -> None:
        with psycopg.connect(pg.source_admin_url, autocommit=True) as conn:
            n = 0
            while not stop.is_set() and n < 2000:
                n += 1
                conn.execute(
                    "UPDATE big SET note = note || 'x' WHERE id = %s", (n * 29 % ROWS + 1,)
                )
                conn.execute("INSERT INTO big VALUES (%s, 1, 'late')", (2_000_000 + n,))
                time.sleep(0.001)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        done = _replicate(pg, mode="sync")
    finally:
        stop.set()
        writer.join()
    assert done.report is not None and done.report.passed, done.report
    assert done.report.same_snapshot


def test_a_failed_parallel_run_leaves_the_target_and_no_staging(pg: PgPair) -> None:
    _seed(pg)
    _replicate(pg, mode="merge")
    before = checksum(pg, "target", "big")
    pg.source("INSERT INTO big SELECT id + 5000000, grp, note FROM big WHERE id <= 10")
    with pytest.raises(Exception, match="repeat or lack the key"):
        # a key that is not unique at the source, so the staged rows repeat it
        _replicate(pg, mode="merge", primary_key=["grp"])
    assert checksum(pg, "target", "big") == before
    assert staging_leftovers(pg) == []
