"""No false alarm while the source keeps changing: the check in the copy's run uses its snapshot.

A writer thread inserts and updates source rows (its own autocommit connection, bounded in
time) while `dg.materialize` copies a 200k-row table. The `integrity` check of that same run
must pass; a check run alone afterwards must report the drift honestly; a new copy repairs it.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
import psycopg
import pytest

from stagecopy_dagster import PostgresResource, SourceSnapshot, build_definitions
from stagecopy_dagster_tests.dghelpers import materialize
from stagecopy_dagster_tests.pg import PgPair, PgPairFactory

pytestmark = pytest.mark.integration

ROWS = 200_000
WRITER_LIMIT_SECONDS = 30.0
#: Pause between writes: enough to overlap every copy, few enough differing rows that the
#: standalone check's drill-down stays quick.
WRITER_PAUSE_SECONDS = 0.01
INSERT_NEW_ROW = "INSERT INTO big VALUES (%s, 0, 'written during the copy')"
UPDATE_OLD_ROW = "UPDATE big SET v = v + 1 WHERE id = %s"
#: New source keys, unique across writers.
_new_ids = itertools.count(ROWS + 1)


class SourceWriter:
    """Inserts new rows and updates existing ones on the source until stopped (or time out)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.writes = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="source-writer", daemon=True)

    def _loop(self) -> None:
        deadline = time.monotonic() + WRITER_LIMIT_SECONDS
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                while not self._stop.is_set() and time.monotonic() < deadline:
                    new_id = next(_new_ids)
                    conn.execute(INSERT_NEW_ROW, (new_id,))
                    conn.execute(UPDATE_OLD_ROW, (new_id * 7919 % ROWS + 1,))
                    self.writes += 2
                    time.sleep(WRITER_PAUSE_SECONDS)
        except BaseException as exc:  # surfaced by the test, not lost in the thread
            self.error = exc

    def wait_for_writes(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.writes < n:
            assert self.error is None, self.error
            assert time.monotonic() < deadline, "the writer thread made no progress"
            time.sleep(0.01)

    @contextmanager
    def running(self) -> Iterator[SourceWriter]:
        self._thread.start()
        try:
            self.wait_for_writes(20)
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=WRITER_LIMIT_SECONDS + 5)
        assert self.error is None, self.error


@pytest.fixture(scope="module")
def pair(pg18: PgPairFactory) -> Iterator[PgPair]:
    """One PostgreSQL 18 pair for the module."""
    pair = pg18("dagster_snapshot")
    try:
        yield pair
    finally:
        pair.drop()


def evaluation_of(result: dg.ExecuteInProcessResult) -> tuple[bool, dict[str, Any]]:
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation.passed, {k: v.value for k, v in evaluation.metadata.items()}


def copy_while_writing(pg: PgPair, defs: dg.Definitions) -> tuple[dg.ExecuteInProcessResult, int]:
    """Materialize while the writer runs; return the result and the writes made meanwhile."""
    with SourceWriter(pg.source_admin_url).running() as writer:
        before = writer.writes
        result = materialize(defs)
        during = writer.writes - before
        # Leave a few writes after the copy's snapshot for the standalone check to find.
        writer.wait_for_writes(writer.writes + 20)
    return result, during


def test_writer_during_copy_causes_no_false_alarm_but_real_drift_is_reported(
    pair: PgPair,
) -> None:
    pair.source(
        "CREATE TABLE big (id int PRIMARY KEY, v int NOT NULL, pad text)",
        f"INSERT INTO big SELECT g, g, 'row ' || g FROM generate_series(1, {ROWS}) g",
    )
    defs = build_definitions(
        {"tables": [{"source": "public.big", "mode": "sync"}]},
        source_url=pair.source_url,
        target_url=pair.target_url,
    )

    # First copy (straight into the new table), then a diff and MERGE over it, both under writes.
    for path in ("direct", "diff"):
        result, during = copy_while_writing(pair, defs)
        assert during > 0, "the writer must have written while the copy ran"
        meta = result.get_asset_materialization_events()[0].materialization.metadata
        assert meta["stagecopy/path"].value == path
        passed, check = evaluation_of(result)
        assert passed, check
        assert check["same_snapshot_as_copy"] is True
        assert check["missing_rows"] == check["extra_rows"] == check["changed_rows"] == 0
        assert check["source_rows"] == check["target_rows"] >= ROWS

    # Alone, the check compares the source as it is now: the writes after the last snapshot.
    alone = materialize(defs, selection=dg.AssetSelection.all_asset_checks())
    passed, check = evaluation_of(alone)
    assert not passed
    assert check["same_snapshot_as_copy"] is False
    assert check["missing_rows"] > 0
    assert check["extra_rows"] == 0
    assert check["source_rows"] > check["target_rows"]

    # With the writer stopped, a new copy and its check agree, and so does a check alone.
    passed, check = evaluation_of(materialize(defs))
    assert passed, check
    passed, check = evaluation_of(materialize(defs, selection=dg.AssetSelection.all_asset_checks()))
    assert passed, check
    (count,) = pair.source_rows("SELECT count(*) FROM big")[0]
    assert check["source_rows"] == check["target_rows"] == count
    assert pair.target_rows("SELECT count(*) FROM big")[0][0] == count


def test_the_copy_snapshot_opens_without_a_server_warning(pair: PgPair) -> None:
    notices: list[str | None] = []
    with PostgresResource(url=pair.source_url).connect() as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary))
        with SourceSnapshot.begin(conn):
            settings = conn.execute(
                "SELECT current_setting('transaction_isolation'), "
                "current_setting('transaction_read_only')"
            ).fetchone()
    assert settings == ("repeatable read", "on")
    assert notices == []
