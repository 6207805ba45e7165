"""Concurrency: runs of one table serialize, writers during a copy cannot fool the check, and a
Dagster run of fifty tables keeps the number of copying sessions in bounds.

stagecopy runs as the least-privilege roles; the superuser only writes to the source (the
"application" changing rows during a copy) and watches `pg_stat_activity`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, LiteralString, cast

import dagster as dg
import psycopg
import pytest

from stagecopy_dagster import build_definitions, catalog, runner
from stagecopy_dagster.resources import PostgresResource
from stagecopy_dagster.runner import Replication
from stagecopy_dagster_tests.copyhelpers import staging_leftovers, table_spec
from stagecopy_dagster_tests.pg import PgPair

#: How many stagecopy sessions are open, per database, and how many wait on a lock.
_SESSIONS = (
    "SELECT datname, count(*), count(*) FILTER (WHERE wait_event = 'advisory') "
    "FROM pg_stat_activity WHERE application_name = 'stagecopy' GROUP BY datname"
)


def fingerprint(url: str, relation: str) -> tuple[Any, ...]:
    """Row count and an md5 over every row's text, in key order (`id`)."""
    query = (
        "SELECT count(*), md5(coalesce(string_agg(md5(t::text), '' ORDER BY id), '')) "
        f"FROM {relation} t"
    )
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(cast(LiteralString, query)).fetchone()
    assert row is not None
    return tuple(row)


def same_rows(pg: PgPair, source: str, target: str | None = None) -> bool:
    return fingerprint(pg.source_admin_url, source) == fingerprint(
        pg.target_admin_url, target or source
    )


class SessionSampler:
    """Samples stagecopy's sessions per database in a background thread until stopped."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.max_sessions: dict[str, int] = {}
        self.max_waiting: dict[str, int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="session-sampler", daemon=True)

    def _run(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            while not self._stop.is_set():
                for db, sessions, waiting in conn.execute(_SESSIONS).fetchall():
                    self.max_sessions[db] = max(self.max_sessions.get(db, 0), sessions)
                    self.max_waiting[db] = max(self.max_waiting.get(db, 0), waiting)
                self.samples += 1
                time.sleep(0.002)

    @contextmanager
    def running(self) -> Iterator[SessionSampler]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=10)


def resources(pg: PgPair, **target: Any) -> tuple[PostgresResource, PostgresResource]:
    target.setdefault("lock_timeout", "30s")
    return PostgresResource(url=pg.source_url), PostgresResource(url=pg.target_url, **target)


def run_at_once(n: int, fn: Callable[[], Replication]) -> list[Replication]:
    """Start `n` calls of `fn` in threads at the same moment; return their results."""
    barrier = threading.Barrier(n)

    def go() -> Replication:
        barrier.wait(timeout=30)
        return fn()

    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(go) for _ in range(n)]
        return [f.result(timeout=120) for f in futures]


# --- runs of the same table ----------------------------------------------------------------------


@pytest.mark.integration
def test_concurrent_runs_of_one_table_serialize(pg: PgPair) -> None:
    pg.source(
        "CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL, n numeric(12,2))",
        "INSERT INTO items SELECT g, repeat(md5(g::text), 2), g * 1.5 "
        "FROM generate_series(1, 20000) g",
    )
    spec = table_spec({"source": "public.items"})
    admin = pg.cluster.url()

    # Two runs onto an empty target: one creates and fills, the other finds nothing to do.
    with SessionSampler(admin).running() as sampler:
        first = run_at_once(2, lambda: runner.replicate(spec, *resources(pg)))
    assert sorted(r.result.created_table for r in first) == [False, True]
    late = next(r.result for r in first if not r.result.created_table)
    assert (late.path, late.inserted, late.updated) == ("diff", 0, 0)

    # Four runs after a change: exactly one applies it, the three others find it applied.
    pg.source("UPDATE items SET n = n + 1 WHERE id % 100 = 0", "DELETE FROM items WHERE id < 11")
    with SessionSampler(admin).running() as sampler2:
        second = run_at_once(4, lambda: runner.replicate(spec, *resources(pg)))
    assert sorted(r.result.updated for r in second) == [0, 0, 0, 200]
    assert all(r.result.inserted == 0 for r in second)

    for done in (*first, *second):
        assert done.report is not None and done.report.passed, done.report
    # The runs overlapped and queued on the per-target advisory lock, not on each other's rows.
    waited = max(
        sampler.max_waiting.get(pg.target_db, 0), sampler2.max_waiting.get(pg.target_db, 0)
    )
    assert waited >= 1, (sampler.max_waiting, sampler2.max_waiting)
    # merge keeps the ten rows deleted at the source; everything else equals the source.
    assert same_rows(pg, "items", "(SELECT * FROM items WHERE id >= 11)")
    assert staging_leftovers(pg) == []


@pytest.mark.integration
def test_a_run_with_an_older_snapshot_does_not_overwrite_a_newer_run(
    any_pg: PgPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run B reads the source, is slow to reach the target; run A reads newer rows and commits
    first. B must not then write its older rows over A's.

    B's delay is made deterministic by slowing the one catalog call that sits between its
    source snapshot and its target lock (`catalog.server_version` on the target).
    """
    any_pg.source(
        "CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL)",
        "INSERT INTO items SELECT g, 'v1' FROM generate_series(1, 100) g",
    )
    spec = table_spec({"source": "public.items"})
    runner.replicate(spec, *resources(any_pg))
    real = catalog.server_version
    target_db = any_pg.target_db
    b_has_read = threading.Event()

    def slow_for_b(conn: psycopg.Connection) -> int:
        if threading.current_thread().name == "run-b" and conn.info.dbname == target_db:
            b_has_read.set()
            time.sleep(1.5)
        return real(conn)

    monkeypatch.setattr(catalog, "server_version", slow_for_b)
    outcome: dict[str, Replication] = {}
    run_b = threading.Thread(
        target=lambda: outcome.update(b=runner.replicate(spec, *resources(any_pg))), name="run-b"
    )
    run_b.start()
    assert b_has_read.wait(timeout=30)
    any_pg.source("UPDATE items SET v = 'v2'")
    outcome["a"] = runner.replicate(spec, *resources(any_pg))
    run_b.join(timeout=60)
    assert outcome["a"].result.updated == 100
    assert any_pg.target_rows("SELECT DISTINCT v FROM items") == [("v2",)]


