"""Transient failures are Dagster step retries: the run's events show every attempt.

The fault: a session of the test holds `LOCK TABLE items IN ACCESS EXCLUSIVE MODE` on the
source, so the copy's first read of the table waits on that lock (a wait that lasts until the
test lets go, so it cannot be missed); the test then terminates that stagecopy backend
(`pg_terminate_backend`): the attempt loses its connection. The retry waits on the same lock,
which is the moment to look at the target (unchanged: the failed attempt wrote nothing); then
the test lets go and the retry copies.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
import yaml

from stagecopy_dagster import cli
from stagecopy_dagster.assets import build_table_asset
from stagecopy_dagster.build import build_definitions
from stagecopy_dagster.resources import PostgresResource
from stagecopy_dagster.spec import load_spec
from stagecopy_dagster.step_retries import retry_policy
from stagecopy_dagster_tests.copyhelpers import staging_leftovers
from stagecopy_dagster_tests.dghelpers import assets_of, materialize
from stagecopy_dagster_tests.pg import PgPair
from stagecopy_dagster_tests.test_reliability_faults import fingerprint, terminate, wait_until_held

ROWS = 2000
RETRIED = "STEP_UP_FOR_RETRY"
RESTARTED = "STEP_RESTARTED"
FAILED = "STEP_FAILURE"


def _tables(pg: PgPair) -> None:
    """`items` at the source; a stale copy (every tenth row differs) at the target."""
    create = "CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL)"
    fill = f"INSERT INTO items SELECT g, {{v}} FROM generate_series(1, {ROWS}) g"
    pg.source(create, fill.format(v="'v' || g"))
    pg.target(create, fill.format(v="CASE WHEN g % 10 = 0 THEN 'stale' ELSE 'v' || g END"))


def _event_types(events: list[Any]) -> list[str]:
    return [e.event_type_value for e in events]


@contextmanager
def _source_locked(pg: PgPair) -> Iterator[psycopg.Connection]:
    """The source's `items` locked by a session of the test until the block ends."""
    with psycopg.connect(pg.source_admin_url) as holder:
        holder.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        try:
            yield holder
        finally:
            holder.rollback()


def _first_attempt_loses_its_connection(
    pg: PgPair, run: Callable[[], Any], *, retried: bool
) -> tuple[Any, tuple[Any, ...]]:
    """Run `run` in a thread; terminate the copy's source backend once it waits on the lock.

    With `retried`, wait until the next attempt waits on the lock too, and return the target's
    fingerprint taken then (between the attempts). Returns `run`'s result and that fingerprint
    (the one after the run otherwise).
    """
    pool = ThreadPoolExecutor(max_workers=1)
    with pool, _source_locked(pg), psycopg.connect(pg.source_admin_url, autocommit=True) as admin:
        future: Future[Any] = pool.submit(run)
        alive = lambda: not future.done()  # noqa: E731
        first = wait_until_held(admin, ["%"], wait_event_type="Lock", held=False, alive=alive)
        terminate(admin, first)
        between = None
        if retried:
            second = wait_until_held(admin, ["%"], wait_event_type="Lock", held=False, alive=alive)
            assert second != first
            between = fingerprint(pg.target_admin_url, "items")
            assert staging_leftovers(pg) == []
    result = future.result(timeout=120)
    return result, between or fingerprint(pg.target_admin_url, "items")


def test_retry_policy_comes_from_the_spec() -> None:
    spec = load_spec(
        {
            "defaults": {"retries": {"attempts": 5, "delay": "2s"}},
            "tables": [{"source": "public.a"}, {"source": "public.b", "retries": {}}],
        }
    )
    first, second = (retry_policy(t) for t in spec.tables)
    assert (first.max_retries, first.delay) == (4, 2.0)
    assert (first.backoff, first.jitter) == (dg.Backoff.EXPONENTIAL, dg.Jitter.PLUS_MINUS)
    assert (second.max_retries, second.delay) == (2, 1.0)  # the defaults: 3 attempts, 1 s
    assert [build_table_asset(t).op.retry_policy for t in spec.tables] == [first, second]


