"""What the operator sees: progress lines, the end-of-run summary (text and JSON), help, version.

Run as a user runs it (a subprocess; stdout and stderr are pipes, so not terminals) and
parsed, not eyeballed. The helpers and the seeded pair come from test_cli.
"""

from __future__ import annotations

import argparse
import json
import re
from importlib import metadata
from pathlib import Path

import pytest

from stagecopy_dagster import cli
from stagecopy_dagster.cli_args import build_parser
from stagecopy_dagster.cli_help import COMMANDS
from stagecopy_dagster.cli_summary import SUMMARY_VERSION
from stagecopy_dagster_tests.pg import PgPair
from stagecopy_dagster_tests.test_cli import (
    KR_ORDERS,
    SOURCE_SETUP,
    clean_env,
    output,
    pg_env,
    stagecopy,
    write_spec,
)

#: Every key of a table in `--json` (docs/cli.md); CI scripts read them.
TABLE_KEYS = {
    *("asset", "table", "source", "mode", "status", "path", "rows_copied", "inserted"),
    *("updated", "deleted", "bytes", "mb", "seconds", "check", "source_rows", "target_rows"),
    *("reason", "check_summary"),
}

BROKEN_SPEC = """
    tables:
      - source: public.orders
        name: kr_orders
        where: "region = 'KR'"
        mode: sync
      - source: public.no_such_table
      - source: public.customers
"""

#: A plain progress line (docs/cli.md): `<table>: [keys: ]<rows> / <expected> rows, ...`.
PROGRESS_LINE = re.compile(
    r"^(?P<table>[^:]+): (?:keys: )?(?:(?P<rows>[\d,]+)(?: / (?P<expected>~?[\d,]+))? rows, )?"
    r"(?P<mb>[\d,.]+)(?: / ~[\d,.]+)? MB, (?:(?P<pct>[\d.]+)%, )?.*MB/s"
    r"(?:, (?:ETA|done in) \w+)?$"
)


@pytest.fixture
def seeded(any_pg: PgPair) -> PgPair:
    any_pg.source(*SOURCE_SETUP)
    return any_pg


def _number(text: str) -> int:
    return int(text.lstrip("~").replace(",", ""))


def test_run_json_is_the_summary_for_ci(seeded: PgPair, tmp_path: Path) -> None:
    env = pg_env(seeded, tmp_path)
    spec = str(write_spec(tmp_path))
    run = stagecopy("run", "--spec", spec, "--json", env=env, cwd=tmp_path)
    assert run.returncode == 0, output(run)
    doc = json.loads(run.stdout)  # stdout holds the JSON document only
    assert (doc["summary_version"], doc["command"], doc["ok"], doc["exit_code"]) == (
        SUMMARY_VERSION,
        "run",
        True,
        0,
    )
    assert doc["run_id"]
    by_asset = {t["asset"]: t for t in doc["tables"]}
    assert set(by_asset) == {"kr_orders", "customers"}
    assert all(set(t) == TABLE_KEYS for t in doc["tables"])
    kr = by_asset["kr_orders"]
    assert (kr["status"], kr["mode"], kr["path"], kr["check"], kr["reason"]) == (
        "ok",
        "sync",
        "direct",
        "passed",
        None,
    )
    copied = (kr["rows_copied"], kr["inserted"], kr["updated"], kr["deleted"])
    assert copied == (KR_ORDERS, KR_ORDERS, 0, 0)
    assert kr["source_rows"] == kr["target_rows"] == KR_ORDERS
    assert kr["bytes"] > 0 and kr["seconds"] > 0 and kr["mb"] == round(kr["bytes"] / 1e6, 3)
    assert (kr["table"], kr["source"]) == ("public.orders", "public.orders")

    # The second run finds every row in place: merged, nothing changed.
    again = json.loads(stagecopy("run", "--spec", spec, "--json", env=env, cwd=tmp_path).stdout)
    kr = {t["asset"]: t for t in again["tables"]}["kr_orders"]
    assert kr["path"] in ("staged", "diff") and kr["status"] == "ok"
    assert (kr["inserted"], kr["updated"], kr["deleted"]) == (0, 0, 0)