@pytest.mark.integration
def test_writer_during_the_copy_cannot_fail_the_check(any_pg: PgPair) -> None:
    any_pg.source(
        "CREATE TABLE events (id bigint PRIMARY KEY, v text NOT NULL, touched int NOT NULL)",
        "INSERT INTO events SELECT g, repeat(md5(g::text), 3), 0 FROM generate_series(1, 100000) g",
    )
    spec = table_spec({"source": "public.events", "mode": "sync"})
    stop = threading.Event()
    commits: list[float] = []

    def write() -> None:
        with psycopg.connect(any_pg.source_admin_url, autocommit=True) as conn:
            i = 0
            while not stop.is_set():
                i += 1
                conn.execute("INSERT INTO events VALUES (%s, 'new', 0)", (1_000_000 + i,))
                conn.execute(
                    "UPDATE events SET touched = touched + 1 WHERE id = %s", (1 + i * 997 % 100000,)
                )
                commits.append(time.monotonic())
                time.sleep(0.005)

    writer = threading.Thread(target=write, name="source-writer")
    writer.start()
    try:
        time.sleep(0.05)
        started = time.monotonic()
        done = runner.replicate(spec, *resources(any_pg))
        ended = time.monotonic()
    finally:
        stop.set()
        writer.join(timeout=30)
    during = [t for t in commits if started <= t <= ended]
    assert len(during) >= 10, f"the writer committed only {len(during)} times during the copy"
    # The check read the copy's own snapshot: it passes although the source kept changing.
    report = done.report
    assert report is not None and report.same_snapshot and report.passed, report
    assert report.source_rows == done.result.rows_copied == report.target_rows
    # A check on its own reads the source now, and honestly reports what changed since.
    later = runner.verify(spec, *resources(any_pg))
    assert not later.passed and not later.same_snapshot
    assert later.missing_rows + later.changed_rows > 0
    # The next copy catches up.
    again = runner.replicate(spec, *resources(any_pg))
    assert again.report is not None and again.report.passed
    assert runner.verify(spec, *resources(any_pg)).passed
    assert staging_leftovers(any_pg) == []


# --- fifty tables in one Dagster run -------------------------------------------------------------

