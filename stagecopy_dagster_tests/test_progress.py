"""Progress reports: rows and bytes against the expected total, percent, rate and ETA.

The arithmetic and the text are pure (no database); the expected totals are read from real
PostgreSQL by the engine, with `progress_interval=0` (a report after every write) so the
reports do not depend on timing.
"""

from __future__ import annotations

import dataclasses
import io
import threading

import dagster as dg
import pytest

from stagecopy_dagster import runner
from stagecopy_dagster.build import build_definitions
from stagecopy_dagster.cli_progress import PlainProgress, RichProgress
from stagecopy_dagster.copier import CopyOptions
from stagecopy_dagster.engine.estimate import stream_bytes_per_row
from stagecopy_dagster.engine.types import Estimate, Progress
from stagecopy_dagster.progress import describe_progress, format_duration
from stagecopy_dagster_tests.copyhelpers import endpoints, table_spec
from stagecopy_dagster_tests.dghelpers import materialize
from stagecopy_dagster_tests.pg import PgPair

ROWS = 20_000

# --- pure ------------------------------------------------------------------------------------


def test_fraction_goes_by_rows_when_counted_else_by_bytes() -> None:
    expected = Estimate(rows=1000, bytes=200_000)
    assert Progress("t", 250, 10_000, 2.0, expected).fraction == 0.25
    assert Progress("t", None, 100_000, 2.0, expected).fraction == 0.5
    # An estimate the stream outran: unknown, never 130 %.
    assert Progress("t", 1300, 10_000, 2.0, expected).fraction is None
    assert Progress("t", 10, 10, 1.0).fraction is None
    assert Progress("t", 10, 10, 1.0, Estimate(10, None), final=True).fraction == 1.0


def test_eta_is_the_rest_at_the_rate_so_far() -> None:
    p = Progress("t", 250, 10_000, 2.0, Estimate(1000, None))
    assert p.eta_seconds == pytest.approx(6.0)
    assert p.rows_per_second == 125.0
    assert Progress("t", 0, 0, 2.0, Estimate(1000, None)).eta_seconds is None
    assert Progress("t", None, 5, 2.0).rows_per_second is None


def test_stream_bytes_per_row_adds_the_copy_framing() -> None:
    assert stream_bytes_per_row(20, 3, "text") == 23
    assert stream_bytes_per_row(20, 3, "binary") == 20 + 2 + 12


def test_describe_progress_reads_as_a_sentence() -> None:
    p = Progress("public.orders", 250_000, 12_500_000, 5.0, Estimate(1_000_000, 50_000_000))
    assert describe_progress(p) == (
        "public.orders: 250,000 / ~1,000,000 rows, 12.5 / ~50.0 MB, 25.0%, "
        "50,000 rows/s, 2.5 MB/s, ETA 15s"
    )
    exact = Progress("public.orders", 40, 2_000, 1.0, Estimate(40, 2_100, exact=True), final=True)
    assert describe_progress(exact) == (
        "public.orders: 40 / 40 rows, 0.0 / ~0.0 MB, 100.0%, 40 rows/s, 0.0 MB/s, done in 1s"
    )
    keys = Progress("t", None, 3_000_000, 2.0, None, step="copy_keys")
    assert describe_progress(keys) == "t: keys: 3.0 MB, 1.5 MB/s"


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.4, "0s"), (59, "59s"), (61, "1m01s"), (3725, "1h02m05s")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_plain_progress_prints_a_line_per_interval_and_every_final() -> None:
    now = [0.0]
    out = io.StringIO()
    plain = PlainProgress(out, interval=10, clock=lambda: now[0])
    expected = Estimate(100, None)
    for second, rows in [(0.0, 1), (5.0, 20), (10.0, 40), (12.0, 50), (20.5, 80)]:
        now[0] = second
        plain(Progress("a", rows, rows * 10, second + 0.5, expected))
    now[0] = 21.0
    plain(Progress("a", 100, 1000, 21.5, expected, final=True))
    lines = out.getvalue().splitlines(keepends=True)
    assert [line.split(" rows")[0] for line in lines] == [
        "a: 1 / ~100",
        "a: 40 / ~100",
        "a: 80 / ~100",
        "a: 100 / ~100",
    ]
    assert all(line.endswith("\n") and "\r" not in line for line in lines)


def test_rich_progress_keeps_a_line_per_running_table_and_prints_the_done_ones() -> None:
    from rich.console import Console  # noqa: PLC0415

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, color_system=None)
    with RichProgress(console) as live:
        live(Progress("a", 10, 100, 1.0, Estimate(100, 1000)))
        live(Progress("b", None, 100, 1.0, Estimate(100, 1000)))
        assert live.running() == ["a", "b"]
        live(Progress("a", 100, 1000, 2.0, Estimate(100, 1000), final=True))
        assert live.running() == ["b"]
    assert "a: 100 / ~100 rows" in out.getvalue()


# --- the engine's reports, on real PostgreSQL ---------------------------------------------------


