"""`stagecopy_all` beyond one machine: Dagster's celery executor, two worker processes.

The deployment of docs/deployment.md in small: a Redis broker (Debian's `redis-server`, started
here on a free port), the run and event storage in PostgreSQL (dagster-postgres, a database on
the test cluster), two `celery worker` processes that each run one step at a time, and the
connection URLs in the environment (`dg.EnvVar`), as they would be secrets in a cluster.

The same spec is first run on the multiprocess executor; the celery run into the emptied
target must leave exactly the same rows (count and row hash per table) and honor the pool
limit (two pools, one copy each: never two steps of one pool at once in the run's event log,
though two workers are free), with both workers used.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
from psycopg import sql

from stagecopy_dagster_tests.pg import PgPair

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        not os.environ.get("STAGECOPY_SLOW_TESTS"),
        reason="Redis, two celery workers and two Dagster runs, minutes; "
        "set STAGECOPY_SLOW_TESTS=1",
    ),
]

REPO = Path(__file__).resolve().parents[1]
TABLES = 6

POOL_LIMIT = 1
#: Two pools, as for two databases: each lets one copy run at a time, so two steps run at once
#: (one per pool), on the two workers, and never two of one pool.
POOLS = {
    "stagecopy_c0": "db_a",
    "stagecopy_c1": "db_a",
    "stagecopy_c2": "db_a",
    "stagecopy_c3": "db_b",
    "stagecopy_c4": "db_b",
    "stagecopy_c5_copy": "db_b",
}
SPEC = """
tables:
  - source: public.c0
    pool: db_a
  - source: public.c1
    mode: sync
    pool: db_a
  - source: public.c2
    where: "id % 3 <> 0"
    mode: sync
    pool: db_a
  - source: public.c3
    incremental_field: updated_at
    pool: db_b
  - source: public.c4
    mode: replace
    pool: db_b
  - source: public.c5
    name: c5_copy
    target: public.c5_copy
    pool: db_b
"""

JOB_MODULE = """
import os

import dagster as dg
from dagster_celery import celery_executor

from stagecopy_dagster import build_definitions


def multiprocess_job():
    return build_definitions(os.environ["STAGECOPY_SPEC"]).resolve_job_def("stagecopy_all")


def celery_job():
    defs = dg.Definitions.merge(
        build_definitions(os.environ["STAGECOPY_SPEC"]), dg.Definitions(executor=celery_executor)
    )
    return defs.resolve_job_def("stagecopy_all")
"""

RUN_SCRIPT = """
import os
import sys

import dagster as dg

import celery_jobs

if __name__ == "__main__":
    if sys.argv[1] == "celery":
        job = celery_jobs.celery_job
        broker = os.environ["CELERY_BROKER"]
        execution = {"broker": broker, "backend": broker}
    else:
        job = celery_jobs.multiprocess_job
        execution = {"multiprocess": {"max_concurrent": 4}}
    with dg.DagsterInstance.get() as instance:
        run_config = {"execution": {"config": execution}}
        with dg.execute_job(
            dg.reconstructable(job), instance=instance, run_config=run_config
        ) as result:
            print(f"RUN {result.run_id}", flush=True)
            sys.exit(0 if result.success else 1)
"""

WORKER_CONFIG = """
import os

broker_url = os.environ["CELERY_BROKER"]
result_backend = os.environ["CELERY_BROKER"]
# One task at a time per worker, taken only when the worker is free: a second step in
# flight goes to the other worker.
worker_prefetch_multiplier = 1
task_acks_late = True
"""

INSTANCE_YAML = f"""
storage:
  postgres:
    postgres_url:
      env: STAGECOPY_DAGSTER_PG_URL
concurrency:
  pools:
    default_limit: {POOL_LIMIT}
telemetry:
  enabled: false
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _redis(workdir: Path) -> Iterator[str]:
    exe = shutil.which("redis-server")
    assert exe, "redis-server is not installed (apt-get install redis-server; .ci/run does)"
    port = _free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=workdir,
        stdout=(workdir / "redis.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "redis did not start"
                time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextmanager
def _workers(workdir: Path, env: dict[str, str], count: int) -> Iterator[list[str]]:
    """`count` celery worker processes (solo pool: each runs one step at a time itself)."""
    procs: list[subprocess.Popen[bytes]] = []
    names = [f"stagecopy{i}" for i in range(count)]
    logs = [workdir / f"worker{i}.log" for i in range(count)]
    try:
        for name, log in zip(names, logs, strict=True):
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "celery",
                        "-A",
                        "dagster_celery.app",
                        "worker",
                        "-Q",
                        "dagster",
                        "--pool",
                        "solo",
                        "-n",
                        f"{name}@%h",
                        "--without-gossip",
                        "--without-mingle",
                        "-l",
                        "INFO",
                    ],
                    cwd=workdir,
                    env=env,
                    stdout=log.open("w"),
                    stderr=subprocess.STDOUT,
                )
            )
        deadline = time.monotonic() + 300
        for proc, log in zip(procs, logs, strict=True):
            while " ready." not in log.read_text(errors="replace"):
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "celery worker not ready"
                time.sleep(0.2)
        yield names
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _seed(pg: PgPair) -> None:
    statements: list[str] = []
    for i in range(TABLES):
        statements += [
            f"CREATE TABLE c{i} (id int PRIMARY KEY, n int NOT NULL, v text, "
            "amount numeric(12, 2), doc jsonb, updated_at timestamptz NOT NULL)",
            f"INSERT INTO c{i} SELECT g, g * {i + 1}, '행 ' || g || E'\\t' || md5(g::text), "
            "g / 3.0, jsonb_build_object('g', g), '2026-01-01'::timestamptz + g * interval '1 s' "
            "FROM generate_series(1, 3000) g",
        ]
    pg.source(*statements)


