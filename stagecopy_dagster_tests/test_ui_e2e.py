"""The demo for real, driven from a browser: `stagecopy demo` -> Dagster UI -> Materialize all.

Starts `stagecopy demo --port N` from the repository (as `./dev demo` does) with a fresh
`$STAGECOPY_HOME`, waits until GraphQL reports the code location LOADED, then in headless
Chromium: opens the asset graph, clicks "Materialize all"; the demo's daily prices are
partitioned (by week), so Dagster asks which partitions: the test types a range of the last
three, launches the backfill, and waits on the backfill's page until it has completed (one run
for the unpartitioned tables, one run and one COPY stream for the range). Then, on the
Korean-named table's asset page it sees the row count and the `integrity` check Passed *for the
backfill's run*; GraphQL must agree, and report the partitioned table's check passed for each
partition of the range. Then it materializes that table again from its page while the test
makes the first attempt lose its connection (the source table locked, the waiting backend
terminated), and the run page must show the step up for retry and its second attempt. SIGTERM
must stop `dagster dev`, and the demo's last line must say that its PostgreSQL keeps running and
how to stop it. Screenshots and the demo's output go to `e2e-artifacts/ui/` (always;
`failure.png` when a step fails).

Needs Debian's Chromium at /usr/bin/chromium (CI installs it); skipped only when it is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from playwright.sync_api import Page, expect, sync_playwright
from psycopg import sql

from stagecopy_dagster.build import DEMO_SPEC
from stagecopy_dagster.identifiers import QualifiedName
from stagecopy_dagster.local import LocalCluster
from stagecopy_dagster.local.default import SOURCE_DB, TARGET_DB
from stagecopy_dagster.local.demo.lifecycle import KEEPS_RUNNING
from stagecopy_dagster.local.demo.seed import PRICES
from stagecopy_dagster.partitions import all_keys
from stagecopy_dagster.spec import load_spec
from stagecopy_dagster_tests.e2e.demo_server import DemoServer
from stagecopy_dagster_tests.e2e.ui import (
    CHROMIUM,
    dismiss_nux,
    expect_visible_with_reloads,
    launch,
    launched_run_id,
    wait_run_status,
)
from stagecopy_dagster_tests.test_reliability_faults import terminate, wait_until_held

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "e2e-artifacts" / "ui"
STAGECOPY = Path(sys.executable).with_name("stagecopy")
#: The demo table with a Korean name (and a `where` scope); its asset name comes from the spec.
KOREAN_TABLE = "raw_data.인포맥스종목마스터"
TABLE = load_spec(DEMO_SPEC).table(KOREAN_TABLE)
ASSET = TABLE.asset_name
GROUPS = sorted({t.group_name for t in load_spec(DEMO_SPEC).tables})
#: The partitioned demo table, and the range of its partitions the test backfills.
PARTITIONED = load_spec(DEMO_SPEC).table(str(PRICES))
GROUP_ASSETS = [t.asset_name for t in load_spec(DEMO_SPEC).tables]

# Budgets (seconds) that keep the whole test under 5 minutes on 2 busy cores.
DEMO_READY_TIMEOUT = 300  # cluster + seed + the demo's own two runs + dagster dev loading
RUN_TIMEOUT = 300  # the UI-launched backfill: two runs (multiprocess executor), daemon ticks


BACKFILL_QUERY = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill {
    status runs { runId status } } }
}
"""
CHECK_EXECUTIONS_QUERY = """
query Executions($key: AssetKeyInput!, $limit: Int!) {
  assetCheckExecutions(assetKey: $key, checkName: "integrity", limit: $limit) {
    runId status evaluation { partition } }
}
"""