def _seed(pg: PgPair) -> None:
    pg.source(
        "CREATE TABLE events (id bigint PRIMARY KEY, region text NOT NULL, note text)",
        "INSERT INTO events SELECT g, CASE WHEN g % 4 = 0 THEN 'US' ELSE 'KR' END, "
        f"md5(g::text) FROM generate_series(1, {ROWS}) g",
    )


def _watch(pg: PgPair, entry: dict[str, object]) -> tuple[runner.Replication, list[Progress]]:
    reports: list[Progress] = []
    lock = threading.Lock()

    def collect(p: Progress) -> None:
        with lock:
            reports.append(p)

    options = dataclasses.replace(CopyOptions(), progress_interval=0)
    done = runner.replicate(
        table_spec(entry), *endpoints(pg), verify=False, options=options, progress=collect
    )
    return done, reports


def test_reports_carry_the_exact_scope_of_a_small_table(pg: PgPair) -> None:
    _seed(pg)
    kr = ROWS - ROWS // 4
    done, reports = _watch(pg, {"source": "public.events", "where": "region = 'KR'"})
    assert done.result.rows_copied == kr
    copy = [p for p in reports if p.step == "copy"]
    assert len(copy) > 2, reports  # one a write of ~64 KiB, then the total
    assert {p.expected for p in copy} == {copy[0].expected}
    expected = copy[0].expected
    assert expected is not None and expected.exact and expected.rows == kr
    assert expected.bytes is not None and expected.bytes > 0
    # The streamed bytes grow; the last report is the stream's total, 100 %.
    assert [p.bytes for p in copy] == sorted(p.bytes for p in copy)
    assert copy[-1].final and copy[-1].rows == kr and copy[-1].fraction == 1.0
    assert copy[-1].bytes == done.result.bytes
    assert all(p.fraction is None or 0 <= p.fraction <= 1 for p in copy)


def test_reports_of_parallel_streams_add_up_to_the_table(pg: PgPair) -> None:
    _seed(pg)
    done, reports = _watch(pg, {"source": "public.events", "parallel": 2})
    assert done.result.rows_copied == ROWS
    assert {p.table for p in reports} == {"public.events"}
    assert [p.bytes for p in reports] == sorted(p.bytes for p in reports)
    last = reports[-1]
    assert last.final and (last.rows, last.bytes) == (ROWS, done.result.bytes)
    assert last.expected is not None and last.expected.rows == ROWS


def test_an_unwatched_copy_reads_no_estimate(pg: PgPair) -> None:
    _seed(pg)
    done = runner.replicate(table_spec({"source": "public.events"}), *endpoints(pg), verify=False)
    assert "estimate" not in done.result.steps


def test_the_diff_reports_its_key_stream_then_the_changed_rows(pg: PgPair) -> None:
    _seed(pg)
    _watch(pg, {"source": "public.events"})
    pg.source("UPDATE events SET note = 'changed' WHERE id % 100 = 0")
    done, reports = _watch(pg, {"source": "public.events"})
    assert (done.result.path, done.result.updated) == ("diff", ROWS // 100)
    keys = [p for p in reports if p.step == "copy_keys"]
    rows = [p for p in reports if p.step == "copy"]
    assert keys and rows and reports.index(keys[-1]) < reports.index(rows[0])
    # A key and a hash per row in scope: ~26 bytes each for a bigint key.
    assert {p.expected for p in keys} == {Estimate(ROWS, ROWS * 26, exact=True)}
    assert keys[-1].final and keys[-1].rows == ROWS
    # Then exactly the changed rows, which the diff counted.
    assert rows[-1].expected == Estimate(ROWS // 100, None, exact=True)
    assert rows[-1].final and rows[-1].rows == ROWS // 100 and rows[-1].fraction == 1.0


def test_a_few_rows_that_are_costly_to_find_keep_the_planners_estimate(pg: PgPair) -> None:
    # 10 rows out of a million generated: counting them first would read the million twice.
    query = "SELECT g AS id FROM generate_series(1, 1000000) g WHERE g % 100000 = 0"
    entry = {"query": query, "target": "public.sparse", "primary_key": "id"}
    done, reports = _watch(pg, entry)
    assert done.result.rows_copied == 10
    expected = reports[-1].expected
    assert expected is not None and not expected.exact
    assert reports[-1].final and reports[-1].rows == 10


def test_dagsters_run_log_gets_the_same_line(pg: PgPair) -> None:
    _seed(pg)
    defs = build_definitions(
        {"tables": [{"source": "public.events"}]},
        source_url=pg.source_url,
        target_url=pg.target_url,
    )
    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize(defs, instance=instance)
        assert result.success
        messages = [e.user_message for e in instance.all_logs(result.run_id)]
    done = [m for m in messages if m.startswith("public.events: ") and "done in" in m]
    assert len(done) == 1, messages
    assert done[0].startswith(f"public.events: {ROWS:,} / {ROWS:,} rows, ")
    assert ", 100.0%, " in done[0]