TABLES = 50
POOL_LIMIT = 3


def _fifty_tables(pg: PgPair) -> dict[str, Any]:
    statements: list[str] = []
    for i in range(TABLES):
        statements += [
            f"CREATE TABLE t{i:02d} (id int PRIMARY KEY, v text, n int)",
            f"INSERT INTO t{i:02d} SELECT g, md5(g::text), g * {i} FROM generate_series(1, 50) g",
        ]
    pg.source(*statements)
    return {"tables": [{"source": f"public.t{i:02d}"} for i in range(TABLES)]}


@pytest.mark.integration
def test_fifty_tables_in_one_dagster_run(any_pg: PgPair) -> None:
    """Every table succeeds in one run, and stagecopy never holds more than the pool limit of
    sessions per database.

    `dg.materialize` uses the in-process executor, which runs one step at a time, so this proves
    the bound (and that fifty copies share one run without interfering), not Dagster's pool
    scheduling; `test_pool_limits_parallel_copies` covers that with the multiprocess executor.
    The instance is the in-memory one: an on-disk test instance costs about 2 s more per step
    here, and pools would not change anything for a serial executor.
    """
    spec = _fifty_tables(any_pg)
    defs = build_definitions(spec, source_url=any_pg.source_url, target_url=any_pg.target_url)
    assets = [
        a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition) and a.is_materializable
    ]
    assert len(assets) == TABLES and {a.op.pool for a in assets} == {"stagecopy"}
    instance = dg.DagsterInstance.ephemeral()
    with SessionSampler(any_pg.cluster.url()).running() as sampler:
        result = dg.materialize(assets, resources=defs.resources, instance=instance)
    assert result.success
    assert len(result.get_asset_materialization_events()) == TABLES
    checks = result.get_asset_check_evaluations()
    assert len(checks) == TABLES and all(c.passed for c in checks)
    assert sampler.samples > 10
    for db in (any_pg.source_db, any_pg.target_db):
        assert 1 <= sampler.max_sessions.get(db, 0) <= POOL_LIMIT, sampler.max_sessions
    for i in (0, 17, 49):
        assert same_rows(any_pg, f"t{i:02d}")
    assert staging_leftovers(any_pg) == []


# --- Dagster pools with parallel steps (slow: opt in) --------------------------------------------

POOL_TABLES = 8
_POOL_JOB_MODULE = """
import os
import subprocess
import sys
from stagecopy_dagster import build_definitions


def pool_job():
    tables = int(os.environ["POOL_TABLES"])
    defs = build_definitions(
        {"tables": [{"source": f"public.t{i:02d}"} for i in range(tables)]},
        source_url=os.environ["POOL_SOURCE_URL"],
        target_url=os.environ["POOL_TARGET_URL"],
    )
    return defs.resolve_job_def("stagecopy_all")
"""
_POOL_RUN_SCRIPT = """
import sys
import dagster as dg
import pool_job_module

if __name__ == "__main__":
    overrides = {"concurrency": {"pools": {"default_limit": int(sys.argv[1])}}}
    executor = {"multiprocess": {"max_concurrent": int(sys.argv[2])}}
    with dg.instance_for_test(overrides=overrides) as instance:
        with dg.execute_job(
            dg.reconstructable(pool_job_module.pool_job),
            instance=instance,
            run_config={"execution": {"config": executor}},
        ) as result:
            sys.exit(0 if result.success else 1)
"""


