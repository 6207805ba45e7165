"""`stagecopy run/check --jobs N`: tables in parallel on Dagster's multiprocess executor.

Run as a user runs it (a subprocess); the pool limit of the instance still bounds how many
tables copy at once, which the run's own event log shows.
"""

from __future__ import annotations

import itertools
import os
import re
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from stagecopy_dagster_tests.pg import PgPair
from stagecopy_dagster_tests.test_cli import clean_env, output, pg_env, stagecopy, write_spec

TABLES = 4
#: Each table's step is a Dagster step process that imports Dagster and rebuilds the
#: definitions: a minute or more per test on a busy 2-core machine.
slow_only = pytest.mark.skipif(
    not os.environ.get("STAGECOPY_SLOW_TESTS"),
    reason="Dagster step subprocesses, a minute or more; set STAGECOPY_SLOW_TESTS=1",
)


def _seed(pg: PgPair) -> str:
    statements: list[str] = []
    for i in range(TABLES):
        statements += [
            f"CREATE TABLE j{i} (id int PRIMARY KEY, v text, n numeric)",
            f"INSERT INTO j{i} SELECT g, md5(g::text), g * {i + 1}.5 "
            "FROM generate_series(1, 2000) g",
        ]
    pg.source(*statements)
    return "tables:\n" + "".join(f"  - source: public.j{i}\n" for i in range(TABLES))


def _same(pg: PgPair, table: str) -> bool:
    digest = f"SELECT count(*), md5(string_agg(t::text, ',' ORDER BY id)) FROM {table} t"
    return pg.source_rows(digest) == pg.target_rows(digest)


def _run_id(stdout: str) -> str:
    match = re.search(r"\(run ([0-9a-f-]{36})\)", stdout)
    assert match, stdout
    return match.group(1)


@pytest.mark.slow
@pytest.mark.timeout(600)
@slow_only
def test_jobs_two_copies_every_table_and_checks_pass(any_pg: PgPair, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, _seed(any_pg))
    env = pg_env(any_pg, tmp_path)
    run = stagecopy("run", "--spec", str(spec), "--jobs", "2", env=env, cwd=tmp_path, timeout=540)
    assert run.returncode == 0, output(run)
    assert f"stagecopy: {TABLES} tables: ok" in run.stdout
    for i in range(TABLES):
        assert f"j{i}: integrity passed" in run.stdout
        assert _same(any_pg, f"j{i}")
    # The checks alone, in parallel too; a damaged target fails its check.
    any_pg.target("DELETE FROM j1 WHERE id = 5")
    check = stagecopy(
        "check", "--spec", str(spec), "--jobs", "2", env=env, cwd=tmp_path, timeout=540
    )
    assert check.returncode == 1, output(check)
    assert "j1: integrity FAILED" in check.stdout
    assert "j0: integrity passed" in check.stdout
    assert f"stagecopy: {TABLES} checks: FAILED" in check.stdout


def test_jobs_bad_value_is_a_usage_error(tmp_path: Path) -> None:
    result = stagecopy("run", "--jobs", "0", env=clean_env(), cwd=tmp_path)
    assert result.returncode == 2
    assert "'0' is not a positive number" in result.stderr


@pytest.mark.slow
@pytest.mark.timeout(600)
@slow_only
def test_jobs_honors_a_pool_limit_of_one(any_pg: PgPair, tmp_path: Path) -> None:
    """`--jobs 4` with `default_limit: 1` on the instance: one table at a time.

    The run's event log (in `$DAGSTER_HOME`) shows the executor holding steps back for the
    pool, and no two steps' [start, end] intervals overlap.
    """
    spec = write_spec(tmp_path, _seed(any_pg))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        textwrap.dedent(
            """
            concurrency:
              pools:
                default_limit: 1
            telemetry:
              enabled: false
            """
        )
    )
    env = pg_env(any_pg, tmp_path, DAGSTER_HOME=str(home))
    run = stagecopy("run", "--spec", str(spec), "--jobs", "4", env=env, cwd=tmp_path, timeout=540)
    assert run.returncode == 0, output(run)
    for i in range(TABLES):
        assert _same(any_pg, f"j{i}")

    with dg.DagsterInstance.from_config(str(home)) as instance:
        logs = instance.all_logs(_run_id(run.stdout))
    assert any("blocked by limit for pool stagecopy" in (e.message or "") for e in logs)
    started: dict[str, float] = {}
    spans: list[tuple[float, float]] = []
    for entry in logs:
        event = entry.dagster_event
        if event is None or entry.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            started[entry.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            spans.append((started[entry.step_key], entry.timestamp))
    assert len(spans) == TABLES
    spans.sort()
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start, spans