def _targets() -> list[str]:
    return ["c0", "c1", "c2", "c3", "c4", "c5_copy"]


def _digests(pg: PgPair) -> dict[str, list[tuple[object, ...]]]:
    return {
        t: pg.target_rows(f"SELECT count(*), md5(string_agg(t::text, ',' ORDER BY id)) FROM {t} t")
        for t in _targets()
    }


def _peak_steps(logs: list[dg.EventLogEntry], pool: str) -> int:
    """The most steps of `pool` in flight at one time, from their start and end events."""
    edges: list[tuple[float, int]] = []
    for entry in logs:
        event = entry.dagster_event
        if event is None or entry.step_key is None or POOLS[entry.step_key] != pool:
            continue
        if event.event_type_value == "STEP_START":
            edges.append((entry.timestamp, 1))
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            edges.append((entry.timestamp, -1))
    assert sum(1 for _, step in edges if step == 1) == TABLES // 2
    in_flight = peak = 0
    for _, step in sorted(edges):  # an end sorts before a start at the same instant
        in_flight += step
        peak = max(peak, in_flight)
    return peak


def _run(kind: str, workdir: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(
        [sys.executable, "run_job.py", kind],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=800,
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RUN "))
    return line.split()[1]


def test_celery_run_equals_a_multiprocess_run_and_honors_pools(
    any_pg: PgPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(any_pg)
    storage_db = f"sc_dagster_{secrets.token_hex(4)}"
    storage_url = any_pg.cluster.create_database(storage_db).replace(
        "postgresql://", "postgresql+psycopg2://", 1
    )
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    (tmp_path / "replication.yaml").write_text(textwrap.dedent(SPEC))
    (tmp_path / "celery_jobs.py").write_text(JOB_MODULE)
    (tmp_path / "run_job.py").write_text(RUN_SCRIPT)
    (tmp_path / "dagster_celery_config.py").write_text(WORKER_CONFIG)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("STAGECOPY_", "DAGSTER_", "PG"))
    }
    env.update(
        DAGSTER_HOME=str(home),
        STAGECOPY_DAGSTER_PG_URL=storage_url,
        STAGECOPY_SOURCE_URL=any_pg.source_url,
        STAGECOPY_TARGET_URL=any_pg.target_url,
        STAGECOPY_SPEC=str(tmp_path / "replication.yaml"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), str(REPO), env.get("PYTHONPATH")])),
    )
    try:
        _run("multiprocess", tmp_path, env)
        multiprocess = _digests(any_pg)
        for table in ("c0", "c1", "c3", "c4"):
            assert multiprocess[table] == any_pg.source_rows(
                f"SELECT count(*), md5(string_agg(t::text, ',' ORDER BY id)) FROM {table} t"
            )
        assert multiprocess["c2"][0][0] == 2000  # the scope: id % 3 <> 0

        any_pg.target(*[f"DROP TABLE {t}" for t in _targets()])
        with _redis(tmp_path) as broker:
            env["CELERY_BROKER"] = broker
            with _workers(tmp_path, env, 2) as workers:
                run_id = _run("celery", tmp_path, env)
        assert _digests(any_pg) == multiprocess

        monkeypatch.setenv("STAGECOPY_DAGSTER_PG_URL", storage_url)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            logs = instance.all_logs(run_id)
    finally:
        with any_pg.cluster.connect() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(storage_db)
                )
            )
    checks = [
        e.dagster_event.asset_check_evaluation_data
        for e in logs
        if e.dagster_event is not None
        and e.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert len(checks) == TABLES
    assert all(c.passed for c in checks)
    # Both workers ran steps (the first step of each pool starts at once, and a busy worker
    # takes no second task).
    ran_on = {
        str(e.dagster_event.engine_event_data.metadata.get("Celery worker"))
        for e in logs
        if e.dagster_event is not None
        and e.dagster_event.event_type_value == "ENGINE_EVENT"
        and e.dagster_event.engine_event_data is not None
    }
    for name in workers:
        assert any(name in w for w in ran_on), (name, ran_on)
    # Never more than POOL_LIMIT steps of a pool at once, though two workers were free.
    for pool in ("db_a", "db_b"):
        assert _peak_steps(logs, pool) == POOL_LIMIT