def _lock_waiters(admin_url: str) -> int:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'stagecopy' AND wait_event_type = 'Lock'"
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("STAGECOPY_SLOW_TESTS"),
    reason="one to two minutes of Dagster step subprocesses; set STAGECOPY_SLOW_TESTS=1",
)
def test_pool_limits_parallel_copies(any_pg: PgPair, tmp_path: Path) -> None:
    """With the multiprocess executor (8 parallel steps allowed) and a pool limit of 2 on the
    instance, exactly 2 tables copy at once.

    Copies of small tables are over long before the next step process has started, so the test
    makes them wait: an admin session holds every target table, the first steps block in their
    `LOCK TABLE`, and `pg_stat_activity` shows how many copies are in flight. Two are, a third
    never joins them while they wait, and after the admin lets go every table is copied.

    The job runs in a child Python (`execute_job` needs a reconstructable job and a
    `__main__` guard for its step processes).
    """
    statements: list[str] = []
    stale: list[str] = []
    for i in range(POOL_TABLES):
        create = f"CREATE TABLE t{i:02d} (id int PRIMARY KEY, v text)"
        statements += [
            create,
            f"INSERT INTO t{i:02d} SELECT g, md5(g::text) FROM generate_series(1, 1000) g",
        ]
        stale += [create, f"INSERT INTO t{i:02d} VALUES (1, 'stale')"]
    any_pg.source(*statements)
    any_pg.target(*stale)
    (tmp_path / "pool_job_module.py").write_text(_POOL_JOB_MODULE)
    (tmp_path / "run_pool.py").write_text(_POOL_RUN_SCRIPT)
    env = {
        **os.environ,
        "POOL_TABLES": str(POOL_TABLES),
        "POOL_SOURCE_URL": any_pg.source_url,
        "POOL_TARGET_URL": any_pg.target_url,
    }
    tables = ", ".join(f"t{i:02d}" for i in range(POOL_TABLES))
    log = tmp_path / "run.log"
    with (
        SessionSampler(any_pg.cluster.url()).running() as sampler,
        log.open("w") as out,
        psycopg.connect(any_pg.target_admin_url) as holder,
    ):
        holder.execute(f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE")  # type: ignore[arg-type]
        proc = subprocess.Popen(
            [sys.executable, "run_pool.py", "2", str(POOL_TABLES)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            # Starting the run and its first step processes takes a while.
            deadline = time.monotonic() + 600
            while _lock_waiters(any_pg.target_admin_url) < 1:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
            # The first two steps start together; the resource's lock_timeout is 30 s, so
            # let go well before the first of them gives up.
            deadline = time.monotonic() + 20
            while _lock_waiters(any_pg.target_admin_url) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            in_flight = _lock_waiters(any_pg.target_admin_url)
            time.sleep(2)  # a third step would have joined by now if the pool let it
            still = _lock_waiters(any_pg.target_admin_url)
        finally:
            holder.rollback()
        returncode = proc.wait(timeout=900)
    output = log.read_text()
    assert returncode == 0, output[-3000:]
    assert (in_flight, still) == (2, 2)
    assert "Step blocked by limit for pool stagecopy" in output
    for db in (any_pg.source_db, any_pg.target_db):
        assert sampler.max_sessions.get(db, 0) == 2, sampler.max_sessions
    for i in range(POOL_TABLES):
        assert same_rows(any_pg, f"t{i:02d}")


@pytest.mark.integration
def test_copy_into_a_schema_another_copy_is_creating_waits_and_succeeds(any_pg: PgPair) -> None:
    """Tables copied side by side into a new schema (`stagecopy run --jobs N`): while one copy
    has created the schema but not committed, another finds no schema, waits for the first
    to commit, and then copies into the schema it made, instead of failing on the catalog's
    unique name.

    The first copy is played by an admin session holding the schema's lock the same way; the
    copy under test is seen waiting in `pg_stat_activity` before the admin commits.
    """
    any_pg.source(
        "CREATE TABLE fresh (id int PRIMARY KEY, v text)",
        "INSERT INTO fresh SELECT g, md5(g::text) FROM generate_series(1, 100) g",
    )
    spec = table_spec({"source": "public.fresh", "target": "newschema.fresh"})
    with psycopg.connect(any_pg.target_admin_url) as admin:
        admin.execute(
            "SELECT pg_catalog.pg_advisory_xact_lock("
            "hashtextextended('stagecopy-schema:newschema', 0))"
        )
        admin.execute("CREATE SCHEMA newschema AUTHORIZATION stagecopy_writer")
        with ThreadPoolExecutor(max_workers=1) as pool:
            copy = pool.submit(lambda: runner.replicate(spec, *resources(any_pg)))
            deadline = time.monotonic() + 120
            while _lock_waiters(any_pg.target_admin_url) < 1:
                assert not copy.done(), copy.result()
                assert time.monotonic() < deadline
                time.sleep(0.1)
            admin.commit()
            done = copy.result(timeout=120)
    assert done.result.rows_copied == 100
    assert done.result.created_table
    assert any_pg.target_rows("SELECT count(*) FROM newschema.fresh") == [(100,)]