def clean_env() -> dict[str, str]:
    """The caller's environment without anything stagecopy, Dagster or libpq would pick up."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith(("STAGECOPY_", "DAGSTER_", "PG"))
    }


@pytest.fixture
def demo(cluster_tmp_path: Path) -> Iterator[DemoServer]:
    if not CHROMIUM.exists():
        pytest.skip(f"the browser test needs Chromium at {CHROMIUM} (apt-get install chromium)")
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    server = DemoServer(
        home=cluster_tmp_path / "stagecopy",
        cwd=REPO,
        log_path=ARTIFACTS / "demo.log",
        stagecopy=STAGECOPY,
    )
    server.start(clean_env())
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            server.stop_cluster()


class Steps:
    """Timed, screenshotted steps; a failing step leaves `failure.png` behind."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.started = time.monotonic()
        self.log: list[str] = []

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def mark(self, what: str) -> None:
        self.log.append(f"[{time.monotonic() - self.started:6.1f}s] {what}")


def target_rows(home: Path, table: QualifiedName) -> int:
    """Rows of `table` in the demo's target database (attaching to the running cluster)."""
    cluster = LocalCluster(home / "pg").start()
    with psycopg.connect(cluster.url(TARGET_DB)) as conn:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table.identifier)).fetchone()
    assert row is not None
    return int(row[0])


def backfill_range() -> list[str]:
    """The last three partition keys of the partitioned demo table."""
    assert PARTITIONED.partition is not None
    keys = list(all_keys(PARTITIONED.partition))
    assert len(keys) >= 3
    return keys[-3:]


def launch_materialize_all(steps: Steps, base: str, keys: list[str]) -> str:
    """On the asset graph (every group shown), "Materialize all" over the partition range
    `keys` (the partitioned table) and every unpartitioned table; the backfill's id."""
    page = steps.page
    page.goto(f"{base}/asset-groups")
    materialize_all = page.get_by_role("button", name="Materialize all")
    materialize_all.wait_for()
    dismiss_nux(page)
    # Two groups or more render collapsed: the graph shows the groups, not the assets.
    for group in GROUPS:
        expect(page.get_by_text(group, exact=True).first).to_be_visible()
    steps.shot("01_asset_graph")
    steps.mark("asset graph")

    materialize_all.click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text(re.compile(r"Launch runs to materialize \d+ assets"))).to_be_visible()
    # The partition selection accepts Dagster's range syntax, as a user types it.
    selection = dialog.locator("input[type=text]").first
    selection.fill(f"[{keys[0]}...{keys[-1]}]")
    selection.press("Enter")
    expect(dialog.get_by_text(f"{len(keys)} partitions", exact=True)).to_be_visible()
    steps.shot("02_partitions")
    dialog.get_by_role("button", name="Launch backfill").click()
    toast = page.get_by_text(re.compile(r"Created backfill \w+"))
    toast.wait_for()
    match = re.search(r"Created backfill (\w+)", toast.inner_text())
    assert match is not None
    backfill_id = match.group(1)
    steps.shot("03_launched")
    steps.mark(f"launched backfill {backfill_id} of {keys[0]}...{keys[-1]}")
    return backfill_id


def wait_backfill_succeeded(steps: Steps, demo: DemoServer, backfill_id: str) -> list[str]:
    """On the backfill's page, wait until it has completed, and require success; its runs."""
    page = steps.page
    page.goto(f"{demo.base_url}/runs/b/{backfill_id}")
    deadline = time.monotonic() + RUN_TIMEOUT
    backfill = demo.graphql(BACKFILL_QUERY, {"id": backfill_id})["partitionBackfillOrError"]
    while backfill["status"] in ("REQUESTED", "CANCELING") and time.monotonic() < deadline:
        time.sleep(2)
        backfill = demo.graphql(BACKFILL_QUERY, {"id": backfill_id})["partitionBackfillOrError"]
    status = backfill["status"]
    runs = {r["runId"]: r["status"] for r in backfill["runs"]}
    steps.mark(f"backfill {status}, runs {runs}")
    assert status == "COMPLETED_SUCCESS", f"backfill {backfill_id} ended {status}: {runs}"
    assert runs and set(runs.values()) == {"SUCCESS"}
    # The backfill's page says so too (it polls; reload as a user would): status Succeeded,
    # and the partitioned table's row among the assets, every one 100% completed.
    expect_visible_with_reloads(page, page.get_by_text("Succeeded", exact=True).first)
    # (An asset's link is named twice over: its icon's title and its text.)
    name = re.compile(rf"^{PARTITIONED.asset_name}\b")
    expect(page.get_by_role("link", name=name).first).to_be_visible()
    expect(page.get_by_text("100% completed", exact=True)).to_have_count(len(GROUP_ASSETS))
    steps.shot("04_backfill")
    steps.mark("backfill page: Succeeded")
    return list(runs)


