"""Definitions load without a database: the code location validates, bad specs fail clearly,
and transient errors are retried (bounded) while terminal ones are not.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import yaml

from stagecopy_dagster import PostgresResource, build_definitions
from stagecopy_dagster.build import DEMO_SPEC
from stagecopy_dagster.errors import (
    ConnectionConfigError,
    CopyError,
    SpecError,
    TransientCopyError,
    UnsafeSqlError,
)
from stagecopy_dagster.retry import call_with_retries
from stagecopy_dagster.spec import parse_spec
from stagecopy_dagster.sqlguard import parse_where

FAKE_SOURCE_URL = "postgresql://reader@db.invalid/src"
FAKE_TARGET_URL = "postgresql://writer@db.invalid/tgt"
DAGSTER = Path(sys.executable).parent / "dagster"

GOOD_SPEC = """\
defaults:
  mode: sync
tables:
  - source: public.orders
    group: market
    schedule: "0 * * * *"
  - source: public.trades
    group: market
    schedule: "0 * * * *"
    where: "traded_at >= now() - interval '7 days'"
  - source: '"Sales"."고객"'
    name: customers
    incremental_field: updated_at
    lookback: 10 minutes
    mode: merge
"""

BAD_SPEC = """\
tables:
  - source: public.orders
  - source: public.trades
    colour: red
"""


# --- `dagster definitions validate` -----------------------------------------------------------


def validate(spec: Path, cwd: Path) -> subprocess.Popen[str]:
    """Start `dagster definitions validate` on the code location, as a deployment would run it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "STAGECOPY_"))}
    env |= {
        "STAGECOPY_SPEC": str(spec),
        "STAGECOPY_SOURCE_URL": FAKE_SOURCE_URL,
        "STAGECOPY_TARGET_URL": FAKE_TARGET_URL,
        "NO_COLOR": "1",
    }
    return subprocess.Popen(
        [str(DAGSTER), "definitions", "validate", "-m", "stagecopy_dagster.definitions"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_dagster_definitions_validate_passes_and_fails_with_the_entry_named(
    tmp_path: Path,
) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(GOOD_SPEC, encoding="utf-8")
    bad.write_text(BAD_SPEC, encoding="utf-8")
    # Both at once: each takes seconds, mostly starting Python and Dagster.
    good_run, bad_run = validate(good, tmp_path), validate(bad, tmp_path)
    good_out, _ = good_run.communicate(timeout=120)
    bad_out, _ = bad_run.communicate(timeout=120)

    assert good_run.returncode == 0, good_out
    assert "Validation successful" in good_out
    assert bad_run.returncode == 1, bad_out
    assert f"{bad}: tables[1] (public.trades): unknown key 'colour'" in bad_out
    assert "SpecError" in bad_out


def test_the_good_spec_builds_the_expected_objects() -> None:
    defs = build_definitions(
        parse_spec(yaml.safe_load(GOOD_SPEC)),
        source_url=FAKE_SOURCE_URL,
        target_url=FAKE_TARGET_URL,
    )
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in defs.resolve_all_asset_keys()}
    sources = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).is_observable}
    assert keys - sources == {"orders", "trades", "customers"}
    assert all(s.startswith("source/") for s in sources) and len(sources) == 3
    assert {k.name for k in graph.asset_check_keys} == {"integrity"}
    assert len(graph.asset_check_keys) == 3
    assert defs.resolve_job_def("stagecopy_all") is not None
    assert defs.resolve_job_def("stagecopy_cleanup") is not None
    assert defs.resolve_schedule_def("market_schedule").cron_schedule == "0 * * * *"
    assert set(defs.resources or {}) == {"source", "target"}


