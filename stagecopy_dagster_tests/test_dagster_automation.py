"""Automation built from the spec: the source-change sensor, schedules and the staging clean-up."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from stagecopy_dagster import PostgresResource, build_definitions
from stagecopy_dagster.automation import drop_staging_tables
from stagecopy_dagster.spec import TableSpec
from stagecopy_dagster.translator import StagecopyTranslator
from stagecopy_dagster_tests.dghelpers import materialize
from stagecopy_dagster_tests.pg import PgPair, PgPairFactory

T = TypeVar("T")

FAKE_SOURCE_URL = "postgresql://reader@db.invalid/src"
FAKE_TARGET_URL = "postgresql://writer@db.invalid/tgt"

#: PostgreSQL publishes a backend's table counters at transaction end or, when it flushed less
#: than a second ago, some time later (at the latest when the session ends).
STATS_TIMEOUT_SECONDS = 5.0


def eventually(probe: Callable[[], T | None], *, timeout: float = STATS_TIMEOUT_SECONDS) -> T:
    """Call `probe` until it returns something other than None, for at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        assert time.monotonic() < deadline, "timed out waiting for the statistics"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def pair(pg18: PgPairFactory) -> Iterator[PgPair]:
    """One PostgreSQL 18 pair for the module; tests use their own tables."""
    pair = pg18("dagster_automation")
    try:
        yield pair
    finally:
        pair.drop()


# --- the source-change sensor -------------------------------------------------------------


def counters(pg: PgPair, table: str) -> tuple[int, int, int]:
    with psycopg.connect(pg.source_admin_url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_all_tables "
            "WHERE relid = %s::regclass",
            (table,),
        ).fetchone()
    assert row is not None
    return row


def wait_for_counters(pg: PgPair, table: str, expected: tuple[int, int, int]) -> None:
    eventually(lambda: True if counters(pg, table) == expected else None)


class SensorDriver:
    """Evaluates the sensor the way the daemon would: a fresh context per tick, given a cursor."""

    def __init__(self, defs: dg.Definitions, pg: PgPair, instance: dg.DagsterInstance) -> None:
        self.defs = defs
        self.sensor = defs.resolve_sensor_def("stagecopy_source_changes")
        self.pg = pg
        self.instance = instance

    def context(self, cursor: str | None) -> dg.SensorEvaluationContext:
        # `definitions` lets the tick resolve the sensor's asset selection.
        return dg.build_sensor_context(
            cursor=cursor,
            resources={"source": PostgresResource(url=self.pg.source_url)},
            instance=self.instance,
            definitions=self.defs,
        )

    def tick(self, cursor: str | None) -> Any:
        """The tick's run requests, skip message and new cursor."""
        return self.sensor.evaluate_tick(self.context(cursor))

    def next_request(self, cursor: str | None) -> Any:
        """Tick until a run is requested (the counters of a change may publish late)."""

        def probe() -> Any:
            data = self.tick(cursor)
            return data if data.run_requests else None

        return eventually(probe)


def requested(data: Any) -> list[str]:
    (request,) = data.run_requests
    return sorted(key.to_user_string() for key in request.asset_selection)