def see_row_count(steps: Steps, base: str, rows: int) -> None:
    """On the Korean table's asset page, see its description and `rows` as the row count."""
    page = steps.page
    page.goto(f"{base}/assets/{ASSET}")
    assert TABLE.description is not None
    expect(page.get_by_text(TABLE.description).first).to_be_visible()
    # The overview's Status section: "Row count" over the `dagster/row_count` value.
    expect(page.get_by_text("Row count", exact=True)).to_be_visible()
    expect(page.get_by_text(f"{rows:,}", exact=True).first).to_be_visible()
    steps.shot("05_asset_overview")
    steps.mark(f"asset page: Row count {rows:,}")


def see_check_passed(steps: Steps, run_id: str) -> None:
    """On the asset's Checks tab, see `integrity` Passed for the run `run_id`."""
    page = steps.page
    page.get_by_role("tab", name="Checks").click()
    expect(page).to_have_url(re.compile(r"view=checks"))
    expect(page.get_by_text("Passed", exact=True).first).to_be_visible()
    # The "Passed" result belongs to *our* run, not to the demo's earlier one.
    expect_visible_with_reloads(page, page.locator(f'a[href^="/runs/{run_id}"]').first)
    steps.shot("06_checks_passed")
    steps.mark("integrity Passed for our run")


RUN_STATUS_QUERY = "query Run($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"


def launch_with_a_lost_connection(steps: Steps, base: str, demo: DemoServer) -> str:
    """Materialize the Korean table from its page; its first attempt loses its connection.

    The test locks the source table, so the copy's read of it waits (until let go); that
    backend is terminated (`pg_terminate_backend`). Once the retry waits on the same lock, the
    lock is let go and the retry copies. Returns the run's id.
    """
    page = steps.page
    assert TABLE.source is not None
    cluster = LocalCluster(demo.home / "pg").start()  # attaches to the demo's running cluster
    reading_it = [f"%{TABLE.source.name}%"]
    lock = sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(TABLE.source.identifier)
    with (
        psycopg.connect(cluster.url(SOURCE_DB)) as holder,
        psycopg.connect(cluster.url(SOURCE_DB), autocommit=True) as admin,
    ):
        holder.execute(lock)
        page.goto(f"{base}/assets/{ASSET}")
        page.get_by_role("button", name=re.compile(r"(^|\s)Materialize$")).click()
        run_id = launched_run_id(page)
        steps.mark(f"launched run {run_id} with the source table locked")

        def running() -> bool:  # a run that ended (e.g. failed without a retry) waits no more
            run = demo.graphql(RUN_STATUS_QUERY, {"id": run_id})["runOrError"]
            return run.get("status") not in ("SUCCESS", "FAILURE", "CANCELED")

        first = wait_until_held(
            admin,
            reading_it,
            wait_event_type="Lock",
            held=False,
            alive=running,
            timeout=RUN_TIMEOUT,
        )
        terminate(admin, first)
        steps.mark(f"terminated the first attempt's source backend {first}")
        second = wait_until_held(
            admin,
            reading_it,
            wait_event_type="Lock",
            held=False,
            alive=running,
            timeout=RUN_TIMEOUT,
        )
        assert second != first
        holder.rollback()
        steps.mark("the retry waited on the lock; lock released")
    return run_id


