"""`stagecopy status`: read from a real Dagster instance (a temporary DAGSTER_HOME) and real PG."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from stagecopy_dagster import cli
from stagecopy_dagster.identifiers import QualifiedName
from stagecopy_dagster.resources import PostgresResource
from stagecopy_dagster.spec import load_spec
from stagecopy_dagster.sqlguard import parse_where
from stagecopy_dagster.statements.status import rows_after
from stagecopy_dagster.status import format_duration, read_status, to_table
from stagecopy_dagster_tests.pg import PgPair

# --- no database -------------------------------------------------------------------------------


def test_rows_after_text() -> None:
    where = parse_where("v <> 'x'")
    table = QualifiedName("public", "ticks")
    assert rows_after(table, "at", where, None).as_string() == (
        'SELECT count(*), max("at") FROM "public"."ticks" WHERE (v <> \'x\')'
    )
    assert rows_after(table, "at", None, 5).as_string() == (
        'SELECT count(*), max("at") FROM "public"."ticks" WHERE "at" > 5'
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(45, "45s"), (720, "12m"), (3 * 3600 + 300, "3h 5m"), (7200, "2h"), (52 * 3600, "2d 4h")],
)
def test_format_duration(seconds: int, text: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == text


def test_status_needs_dagster_home_outside_the_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "replication.yaml"
    spec.write_text(yaml.safe_dump({"tables": [{"source": "public.ticks"}]}))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("STAGECOPY_SOURCE_URL", "postgresql://nobody@127.0.0.1:1/x")
    monkeypatch.setenv("STAGECOPY_TARGET_URL", "postgresql://nobody@127.0.0.1:1/y")
    assert cli.main(["status", "--spec", str(spec)]) == cli.EXIT_USAGE
    assert "set DAGSTER_HOME" in capsys.readouterr().err


# --- a real instance and real databases --------------------------------------------------------

TICKS = "CREATE TABLE ticks (id int PRIMARY KEY, at timestamptz NOT NULL, v text NOT NULL)"
FILL = (
    "INSERT INTO ticks SELECT g, timestamptz '2026-01-01 00:00+00' + g * interval '1 minute', "
    "'v' || g FROM generate_series({first}, {last}) g"
)


@pytest.fixture
def setup(pg: PgPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[PgPair, Path, Path]:
    """`ticks` (100 rows) and `other` at the source; a spec; DAGSTER_HOME in tmp_path."""
    pg.source(TICKS, FILL.format(first=1, last=100), "CREATE TABLE other (id int PRIMARY KEY)")
    spec = tmp_path / "replication.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "defaults": {"freshness": {"max_lag": "2h"}},
                "tables": [
                    {"source": "public.ticks", "incremental_field": "at"},
                    {"source": "public.other"},
                ],
            }
        )
    )
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("STAGECOPY_SOURCE_URL", pg.source_url)
    monkeypatch.setenv("STAGECOPY_TARGET_URL", pg.target_url)
    return pg, spec, home


def _status_json(spec: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    capsys.readouterr()
    code = cli.main(["status", "--spec", str(spec), "--json", *args])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.integration
def test_status_after_a_run_and_new_source_rows(
    setup: tuple[PgPair, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pg, spec, _ = setup
    assert cli.main(["run", "--spec", str(spec), "--select", "ticks"]) == cli.EXIT_OK
    pg.source(FILL.format(first=101, last=105))  # 5 rows newer than the copy, 5 minutes later

    code, status = _status_json(spec, capsys, "--select", "ticks")
    assert code == cli.EXIT_OK and status["ok"] is True
    [ticks] = status["tables"]
    assert ticks["table"] == "public.ticks" and ticks["rows"] == 100
    assert ticks["integrity"] == "passed" and ticks["integrity_time"] is not None
    assert ticks["stale"] is False and ticks["max_lag_seconds"] == 7200
    assert ticks["behind"]["rows"] == 5 and ticks["behind"]["seconds"] == 300
    assert ticks["behind"]["watermark"].startswith("2026-01-01 01:40:00")
    assert datetime.fromisoformat(ticks["last_copy"]) <= datetime.now(tz=UTC)

    # The text table: a header, one row per table, the verdict.
    capsys.readouterr()
    assert cli.main(["status", "--spec", str(spec), "--select", "ticks"]) == cli.EXIT_OK
    header, row, verdict = capsys.readouterr().out.strip().splitlines()
    assert header.split() == ["TABLE", "LAST", "COPY", "ROWS", "INTEGRITY", "WATERMARK", "BEHIND"]
    assert row.startswith("public.ticks ") and " 100 " in row and " passed " in row
    assert row.endswith("5 rows, 5m")
    assert verdict == "stagecopy status: 1 tables: ok"


@pytest.mark.integration
def test_status_fails_on_a_failed_check_and_on_a_table_never_copied(
    setup: tuple[PgPair, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pg, spec, _ = setup
    assert cli.main(["run", "--spec", str(spec), "--select", "ticks"]) == cli.EXIT_OK
    pg.target("DELETE FROM ticks WHERE id = 7")
    assert cli.main(["check", "--spec", str(spec), "--select", "ticks"]) == cli.EXIT_FAILED

    code, status = _status_json(spec, capsys)
    assert code == cli.EXIT_FAILED and status["ok"] is False
    ticks, other = status["tables"]
    assert (ticks["integrity"], ticks["ok"]) == ("failed", False)
    assert "missing" in ticks["integrity_description"]
    # `other` was never copied and has a freshness: stale.
    assert (other["last_copy"], other["integrity"], other["stale"]) == (None, "none", True)
    assert other["behind"] is None  # no incremental_field: nothing to measure

    capsys.readouterr()
    assert cli.main(["status", "--spec", str(spec)]) == cli.EXIT_FAILED
    lines = capsys.readouterr().out.strip().splitlines()
    assert " FAILED " in lines[1] and "never STALE (max_lag 2h)" in lines[2]
    assert lines[-1] == "stagecopy status: 2 tables: 1 check(s) failed, 1 stale"


@pytest.mark.integration
def test_a_copy_older_than_max_lag_is_stale(setup: tuple[PgPair, Path, Path]) -> None:
    pg, spec, _ = setup
    assert cli.main(["run", "--spec", str(spec), "--select", "ticks"]) == cli.EXIT_OK
    table = load_spec(spec).table("ticks")
    source, target = PostgresResource(url=pg.source_url), PostgresResource(url=pg.target_url)
    with dg.DagsterInstance.get() as instance:
        [fresh] = read_status(instance, [table], source=source, target=target)
        assert fresh.last_copy is not None and not fresh.stale and fresh.ok
        later = fresh.last_copy + timedelta(hours=2, seconds=1)
        [late] = read_status(instance, [table], source=source, target=target, now=later)
    assert late.stale and not late.ok and late.age_seconds == pytest.approx(7201)
    assert "STALE (max_lag 2h)" in to_table([late], now=later)