@pytest.mark.integration
def test_a_lost_connection_is_retried_as_a_dagster_step(pg: PgPair) -> None:
    _tables(pg)
    before = fingerprint(pg.target_admin_url, "items")
    # With a `where`, the first read that waits on the lock is the check that the scope
    # resolves on the source: a lost connection there is transient too, not a spec error.
    entry = {"source": "public.items", "where": "id > 0", "retries": {"attempts": 3, "delay": 0.2}}
    defs = build_definitions(
        {"tables": [entry]}, source_url=pg.source_url, target_url=pg.target_url
    )
    with dg.DagsterInstance.ephemeral() as instance:
        result, between = _first_attempt_loses_its_connection(
            pg, lambda: materialize(defs, instance=instance, raise_on_error=False), retried=True
        )
        types = _event_types(result.all_events)
        retry_events = [e for e in result.all_events if e.event_type_value == RETRIED]
    # The failed attempt left the target as it was, and no staging table.
    assert between == before
    assert result.success, types
    assert (types.count(RETRIED), types.count(RESTARTED), types.count(FAILED)) == (1, 1, 0)
    # The retry's event carries the attempt's error: the lost connection, naming the table.
    error = retry_events[0].event_specific_data.error
    assert error is not None and "public.items" in error.to_string()
    evaluations = result.get_asset_check_evaluations()
    assert [e.passed for e in evaluations] == [True]
    assert fingerprint(pg.target_admin_url, "items") == fingerprint(pg.source_admin_url, "items")
    assert staging_leftovers(pg) == []


@pytest.mark.integration
def test_the_resource_retries_1_means_one_attempt(any_pg: PgPair) -> None:
    """The resource's `retries` (attempts) still applies when the spec sets none."""
    _tables(any_pg)
    before = fingerprint(any_pg.target_admin_url, "items")
    defs = dg.Definitions(
        assets=assets_of(
            build_definitions(
                {"tables": [{"source": "public.items"}]}, source_url="x", target_url="y"
            )
        ),
        resources={
            "source": PostgresResource(url=any_pg.source_url),
            "target": PostgresResource(url=any_pg.target_url, retries=1),
        },
    )
    with dg.DagsterInstance.ephemeral() as instance:
        result, after = _first_attempt_loses_its_connection(
            any_pg,
            lambda: materialize(defs, instance=instance, raise_on_error=False),
            retried=False,
        )
    types = _event_types(result.all_events)
    assert not result.success
    assert (types.count(RETRIED), types.count(FAILED)) == (0, 1), types
    failure = next(e for e in result.all_events if e.event_type_value == FAILED)
    message = failure.step_failure_data.error.message
    # One line naming the table and the cause (no "Exceeded max_retries" wrapper).
    # The connection is lost in whichever source read waits on the lock (the size estimate
    # or the COPY); either way one attempt, one line.
    assert "Failure: public.items: " in message, message
    assert "administrator command" in message or "closed the connection" in message, message
    assert after == before
    assert staging_leftovers(any_pg) == []


@pytest.mark.integration
def test_a_terminal_error_is_not_retried(any_pg: PgPair) -> None:
    spec = {"tables": [{"source": "public.missing", "retries": {"attempts": 5, "delay": 0.1}}]}
    defs = build_definitions(spec, source_url=any_pg.source_url, target_url=any_pg.target_url)
    result = materialize(defs, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    types = _event_types(result.all_events)
    assert (types.count(RETRIED), types.count(FAILED)) == (0, 1), types
    failure = next(e for e in result.all_events if e.event_type_value == FAILED)
    assert "source table public.missing does not exist" in failure.step_failure_data.error.message


@pytest.mark.integration
def test_stagecopy_run_retries_the_step_in_process(
    any_pg: PgPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`stagecopy run` (in process) retries too; the run in `$DAGSTER_HOME` shows the attempts."""
    _tables(any_pg)
    spec_file = tmp_path / "replication.yaml"
    spec_file.write_text(
        yaml.safe_dump(
            {"tables": [{"source": "public.items", "retries": {"attempts": 2, "delay": 0.2}}]}
        )
    )
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("STAGECOPY_SOURCE_URL", any_pg.source_url)
    monkeypatch.setenv("STAGECOPY_TARGET_URL", any_pg.target_url)
    code, _ = _first_attempt_loses_its_connection(
        any_pg, lambda: cli.main(["run", "--spec", str(spec_file)]), retried=True
    )
    assert code == cli.EXIT_OK
    with dg.DagsterInstance.get() as instance:
        [run] = instance.get_runs()
        types = [
            e.dagster_event_type.value for e in instance.all_logs(run.run_id) if e.is_dagster_event
        ]  # type: ignore[union-attr]
    assert (types.count(RETRIED), types.count(RESTARTED), types.count(FAILED)) == (1, 1, 0)
    assert os.environ["DAGSTER_HOME"] == str(home)