def watermark_signature(pg: PgPair, table: str, field: str) -> str:
    with psycopg.connect(pg.source_admin_url, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        query = sql.SQL("SELECT max({})::text, count(*) FROM {}").format(
            sql.Identifier(field), sql.Identifier(table)
        )
        row = conn.execute(query).fetchone()
    return json.dumps(list(row) if row else None)


def test_sensor_requests_only_the_tables_whose_source_changed(pair: PgPair) -> None:
    pair.source(
        "CREATE TABLE quotes (id int PRIMARY KEY, px numeric)",
        "INSERT INTO quotes SELECT g, g FROM generate_series(1, 20) g",
        "CREATE TABLE trades (id int PRIMARY KEY, qty int)",
        "INSERT INTO trades SELECT g, g FROM generate_series(1, 30) g",
        "CREATE TABLE ticks (id int PRIMARY KEY, note text, at timestamptz NOT NULL)",
        "INSERT INTO ticks SELECT g, 'n', '2024-01-01'::timestamptz + g * interval '1 minute' "
        "FROM generate_series(1, 10) g",
    )
    defs = build_definitions(
        {
            "tables": [
                {"source": "public.quotes"},
                {"source": "public.trades"},
                {"source": "public.ticks", "incremental_field": "at"},
            ]
        },
        source_url=pair.source_url,
        target_url=pair.target_url,
    )
    # The first tick must see the set-up's inserts, not a counter still on its way.
    wait_for_counters(pair, "quotes", (20, 0, 0))
    wait_for_counters(pair, "trades", (30, 0, 0))

    with dg.DagsterInstance.ephemeral() as instance:
        driver = SensorDriver(defs, pair, instance)

        first = driver.tick(None)
        assert requested(first) == ["quotes", "ticks", "trades"]
        assert first.run_requests[0].run_key.startswith("stagecopy_source_changes:")
        # Called directly, the sensor returns the same request and moves the context's cursor.
        context = driver.context(None)
        direct = driver.sensor(context)
        assert isinstance(direct, dg.RunRequest)
        assert direct.run_key == first.run_requests[0].run_key
        assert context.cursor == first.cursor
        cursor = json.loads(first.cursor)
        assert set(cursor) == {"quotes", "ticks", "trades"}
        # With an incremental field, the signature is the scope's max watermark (and count).
        assert cursor["ticks"] == watermark_signature(pair, "ticks", "at")

        second = driver.tick(first.cursor)
        assert second.run_requests == []
        assert second.skip_message
        assert second.cursor == first.cursor

        pair.source("UPDATE quotes SET px = px + 1 WHERE id IN (1, 2)")
        changed = driver.next_request(second.cursor)
        assert requested(changed) == ["quotes"]
        # The same change evaluated again gives the same run key (no duplicate run).
        again = driver.tick(second.cursor)
        assert again.run_requests[0].run_key == changed.run_requests[0].run_key
        assert again.cursor == changed.cursor
        # And nothing new after it.
        assert driver.tick(changed.cursor).run_requests == []

        # A different change to the same table: a different run key.
        pair.source("DELETE FROM quotes WHERE id = 3")
        other = driver.next_request(changed.cursor)
        assert requested(other) == ["quotes"]
        assert other.run_requests[0].run_key != changed.run_requests[0].run_key

        # TRUNCATE moves no row counter, but gives the table a new file: also a change.
        pair.source("TRUNCATE trades")
        truncated = driver.next_request(other.cursor)
        assert requested(truncated) == ["trades"]
        other = truncated

        # A newer watermark requests the incremental table alone, whose signature moves.
        pair.source("INSERT INTO ticks VALUES (11, 'n', '2025-06-01 12:00:00+00')")
        moved = driver.next_request(other.cursor)
        assert requested(moved) == ["ticks"]
        assert json.loads(moved.cursor)["ticks"] == watermark_signature(pair, "ticks", "at")
        assert json.loads(moved.cursor)["ticks"] != cursor["ticks"]

        # The watermark (not the stats counters) is what the incremental table is watched by:
        # an update that leaves it alone is not a change.
        pair.source("UPDATE ticks SET note = 'edited' WHERE id = 1")
        time.sleep(0.2)
        assert driver.tick(moved.cursor).run_requests == []


def test_sensor_targets_every_table_and_starts_stopped() -> None:
    defs = build_definitions(
        {"tables": [{"source": "public.a"}, {"source": "s.b", "name": "bee"}]},
        source_url=FAKE_SOURCE_URL,
        target_url=FAKE_TARGET_URL,
    )
    sensor = defs.resolve_sensor_def("stagecopy_source_changes")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert sensor.required_resource_keys == {"source"}
    graph = defs.resolve_asset_graph()
    assert sensor.asset_selection is not None
    assert sensor.asset_selection.resolve(graph) == {dg.AssetKey("a"), dg.AssetKey("bee")}


# --- schedules ------------------------------------------------------------------------------


def test_schedule_per_group_and_cron_targets_its_tables() -> None:
    defs = build_definitions(
        {
            "defaults": {"group": "market", "schedule": "0 * * * *"},
            "tables": [
                {"source": "public.quotes"},
                {"source": "public.trades"},
                {"source": "public.daily", "schedule": "0 6 * * *"},
                {"source": "public.users", "group": "crm", "schedule": None},
            ],
        },
        source_url=FAKE_SOURCE_URL,
        target_url=FAKE_TARGET_URL,
    )
    # The second schedule of a group gets a suffix derived from its cron, stable across loads.
    daily_name = f"market_schedule_{hashlib.sha1(b'0 6 * * *').hexdigest()[:6]}"
    names = sorted(s.name for s in defs.schedules or [])
    assert names == ["market_schedule", daily_name, "stagecopy_cleanup_schedule"]

    hourly = defs.resolve_schedule_def("market_schedule")
    assert hourly.cron_schedule == "0 * * * *"
    assert hourly.default_status == dg.DefaultScheduleStatus.RUNNING
    job = defs.resolve_job_def(hourly.job_name)
    assert job.asset_layer.executable_asset_keys == {dg.AssetKey("quotes"), dg.AssetKey("trades")}
    # The checks of the scheduled tables run with them.
    assert {key.asset_key for key in job.asset_layer.asset_graph.asset_check_keys} == {
        dg.AssetKey("quotes"),
        dg.AssetKey("trades"),
    }

    daily = defs.resolve_schedule_def(daily_name)
    assert daily.cron_schedule == "0 6 * * *"
    daily_job = defs.resolve_job_def(daily.job_name)
    assert daily_job.asset_layer.executable_asset_keys == {dg.AssetKey("daily")}

    everything = defs.resolve_job_def("stagecopy_all")
    assert everything.asset_layer.executable_asset_keys == {
        dg.AssetKey(n) for n in ("quotes", "trades", "daily", "users")
    }


def test_no_schedule_means_only_the_cleanup_schedule() -> None:
    defs = build_definitions(
        {"tables": [{"source": "public.a"}]}, source_url=FAKE_SOURCE_URL, target_url=FAKE_TARGET_URL
    )
    assert [s.name for s in defs.schedules or []] == ["stagecopy_cleanup_schedule"]


def test_check_schedule_job_selects_only_the_checks_of_its_tables() -> None:
    defs = build_definitions(
        {
            "defaults": {"group": "market", "check_schedule": "0 3 * * *"},
            "tables": [
                {"source": "public.quotes", "schedule": "0 * * * *"},
                {"source": "public.trades"},
                {"source": "public.daily", "check_schedule": "30 4 * * *"},
                {"source": "public.users", "check_schedule": None},
            ],
        },
        source_url=FAKE_SOURCE_URL,
        target_url=FAKE_TARGET_URL,
        name="crm",
    )
    second = f"crm_market_check_schedule_{hashlib.sha1(b'30 4 * * *').hexdigest()[:6]}"
    names = sorted(s.name for s in defs.schedules or [])
    assert names == [
        "crm_market_check_schedule",
        second,
        "crm_market_schedule",
        "crm_stagecopy_cleanup_schedule",
    ]
    nightly = defs.resolve_schedule_def("crm_market_check_schedule")
    assert nightly.cron_schedule == "0 3 * * *"
    assert nightly.default_status == dg.DefaultScheduleStatus.RUNNING
    job = defs.resolve_job_def(nightly.job_name)
    assert job.name == "crm_market_check_schedule_job"
    # Only the checks: no asset of the job is executed (nothing is copied).
    assert job.asset_layer.executable_asset_keys == set()
    assert job.asset_layer.asset_graph.asset_check_keys == {
        dg.AssetCheckKey(dg.AssetKey(n), "integrity") for n in ("quotes", "trades")
    }
    daily = defs.resolve_job_def(defs.resolve_schedule_def(second).job_name)
    assert daily.asset_layer.asset_graph.asset_check_keys == {
        dg.AssetCheckKey(dg.AssetKey("daily"), "integrity")
    }


class _Prefixed(StagecopyTranslator):
    def get_asset_spec(self, table: TableSpec) -> dg.AssetSpec:
        spec = super().get_asset_spec(table)
        return spec.replace_attributes(key=spec.key.with_prefix("replica"))


def test_check_schedule_asks_the_translator_for_keys() -> None:
    defs = build_definitions(
        {"tables": [{"source": "public.a", "check_schedule": "0 3 * * *"}]},
        source_url=FAKE_SOURCE_URL,
        target_url=FAKE_TARGET_URL,
        translator=_Prefixed(),
    )
    job = defs.resolve_job_def(defs.resolve_schedule_def("public_check_schedule").job_name)
    assert job.asset_layer.asset_graph.asset_check_keys == {
        dg.AssetCheckKey(dg.AssetKey(["replica", "a"]), "integrity")
    }


def test_check_schedule_runs_the_full_checks_and_copies_nothing(pair: PgPair) -> None:
    """The schedule's job on real PostgreSQL: checks only, whole scope, nothing written.

    A target row changed without its watermark moving is caught (a copy's window would not see
    it), and the target is left exactly as it was.
    """
    pair.source(
        "CREATE TABLE chk_a (id int PRIMARY KEY, v text, updated_at timestamptz NOT NULL)",
        "INSERT INTO chk_a SELECT g, md5(g::text), '2026-01-01'::timestamptz + g * interval "
        "'1 minute' FROM generate_series(1, 500) g",
        "CREATE TABLE chk_b (id int PRIMARY KEY, v text)",
        "INSERT INTO chk_b SELECT g, md5(g::text) FROM generate_series(1, 300) g",
    )
    spec = {
        "defaults": {"group": "nightly", "check_schedule": "0 3 * * *"},
        "tables": [
            {"source": "public.chk_a", "incremental_field": "updated_at"},
            {"source": "public.chk_b"},
        ],
    }
    defs = build_definitions(spec, source_url=pair.source_url, target_url=pair.target_url)
    instance = dg.DagsterInstance.ephemeral()
    assert materialize(defs, instance=instance).success
    # An old row changes at the source, its watermark left behind; one row goes at the target.
    pair.source("UPDATE chk_a SET v = 'changed' WHERE id = 7")
    pair.target("DELETE FROM chk_b WHERE id = 9")
    before = pair.target_rows("SELECT count(*) FROM chk_b")

    schedule = defs.resolve_schedule_def("nightly_check_schedule")
    job = defs.resolve_job_def(schedule.job_name)
    result = job.execute_in_process(instance=instance, raise_on_error=False)

    assert result.get_asset_materialization_events() == []
    assert not [e for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"]
    checks = {c.asset_key.to_user_string(): c for c in result.get_asset_check_evaluations()}
    assert set(checks) == {"chk_a", "chk_b"}
    assert not checks["chk_a"].passed
    assert checks["chk_a"].metadata["changed_rows"].value == 1
    assert not checks["chk_b"].passed
    assert checks["chk_b"].metadata["missing_rows"].value == 1
    assert pair.target_rows("SELECT count(*) FROM chk_b") == before
    assert pair.target_rows("SELECT v FROM chk_a WHERE id = 7") != [("changed",)]


# --- staging clean-up ---------------------------------------------------------------------


def staging_name(epoch: float) -> str:
    return f"_stagecopy_{int(epoch):010d}_{secrets.token_hex(6)}"


def target_tables(pg: PgPair) -> set[str]:
    return {
        r[0]
        for r in pg.target_rows(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
        )
    }


def test_drop_staging_tables_drops_old_ones_and_keeps_fresh_locked_and_foreign(
    pair: PgPair,
) -> None:
    now = time.time()
    old = staging_name(now - 2 * 86400)
    old_in_schema = staging_name(now - 2 * 86400)
    old_locked = staging_name(now - 2 * 86400)
    fresh = staging_name(now - 60)
    pair.target(
        *(f"CREATE UNLOGGED TABLE public.{n} (id int)" for n in (old, old_locked, fresh)),
        "CREATE SCHEMA IF NOT EXISTS sales",
        f"CREATE UNLOGGED TABLE sales.{old_in_schema} (id int)",
        # Not stagecopy's: the prefix alone does not make a staging table.
        "CREATE TABLE public._stagecopy_notes (id int)",
    )
    target = PostgresResource(url=pair.target_url)
    # A running copy holds its staging table: never drop it, however old its name says it is.
    with psycopg.connect(pair.target_admin_url) as holder:
        holder.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(
                sql.Identifier("public", old_locked)
            )
        )
        dropped, kept = drop_staging_tables(target, max_age_hours=6)
    assert sorted(dropped) == sorted([f"public.{old}", f"sales.{old_in_schema}"])
    assert {f"public.{fresh}", f"public.{old_locked}", "public._stagecopy_notes"} <= set(kept)
    tables = target_tables(pair)
    assert f"public.{old}" not in tables and f"sales.{old_in_schema}" not in tables
    assert {f"public.{fresh}", f"public.{old_locked}", "public._stagecopy_notes"} <= tables

    # Unlocked now, the old one goes on the next pass; the fresh one stays.
    dropped, _ = drop_staging_tables(target, max_age_hours=6)
    assert dropped == [f"public.{old_locked}"]
    assert f"public.{fresh}" in target_tables(pair)


def test_cleanup_job_drops_leftover_staging_tables(pair: PgPair) -> None:
    now = time.time()
    old, fresh = staging_name(now - 2 * 86400), staging_name(now)
    pair.target(f"CREATE UNLOGGED TABLE {old} (id int)", f"CREATE UNLOGGED TABLE {fresh} (id int)")
    defs = build_definitions(
        {"tables": [{"source": "public.a"}]}, source_url=pair.source_url, target_url=pair.target_url
    )
    job = defs.resolve_job_def("stagecopy_cleanup")
    result = job.execute_in_process(resources=defs.resources)
    assert result.success
    assert result.output_for_node("drop_leftover_staging") == [f"public.{old}"]
    (materialization,) = [e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = materialization.step_output_data.metadata
    assert metadata["dropped"].value == 1
    assert metadata["dropped_tables"].value == f"public.{old}"
    tables = target_tables(pair)
    assert f"public.{old}" not in tables
    assert f"public.{fresh}" in tables

    # With a shorter age limit (run config), the fresh one goes too.
    result = job.execute_in_process(
        resources=defs.resources,
        run_config={"ops": {"drop_leftover_staging": {"config": {"max_age_hours": 0}}}},
    )
    assert f"public.{fresh}" in result.output_for_node("drop_leftover_staging")
    assert f"public.{fresh}" not in target_tables(pair)