def test_a_failure_comes_first_with_its_one_line_reason_and_no_traceback(
    seeded: PgPair, tmp_path: Path
) -> None:
    env = pg_env(seeded, tmp_path)
    spec = str(write_spec(tmp_path, BROKEN_SPEC))
    run = stagecopy("run", "--spec", spec, env=env, cwd=tmp_path)
    assert run.returncode == 1, output(run)
    for stream in (run.stdout, run.stderr):
        assert "Traceback" not in stream and "Stack Trace" not in stream, output(run)
        assert "dagster._core" not in stream, output(run)
    lines = run.stdout.splitlines()
    header, rule, *rows = lines[: lines.index("")]
    assert header.split() == [
        *("asset", "mode", "path", "rows", "inserted", "updated", "deleted", "MB"),
        *("seconds", "check"),
    ]
    assert set(rule) <= {"-", " "}
    assert [r.split()[0] for r in rows] == ["no_such_table", "kr_orders", "customers"]
    assert rows[1].split()[2:5] == ["direct", f"{KR_ORDERS}", f"{KR_ORDERS}"]
    reason = (
        "no_such_table: FAILED: public.no_such_table: source table public.no_such_table does "
        "not exist (or the source role cannot see it)"
    )
    assert reason in lines
    assert lines[-1].startswith("stagecopy: 3 tables: FAILED (run ")
    # stderr: progress lines, and one line per failed table.
    assert [line for line in run.stderr.splitlines() if line.startswith("stagecopy:")] == [
        "stagecopy: no_such_table: public.no_such_table: source table public.no_such_table "
        "does not exist (or the source role cannot see it)"
    ]

    doc = json.loads(stagecopy("run", "--spec", spec, "--json", env=env, cwd=tmp_path).stdout)
    assert (doc["ok"], doc["exit_code"]) == (False, 1)
    first = doc["tables"][0]
    assert (first["asset"], first["status"], first["check"]) == ("no_such_table", "failed", None)
    assert "does not exist" in first["reason"]

    # -v shows what happened in full: Dagster's run log, with the traceback.
    verbose = stagecopy("run", "--spec", spec, "-v", env=env, cwd=tmp_path)
    assert verbose.returncode == 1, output(verbose)
    assert "Stack Trace" in verbose.stderr and "STEP_FAILURE" in verbose.stderr


def test_check_json_names_the_failed_check_first(seeded: PgPair, tmp_path: Path) -> None:
    env = pg_env(seeded, tmp_path)
    spec = str(write_spec(tmp_path))
    assert stagecopy("run", "--spec", spec, env=env, cwd=tmp_path).returncode == 0
    seeded.target("UPDATE orders SET amount = amount + 1 WHERE id = 1")
    check = stagecopy("check", "--spec", spec, "--json", env=env, cwd=tmp_path)
    assert check.returncode == 1, output(check)
    doc = json.loads(check.stdout)
    assert (doc["command"], doc["ok"], doc["exit_code"]) == ("check", False, 1)
    first, second = doc["tables"]
    assert (first["asset"], first["status"], first["check"]) == (
        "kr_orders",
        "check_failed",
        "failed",
    )
    assert "changed 1" in first["reason"]
    assert (first["source_rows"], first["target_rows"]) == (KR_ORDERS, KR_ORDERS)
    assert first["rows_copied"] is None  # a check copies nothing
    assert (second["asset"], second["status"], second["check"]) == ("customers", "ok", "passed")

    text = stagecopy("check", "--spec", spec, env=env, cwd=tmp_path)
    header = text.stdout.splitlines()[0].split()
    assert header == ["asset", "mode", "source", "rows", "target", "rows", "seconds", "check"]


def test_progress_lines_in_a_log_are_whole_lines_with_the_expected_total(
    seeded: PgPair, tmp_path: Path
) -> None:
    env = pg_env(seeded, tmp_path)
    spec = str(write_spec(tmp_path))
    # stderr is a pipe, as in a log file: plain lines (0 s: every report the engine makes).
    run = stagecopy("run", "--spec", spec, "--progress-interval", "0", env=env, cwd=tmp_path)
    assert run.returncode == 0, output(run)
    assert "\r" not in run.stderr and run.stderr.endswith("\n")
    parsed = [PROGRESS_LINE.match(line) for line in run.stderr.splitlines()]
    assert parsed and all(parsed), output(run)
    done = {m["table"]: m for m in parsed if m is not None and "done in" in m.string}
    assert set(done) == {"public.orders", "public.customers"}
    orders = done["public.orders"]
    # A small scope is counted exactly: no `~`, and all of it arrived.
    assert orders["expected"] == f"{KR_ORDERS}" and _number(orders["rows"]) == KR_ORDERS
    assert orders["pct"] == "100.0"
    assert _number(done["public.customers"]["rows"]) == 50

    off = stagecopy("run", "--spec", spec, "--progress", "off", env=env, cwd=tmp_path)
    assert off.returncode == 0 and off.stderr == "", output(off)