# --- bad specs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"tables": [{"source": "public.a"}, {"source": "public.b", "colour": "red"}]},
            "tables[1] (public.b): unknown key 'colour'",
        ),
        (
            {"tables": [{"source": "public.a"}, {"source": "other.a", "target": "public.a"}]},
            "tables[1] and tables[0] both write public.a",
        ),
        (
            {"tables": [{"source": "public.a", "where": "id = 1; DROP TABLE a"}]},
            "tables[0] (public.a): where 'id = 1; DROP TABLE a' must be a single statement",
        ),
        (
            {"tables": [{"source": "public.a", "mode": "upsert"}]},
            "tables[0] (public.a).mode: 'upsert' is not one of merge, sync, replace, append",
        ),
        (
            {"tables": [{"source": "public.a", "lookback": "10 minutes"}]},
            "tables[0] (public.a): `lookback` needs `incremental_field`",
        ),
        (
            {"tables": [{"source": "public.a", "schedule": "every hour"}]},
            "tables[0] (public.a).schedule: schedule 'every hour' is not a valid cron string",
        ),
        (
            {"tables": [{"source": "public.a"}, {"source": "s.x", "name": "a"}]},
            "tables[1] and tables[0] would both be asset 'a'",
        ),
        (
            {"tables": [{"query": "SELECT 1 AS id"}]},
            "tables[0]: a `query` source needs an explicit `target`",
        ),
        ({"defaults": {"source": "public.a"}, "tables": [{}]}, "defaults cannot set ['source']"),
        ({"tables": []}, "`tables` must be a non-empty list"),
        ({"tables": [{"source": "public.a"}], "extra": 1}, "unknown top-level key(s) ['extra']"),
    ],
    ids=[
        "unknown-key",
        "duplicate-target",
        "two-statements",
        "bad-mode",
        "lookback-alone",
        "bad-cron",
        "duplicate-asset",
        "query-without-target",
        "per-table-default",
        "no-tables",
        "top-level-key",
    ],
)
def test_bad_spec_raises_spec_error_naming_entry_and_problem(
    spec: dict[str, object], message: str
) -> None:
    with pytest.raises(SpecError) as raised:
        build_definitions(spec, source_url=FAKE_SOURCE_URL, target_url=FAKE_TARGET_URL)
    assert message in str(raised.value)


def test_where_with_two_statements_is_unsafe_sql(tmp_path: Path) -> None:
    path = tmp_path / "replication.yaml"
    path.write_text(
        'tables:\n  - source: public.a\n    where: "true; DELETE FROM a"\n', encoding="utf-8"
    )
    with pytest.raises(SpecError, match=r"replication\.yaml: tables\[0\] \(public\.a\)"):
        build_definitions(path, source_url=FAKE_SOURCE_URL, target_url=FAKE_TARGET_URL)
    with pytest.raises(UnsafeSqlError):
        parse_where("true; DELETE FROM a")


def test_spec_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read spec"):
        build_definitions(
            tmp_path / "missing.yaml", source_url=FAKE_SOURCE_URL, target_url=FAKE_TARGET_URL
        )
    broken = tmp_path / "broken.yaml"
    broken.write_text("tables: [\n", encoding="utf-8")
    with pytest.raises(SpecError, match="not valid YAML"):
        build_definitions(broken, source_url=FAKE_SOURCE_URL, target_url=FAKE_TARGET_URL)


def test_one_url_without_the_other_is_refused() -> None:
    with pytest.raises(SpecError, match="both"):
        build_definitions({"tables": [{"source": "public.a"}]}, source_url=FAKE_SOURCE_URL)


def test_env_urls_reach_the_resources_as_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGECOPY_SOURCE_URL", FAKE_SOURCE_URL)
    monkeypatch.setenv("STAGECOPY_TARGET_URL", FAKE_TARGET_URL)
    defs = build_definitions({"tables": [{"source": "public.a"}]})
    resources = defs.resources or {}
    # The URL is resolved at run time, so it never shows in the UI as plain text.
    assert resources["source"].url == dg.EnvVar("STAGECOPY_SOURCE_URL")  # type: ignore[union-attr]
    assert resources["target"].url == dg.EnvVar("STAGECOPY_TARGET_URL")  # type: ignore[union-attr]


def test_only_one_env_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGECOPY_SOURCE_URL", FAKE_SOURCE_URL)
    monkeypatch.delenv("STAGECOPY_TARGET_URL", raising=False)
    with pytest.raises(SpecError, match="STAGECOPY_TARGET_URL is not set"):
        build_definitions({"tables": [{"source": "public.a"}]})


# --- no silent default ----------------------------------------------------------------------


@pytest.fixture
def no_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STAGECOPY_SOURCE_URL", "STAGECOPY_TARGET_URL", "STAGECOPY_EMBEDDED"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_urls")
def test_a_user_spec_without_urls_fails_at_load_naming_the_variables() -> None:
    with pytest.raises(ConnectionConfigError) as raised:
        build_definitions({"tables": [{"source": "public.a"}]})
    message = str(raised.value)
    assert "STAGECOPY_SOURCE_URL" in message and "STAGECOPY_TARGET_URL" in message
    assert "STAGECOPY_EMBEDDED=1" in message and "\n" not in message