def see_the_retried_step(steps: Steps, base: str, run_id: str) -> None:
    """The run succeeded, and its page shows the step up for retry and its second attempt."""
    page = steps.page
    page.set_viewport_size({"width": 1400, "height": 3000})  # the whole (virtualized) event log
    page.goto(f"{base}/runs/{run_id}")
    status = wait_run_status(page, timeout=RUN_TIMEOUT)
    assert status == "Success", f"run {run_id} ended {status}; see {ARTIFACTS}"
    expect_visible_with_reloads(page, page.get_by_text("STEP_UP_FOR_RETRY", exact=True).first)
    expect(page.get_by_text(re.compile(r"failed and has requested a retry")).first).to_be_visible()
    expect(page.get_by_text("STEP_RESTARTED", exact=True).first).to_be_visible()
    expect(
        page.get_by_text(re.compile(r"Started re-execution \(attempt # 2\)")).first
    ).to_be_visible()
    steps.shot("06_run_with_retry")
    steps.mark("run page: STEP_UP_FOR_RETRY, then attempt # 2, then Success")


def test_materialize_all_from_the_ui_passes_the_korean_tables_check(demo: DemoServer) -> None:
    loaded_after = demo.wait_until_loaded(timeout=DEMO_READY_TIMEOUT)
    base = demo.base_url
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
        page.set_default_timeout(60_000)
        expect.set_options(timeout=60_000)  # the default 5 s is short on 2 busy cores
        steps = Steps(page)
        steps.mark(f"demo loaded after {loaded_after:.1f}s")
        try:
            keys = backfill_range()
            backfill_id = launch_materialize_all(steps, base, keys)
            runs = wait_backfill_succeeded(steps, demo, backfill_id)
            # The Korean table (unpartitioned) ran in one of the backfill's runs.
            run_id = demo.latest_check(ASSET, "integrity")["execution"]["runId"]
            assert run_id in runs
            rows = target_rows(demo.home, TABLE.target_table)
            see_row_count(steps, base, rows)
            see_check_passed(steps, run_id)
            # GraphQL agrees with the UI (before the retried run below makes a newer one).
            latest = demo.latest_check(ASSET, "integrity")
            assert latest["execution"]["runId"] == run_id
            assert latest["execution"]["status"] == "SUCCEEDED"
            assert latest["materialization"]["runId"] == run_id
            entries = latest["materialization"]["metadataEntries"]
            metadata = {e["label"]: e.get("intValue") for e in entries}
            assert metadata["dagster/row_count"] == rows > 0
            # The partitioned table: one check evaluation per partition of the range, each
            # passed, in the backfill's range run.
            executions = demo.graphql(
                CHECK_EXECUTIONS_QUERY,
                {"key": {"path": [PARTITIONED.asset_name]}, "limit": len(keys)},
            )["assetCheckExecutions"]
            assert {e["evaluation"]["partition"] for e in executions} == set(keys)
            assert all(e["status"] == "SUCCEEDED" and e["runId"] in runs for e in executions)
            # Then the same table from its page, its first attempt losing its connection.
            retried_run = launch_with_a_lost_connection(steps, base, demo)
            see_the_retried_step(steps, base, retried_run)
        except BaseException:
            steps.shot("failure")
            raise
        finally:
            browser.close()
            (ARTIFACTS / "steps.log").write_text("\n".join(steps.log) + "\n", encoding="utf-8")

    # GraphQL agrees that the retried run succeeded.
    retried = demo.graphql(RUN_STATUS_QUERY, {"id": retried_run})["runOrError"]
    assert retried["status"] == "SUCCESS", retried

    assert demo.stop(), (
        f"still running 30 s after SIGTERM: {demo.leftovers}; see {ARTIFACTS / 'demo.log'}"
    )
    # The demo's last line: its PostgreSQL keeps running, and how to stop it.
    last_line = demo.log_tail(1).strip()
    assert last_line.startswith(KEEPS_RUNNING.split("{data_dir}")[0]), last_line
    assert last_line.endswith("stop it with: stagecopy demo --stop"), last_line