@pytest.mark.parametrize("value", ["fast", "-1"])
def test_a_bad_progress_interval_is_a_usage_error(tmp_path: Path, value: str) -> None:
    env = clean_env(STAGECOPY_PROGRESS_INTERVAL=value, STAGECOPY_HOME=str(tmp_path / "home"))
    result = stagecopy("run", "--spec", str(write_spec(tmp_path)), env=env, cwd=tmp_path)
    assert result.returncode == 2, output(result)
    assert "STAGECOPY_PROGRESS_INTERVAL" in result.stderr
    flag = stagecopy("run", "--progress-interval", value, env=clean_env(), cwd=tmp_path)
    assert flag.returncode == 2 and "number of seconds" in flag.stderr, output(flag)


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser(cli.__doc__ or "")
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_subcommand_has_a_description_and_every_option_a_help() -> None:
    commands = _subcommands()
    assert {"run", "check", "plan", "demo", "cleanup"} <= set(commands)
    for name, sub in commands.items():
        assert name in COMMANDS, f"{name}: no help text in cli_help.COMMANDS"
        assert sub.description, name
        for action in sub._actions:
            assert action.help, f"stagecopy {name} {action.option_strings}: no help"


@pytest.mark.parametrize("command", ["run", "check", "plan", "demo", "cleanup"])
def test_help_names_the_environment_and_shows_an_example(tmp_path: Path, command: str) -> None:
    result = stagecopy(command, "--help", env=clean_env(), cwd=tmp_path)
    assert result.returncode == 0, output(result)
    text = result.stdout
    assert COMMANDS[command]["description"].split(".")[0].split()[-1] in text
    env_section = text.split("environment variables:\n", 1)[1].split("\n\n", 1)[0]
    names = re.findall(r"^  ([A-Z_]+)", env_section, flags=re.MULTILINE)
    assert names and all(n.startswith(("STAGECOPY_", "DAGSTER_")) for n in names), text
    example = text.split("example:\n", 1)[1].split("\n\n", 1)[0]
    assert f"stagecopy {command}" in example, text
    if command in ("run", "check", "plan", "cleanup"):
        assert {"STAGECOPY_SOURCE_URL", "STAGECOPY_TARGET_URL", "STAGECOPY_SPEC"} <= set(names)
    if command == "run":
        assert "STAGECOPY_PROGRESS" in names and "--progress-interval" in text
    if command == "cleanup":
        assert "--max-age-hours HOURS" in text and "older than this many hours" in text


def test_version_comes_from_the_package_metadata(tmp_path: Path) -> None:
    result = stagecopy("--version", env=clean_env(), cwd=tmp_path)
    assert result.returncode == 0, output(result)
    assert result.stdout == f"stagecopy {metadata.version('stagecopy-dagster')}\n"


def test_an_unexpected_error_is_one_line_unless_verbose() -> None:
    message, code = cli._explain(RuntimeError("it broke\n  at some frame"), verbose=False)
    assert code == 1
    assert message == "RuntimeError: it broke (stagecopy <command> -v shows the traceback)"
    assert cli._explain(RuntimeError("it broke"), verbose=True)[0] == "RuntimeError: it broke"


def test_a_cluster_that_cannot_start_ends_in_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.write_text("not a directory")  # the embedded cluster cannot live here
    env = clean_env(STAGECOPY_HOME=str(home))
    spec = str(write_spec(tmp_path))
    result = stagecopy("run", "--spec", spec, "--embedded", env=env, cwd=tmp_path)
    assert result.returncode == 1, output(result)
    assert "Traceback" not in result.stderr and "Stack Trace" not in result.stderr, output(result)
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith("stagecopy: ") for line in lines), output(result)
    assert str(home) in result.stderr