@pytest.mark.usefixtures("no_urls")
@pytest.mark.parametrize("how", ["env", "argument"])
def test_the_embedded_cluster_is_an_explicit_opt_in(
    monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    if how == "env":
        monkeypatch.setenv("STAGECOPY_EMBEDDED", "1")
    spec = {"tables": [{"source": "public.a"}]}
    defs = build_definitions(spec, embedded=True) if how == "argument" else build_definitions(spec)
    resources = defs.resources or {}
    assert resources["source"].embedded_database == "stagecopy_source"  # type: ignore[union-attr]
    assert resources["target"].embedded_database == "stagecopy_target"  # type: ignore[union-attr]
    assert not resources["source"].url  # type: ignore[union-attr]


@pytest.mark.usefixtures("no_urls")
def test_the_demo_spec_runs_on_the_embedded_cluster_by_default(tmp_path: Path) -> None:
    resources = build_definitions(DEMO_SPEC).resources or {}
    assert resources["target"].embedded_database == "stagecopy_target"  # type: ignore[union-attr]
    copy = tmp_path / "replication.yaml"  # a copy is the user's spec, not the demo
    copy.write_text(DEMO_SPEC.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(ConnectionConfigError):
        build_definitions(copy)


def test_a_resource_with_no_database_is_an_error_not_the_demo_cluster() -> None:
    resource = PostgresResource()
    assert resource.embedded_database == ""
    with pytest.raises(ConnectionConfigError, match=r"set `url` \(e.g\. url=dg.EnvVar"):
        resource.resolved_url()
    with pytest.raises(ConnectionConfigError, match="embedded_database"), resource.connect():
        pass


def test_the_code_location_loads_the_demo_on_the_embedded_cluster_with_no_env(
    tmp_path: Path,
) -> None:
    """`stagecopy_dagster.definitions:defs` with nothing set: what `dagster dev` loads."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "STAGECOPY_"))}
    code = (
        "from stagecopy_dagster.definitions import defs\n"
        "print(defs.resources['target'].embedded_database, len(list(defs.assets)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("stagecopy_target ")
    assert not (tmp_path / ".stagecopy").exists()  # loading starts no cluster


# --- retries ------------------------------------------------------------------------------


class Flaky:
    """Raises the given errors in turn, then returns "done"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def retry(fn: Flaky, *, attempts: int = 3) -> tuple[str, list[float], list[int]]:
    sleeps: list[float] = []
    retried: list[int] = []
    value = call_with_retries(
        fn,
        attempts=attempts,
        base_delay=1.0,
        max_delay=30.0,
        sleep=sleeps.append,
        on_retry=lambda attempt, exc, delay: retried.append(attempt),
    )
    return value, sleeps, retried


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.SerializationFailure("could not serialize access"),
        psycopg.errors.DeadlockDetected("deadlock detected"),
        psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
        psycopg.OperationalError("server closed the connection unexpectedly"),
        TransientCopyError("copy failed: deadlock detected", table="public.a"),
    ],
    ids=["serialization", "deadlock", "admin-shutdown", "connection-lost", "transient-copy"],
)
def test_transient_errors_are_retried_with_backoff(error: BaseException) -> None:
    fn = Flaky(error, error)
    value, sleeps, retried = retry(fn)
    assert value == "done"
    assert fn.calls == 3
    assert retried == [1, 2]
    # Exponential backoff with jitter in [0.5, 1.0] of the step.
    assert 0.5 <= sleeps[0] <= 1.0
    assert 1.0 <= sleeps[1] <= 2.0


@pytest.mark.parametrize(
    "error",
    [
        SpecError("tables[0]: unknown key 'colour'"),
        CopyError("copy failed: permission denied", table="public.a"),
        psycopg.errors.UndefinedTable('relation "a" does not exist'),
        psycopg.errors.UniqueViolation("duplicate key value"),
        ValueError("a bug"),
    ],
    ids=["spec", "copy", "undefined-table", "unique-violation", "bug"],
)
def test_terminal_errors_are_raised_at_once(error: BaseException) -> None:
    fn = Flaky(error)
    with pytest.raises(type(error)):
        retry(fn)
    assert fn.calls == 1


def test_attempts_are_bounded_and_the_last_error_is_raised() -> None:
    errors = [psycopg.errors.DeadlockDetected(f"deadlock {i}") for i in range(10)]
    fn = Flaky(*errors)
    sleeps: list[float] = []
    with pytest.raises(psycopg.errors.DeadlockDetected, match="deadlock 3"):
        call_with_retries(fn, attempts=4, base_delay=10.0, max_delay=25.0, sleep=sleeps.append)
    assert fn.calls == 4
    assert len(sleeps) == 3
    # The delay is capped by max_delay (before jitter).
    assert all(s <= 25.0 for s in sleeps)
    assert 12.5 <= sleeps[2] <= 25.0


def test_a_single_attempt_never_sleeps() -> None:
    fn = Flaky(psycopg.errors.SerializationFailure("could not serialize access"))
    sleeps: list[float] = []
    with pytest.raises(psycopg.errors.SerializationFailure):
        call_with_retries(fn, attempts=1, sleep=sleeps.append)
    assert (fn.calls, sleeps) == (1, [])
