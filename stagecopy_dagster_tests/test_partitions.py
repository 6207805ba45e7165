"""Partitioned tables: a Dagster partition is a WHERE scope (spec, SQL, copies, checks, backfills).

Fast tests need no database (spec errors, the scope's SQL, the definitions); the rest copy
through Dagster on PostgreSQL 18 and 15 and hold every claim to what the target holds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from stagecopy_dagster import build_definitions, runner
from stagecopy_dagster.errors import SpecError
from stagecopy_dagster.local import available_installs
from stagecopy_dagster.partition_scope import PartitionScope, predicate, row_counts_statement
from stagecopy_dagster.partitions import (
    PartitionSelectionError,
    partitions_definition,
    select_keys,
)
from stagecopy_dagster.spec import load_spec
from stagecopy_dagster.sqlguard import parse_where
from stagecopy_dagster_tests.copyhelpers import checksum, endpoints, table_spec
from stagecopy_dagster_tests.dghelpers import assets_of
from stagecopy_dagster_tests.pg import PgPair, PgPairFactory

SEOUL_DAYS = {"column": "traded_at", "by": "day", "start": "2024-01-01", "timezone": "Asia/Seoul"}
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def one_table(partition: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"tables": [{"source": "public.prices", "partition": partition, **extra}]}


# --- the spec ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("partition", "extra", "message"),
    [
        ({"column": "d", "by": "year", "start": "2024-01-01"}, {}, "by 'year' is not one of hour"),
        (
            {"column": "d", "by": "day", "start": "01/02/2024"},
            {},
            "start '01/02/2024' is not a date",
        ),
        ({"column": "d", "by": "day"}, {}, "by: day needs `start`"),
        (
            {"column": "d", "by": "day", "start": "2024-01-01", "timezone": "Seoul"},
            {},
            "timezone 'Seoul' is not a known IANA timezone",
        ),
        (
            {"column": "d", "by": "day", "start": "2024-01-01", "values": ["a"]},
            {},
            "not both",
        ),
        ({"column": "d"}, {}, "give `by: hour | day | week | month`"),
        ({"column": "d", "values": ["a", "a"]}, {}, "values lists a value twice"),
        ({"column": "d", "values": ["a"], "start": "2024-01-01"}, {}, "go with `by`"),
        ({"column": "d", "by": "month", "start": "2024-01-15"}, {}, "first of a month"),
        ({"column": "d", "by": "day", "start": "2024-01-01 06:00"}, {}, "give a date"),
        ({"column": "d", "by": "day", "start": "2024-01-01", "colour": 1}, {}, "unknown key"),
        (
            {"column": "d", "values": ["a"]},
            {"incremental_field": "updated_at", "mode": "append"},
            "`partition` and `incremental_field` do not mix",
        ),
    ],
)
def test_bad_partition_is_a_spec_error_naming_the_table(
    partition: dict[str, Any], extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError, match=r"public\.prices") as raised:
        load_spec(one_table(partition, **extra))
    assert message in str(raised.value)


def test_partitions_definitions_follow_the_spec() -> None:
    daily = load_spec(one_table(SEOUL_DAYS)).tables[0].partition
    assert daily is not None
    assert partitions_definition(daily) == dg.DailyPartitionsDefinition(
        start_date="2024-01-01", timezone="Asia/Seoul"
    )
    hourly = load_spec(one_table({"column": "t", "by": "hour", "start": "2024-01-01 06:00"}))
    part = hourly.tables[0].partition
    assert part is not None
    assert partitions_definition(part).get_first_partition_key() == "2024-01-01-06:00"
    weekly = load_spec(one_table({"column": "t", "by": "week", "start": "2024-01-01"}))
    part = weekly.tables[0].partition
    assert part is not None
    # Weeks begin on the weekday of `start` (a Monday here).
    assert partitions_definition(part).get_first_partition_key() == "2024-01-01"
    static = load_spec(one_table({"column": "market", "values": ["KOSPI", "KOSDAQ", 7]}))
    part = static.tables[0].partition
    assert part is not None
    assert partitions_definition(part).get_partition_keys() == ["KOSPI", "KOSDAQ", "7"]


# --- the scope's SQL ---------------------------------------------------------------------------


def test_time_scope_is_typed_after_the_column() -> None:
    part = load_spec(one_table(SEOUL_DAYS)).tables[0].partition
    assert part is not None
    keys = ["2024-01-02", "2024-01-03"]
    assert predicate(part, keys, "date").as_string(None) == (
        "\"traded_at\" >= '2024-01-02'::date AND \"traded_at\" < '2024-01-04'::date"
    )
    assert predicate(part, keys, "timestamp without time zone").as_string(None) == (
        "\"traded_at\" >= '2024-01-02 00:00:00'::timestamp "
        "AND \"traded_at\" < '2024-01-04 00:00:00'::timestamp"
    )
    assert predicate(part, keys, "timestamp with time zone").as_string(None) == (
        "\"traded_at\" >= '2024-01-02 00:00:00+09:00'::timestamptz "
        "AND \"traded_at\" < '2024-01-04 00:00:00+09:00'::timestamptz"
    )
    # Partitions that are not contiguous (re-running failed ones) are one window each.
    assert predicate(part, ["2024-01-02", "2024-01-05"], "date").as_string(None) == (
        "(\"traded_at\" >= '2024-01-02'::date AND \"traded_at\" < '2024-01-03'::date) OR "
        "(\"traded_at\" >= '2024-01-05'::date AND \"traded_at\" < '2024-01-06'::date)"
    )


def test_value_scope_quotes_its_literals() -> None:
    part = load_spec(one_table({"column": "시장구분", "values": ["KOSPI", "O'Brien"]}))
    spec = part.tables[0].partition
    assert spec is not None
    assert predicate(spec, ["KOSPI", "O'Brien"], "text").as_string(None) == (
        "\"시장구분\" IN ('KOSPI', 'O''Brien')"
    )


def test_partition_selection_errors_name_the_table() -> None:
    plain = table_spec({"source": "public.plain"})
    with pytest.raises(PartitionSelectionError, match=r"public\.plain: .*not partitioned"):
        select_keys(plain, partition="2024-01-01")
    assert select_keys(plain) is None
    parted = load_spec(one_table(SEOUL_DAYS)).tables[0]
    with pytest.raises(PartitionSelectionError, match="'2023-12-31' is not a partition key"):
        select_keys(parted, partition="2023-12-31")
    with pytest.raises(PartitionSelectionError, match="comes after"):
        select_keys(parted, first="2024-01-05", last="2024-01-02")
    with pytest.raises(PartitionSelectionError, match="not both"):
        select_keys(parted, partition="2024-01-05", first="2024-01-02")
    assert select_keys(parted, first="2024-01-02", last="2024-01-04") == (
        "2024-01-02",
        "2024-01-03",
        "2024-01-04",
    )


def test_definitions_partition_the_asset_and_its_check() -> None:
    defs = build_definitions(
        {
            "tables": [
                {"source": "public.prices", "partition": SEOUL_DAYS},
                {"source": "public.plain"},
            ]
        },
        source_url="postgresql://s/db",
        target_url="postgresql://t/db",
    )
    parted = next(a for a in assets_of(defs) if dg.AssetKey("prices") in a.keys)
    expected = dg.DailyPartitionsDefinition(start_date="2024-01-01", timezone="Asia/Seoul")
    assert parted.partitions_def == expected
    assert parted.backfill_policy == dg.BackfillPolicy.single_run()
    (check,) = parted.check_specs
    assert check.partitions_def == expected
    # The main job holds both tables (one partitioning): Dagster resolves it.
    job = defs.resolve_job_def("stagecopy_all")
    assert job.partitions_def == expected


# --- copies and checks on real PostgreSQL ------------------------------------------------------

VERSIONS = [install.label for install in available_installs()]


@pytest.fixture(scope="module", params=VERSIONS, ids=VERSIONS)
def pair(
    request: pytest.FixtureRequest, pg_factories: dict[str, PgPairFactory]
) -> Iterator[PgPair]:
    pair = pg_factories[request.param]("partitions")
    try:
        yield pair
    finally:
        pair.drop()


def prices_setup(table: str, column_type: str) -> tuple[str, ...]:
    """Rows every 3 hours from 2023-12-31 00:00 UTC for 6 days: some sit on a day's edge in
    Seoul (15:00 UTC is midnight there)."""
    value = {
        "timestamptz": "ts",
        "timestamp": "(ts AT TIME ZONE 'Asia/Seoul')",
        "date": "(ts AT TIME ZONE 'Asia/Seoul')::date",
    }[column_type]
    return (
        f"CREATE TABLE {table} (id int PRIMARY KEY, traded_at {column_type} NOT NULL, "
        "market text NOT NULL, price numeric(10,2))",
        f"INSERT INTO {table} SELECT g, {value}, (ARRAY['KOSPI','KOSDAQ','KONEX'])[g % 3 + 1], "
        "g * 1.5 FROM (SELECT g, '2023-12-31 00:00+00'::timestamptz + g * interval '3 hours' "
        "AS ts FROM generate_series(0, 47) g) s",
    )


SEOUL_DAY = {
    "2024-01-01": ("2023-12-31 15:00+00", "2024-01-01 15:00+00"),
    "2024-01-02": ("2024-01-01 15:00+00", "2024-01-02 15:00+00"),
    "2024-01-03": ("2024-01-02 15:00+00", "2024-01-03 15:00+00"),
}


def source_count(pg: PgPair, table: str, key: str, column_type: str) -> int:
    lo, hi = SEOUL_DAY[key]
    if column_type == "timestamptz":
        where = f"traded_at >= '{lo}' AND traded_at < '{hi}'"
    elif column_type == "timestamp":
        where = (
            f"traded_at >= ('{lo}'::timestamptz AT TIME ZONE 'Asia/Seoul') "
            f"AND traded_at < ('{hi}'::timestamptz AT TIME ZONE 'Asia/Seoul')"
        )
    else:
        where = f"traded_at = '{key}'::date"
    return pg.source_rows(f"SELECT count(*) FROM {table} WHERE {where}")[0][0]


def defs_for(pg: PgPair, *entries: dict[str, Any]) -> dg.Definitions:
    return build_definitions(
        {"tables": list(entries)}, source_url=pg.source_url, target_url=pg.target_url
    )


def run_range(
    defs: dg.Definitions,
    first: str,
    last: str,
    *,
    instance: dg.DagsterInstance,
    selection: Any = None,
) -> dg.ExecuteInProcessResult:
    tags = {RANGE_START: first, RANGE_END: last}
    return dg.materialize(
        assets_of(defs),
        resources=defs.resources,
        instance=instance,
        tags=tags,
        selection=selection,
        raise_on_error=False,
    )


def partition_counts(result: dg.ExecuteInProcessResult) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in result.get_asset_materialization_events():
        mat = event.materialization
        assert mat is not None and mat.partition is not None
        value = mat.metadata["dagster/partition_row_count"].value
        assert isinstance(value, int)
        counts[mat.partition] = value
    return counts


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {str(e.partition): e.passed for e in result.get_asset_check_evaluations()}


@pytest.mark.integration
@pytest.mark.parametrize("column_type", ["timestamptz", "timestamp", "date"])
def test_backfill_is_one_run_one_stream_with_counts_and_checks_per_partition(
    pair: PgPair, column_type: str
) -> None:
    table = f"prices_{column_type}"
    pair.source(*prices_setup(table, column_type))
    entry = {"source": f"public.{table}", "mode": "replace", "partition": SEOUL_DAYS}
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_range(defs_for(pair, entry), "2024-01-01", "2024-01-03", instance=instance)
        assert result.success
        expected = {k: source_count(pair, table, k, column_type) for k in SEOUL_DAY}
        assert all(expected.values())
        assert partition_counts(result) == expected
        assert check_results(result) == dict.fromkeys(SEOUL_DAY, True)
        (copy,) = {
            e.materialization.metadata["stagecopy/rows_copied"].value  # type: ignore[union-attr]
            for e in result.get_asset_materialization_events()
        }
        assert copy == sum(expected.values())  # one COPY over the whole range
        assert [e.step_key for e in result.get_step_success_events()] == [f"stagecopy_{table}"]
        # Exactly the range reached the target: nothing of 2023-12-31 or 2024-01-04+.
        total = pair.target_rows(f"SELECT count(*) FROM {table}")[0][0]
        assert total == sum(expected.values())
        assert instance.get_materialized_partitions(dg.AssetKey(table)) == set(SEOUL_DAY)


@pytest.mark.integration
def test_rerunning_one_partition_leaves_every_other_row_byte_identical(pair: PgPair) -> None:
    pair.source(*prices_setup("prices_rerun", "timestamptz"))
    entry = {"source": "public.prices_rerun", "mode": "replace", "partition": SEOUL_DAYS}
    defs = defs_for(pair, entry)
    day2 = "traded_at >= '2024-01-01 15:00+00' AND traded_at < '2024-01-02 15:00+00'"
    outside = f"NOT ({day2})"
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_range(defs, "2024-01-01", "2024-01-03", instance=instance).success
        before = checksum(pair, "target", "prices_rerun", where=outside)
        xmins = pair.target_rows(f"SELECT id, xmin::text FROM prices_rerun WHERE {outside}")
        # The source changes on every day; only day 2 is re-run.
        pair.source("UPDATE prices_rerun SET price = price + 100")
        result = dg.materialize(
            assets_of(defs),
            resources=defs.resources,
            instance=instance,
            partition_key="2024-01-02",
        )
        assert result.success
        assert check_results(result) == {"2024-01-02": True}
    assert checksum(pair, "target", "prices_rerun", where=outside) == before
    assert pair.target_rows(f"SELECT id, xmin::text FROM prices_rerun WHERE {outside}") == xmins
    assert checksum(pair, "target", "prices_rerun", where=day2) == checksum(
        pair, "source", "prices_rerun", where=day2
    )
    # The other days still hold the old prices: the check of day 1 alone says so.
    with dg.DagsterInstance.ephemeral() as instance:
        checks = dg.materialize(
            assets_of(defs),
            resources=defs.resources,
            instance=instance,
            selection=dg.AssetSelection.checks_for_assets(dg.AssetKey("prices_rerun")),
            tags={RANGE_START: "2024-01-01", RANGE_END: "2024-01-03"},
            raise_on_error=False,
        )
    # The range failed as a whole, so each partition was compared alone: only 2 passes.
    assert check_results(checks) == {"2024-01-01": False, "2024-01-02": True, "2024-01-03": False}


@pytest.mark.integration
def test_static_values_and_where_are_one_scope(pair: PgPair) -> None:
    pair.source(*prices_setup("prices_market", "timestamptz"))
    entry = {
        "source": "public.prices_market",
        "mode": "sync",
        "where": "price > 10",
        "partition": {"column": "market", "values": ["KOSPI", "KOSDAQ", "KONEX"]},
    }
    table = load_spec({"tables": [entry]}).tables[0]
    done = runner.replicate(table, *endpoints(pair), partition_keys=["KOSPI", "KONEX"])
    assert done.partitions is not None and done.report is not None and done.report.passed
    expected = {
        m: pair.source_rows(
            "SELECT count(*) FROM prices_market WHERE market = %s AND price > 10", (m,)
        )[0][0]
        for m in ("KOSPI", "KONEX")
    }
    assert dict(done.partitions.rows) == expected
    assert pair.target_rows("SELECT DISTINCT market FROM prices_market ORDER BY 1") == [
        ("KONEX",),
        ("KOSPI",),
    ]
    assert pair.target_rows("SELECT min(price) FROM prices_market")[0][0] > 10
    # sync deletes only inside the partition's scope: KOSDAQ rows planted in the target stay.
    pair.target("INSERT INTO prices_market VALUES (9001, '2024-01-01', 'KOSDAQ', 99)")
    pair.source(
        "DELETE FROM prices_market WHERE id = (SELECT min(id) FROM prices_market "
        "WHERE market = 'KOSPI' AND price > 10)"
    )
    again = runner.replicate(table, *endpoints(pair), partition_keys=["KOSPI"])
    assert again.result.deleted == 1
    assert pair.target_rows("SELECT count(*) FROM prices_market WHERE id = 9001")[0][0] == 1


@pytest.mark.integration
@pytest.mark.parametrize(
    ("partition", "message"),
    [
        ({"column": "nope", "values": ["a"]}, "partition column 'nope' is not a column"),
        ({"column": "market", "by": "day", "start": "2024-01-01"}, "market' is text; time"),
        (
            {"column": "traded_at", "by": "hour", "start": "2024-01-01"},
            "is a date; hourly partitions need",
        ),
    ],
)
def test_partition_column_must_exist_and_fit(
    pair: PgPair, partition: dict[str, Any], message: str
) -> None:
    name = f"prices_bad_{abs(hash(message)) % 10000}"
    pair.source(*prices_setup(name, "date"))
    table = table_spec({"source": f"public.{name}", "partition": partition})
    key = partitions_definition(table.partition).get_first_partition_key()  # type: ignore[arg-type]
    assert key is not None
    with pytest.raises(SpecError, match=f"public.{name}: .*{message}"):
        runner.replicate(table, *endpoints(pair), partition_keys=[key])
    assert pair.target_rows("SELECT to_regclass(%s) IS NULL", (f"public.{name}",))[0][0]


@pytest.mark.integration
def test_failed_backfill_marks_only_the_failing_table_and_reruns_it_alone(pair: PgPair) -> None:
    pair.source(*prices_setup("prices_ok", "date"), *prices_setup("prices_dup", "date"))
    # Duplicate keys inside the range: the copy of prices_dup fails and rolls back.
    pair.source(
        "ALTER TABLE prices_dup DROP CONSTRAINT prices_dup_pkey",
        "INSERT INTO prices_dup SELECT id, traded_at, market, price FROM prices_dup "
        "WHERE traded_at = '2024-01-02'",
    )
    ok = {"source": "public.prices_ok", "mode": "merge", "partition": SEOUL_DAYS}
    dup = {
        "source": "public.prices_dup",
        "mode": "merge",
        "primary_key": ["id"],
        "partition": SEOUL_DAYS,
    }
    defs = defs_for(pair, ok, dup)
    with dg.DagsterInstance.ephemeral() as instance:
        failed = run_range(defs, "2024-01-01", "2024-01-03", instance=instance)
        assert not failed.success
        assert instance.get_materialized_partitions(dg.AssetKey("prices_ok")) == set(SEOUL_DAY)
        assert not instance.get_materialized_partitions(dg.AssetKey("prices_dup"))
        assert pair.target_rows("SELECT to_regclass('public.prices_dup') IS NULL")[0][0]
        ok_xmins = pair.target_rows("SELECT id, xmin::text FROM prices_ok ORDER BY id")
        # Fixed at the source, the failed table alone is re-run over the failed range.
        pair.source(
            "DELETE FROM prices_dup a USING prices_dup b WHERE a.ctid > b.ctid AND a.id = b.id"
        )
        rerun = run_range(
            defs,
            "2024-01-01",
            "2024-01-03",
            instance=instance,
            selection=[dg.AssetKey("prices_dup")],
        )
        assert rerun.success
        assert instance.get_materialized_partitions(dg.AssetKey("prices_dup")) == set(SEOUL_DAY)
    assert pair.target_rows("SELECT id, xmin::text FROM prices_ok ORDER BY id") == ok_xmins


# --- the command line --------------------------------------------------------------------------

STAGECOPY = Path(sys.executable).with_name("stagecopy")
CLI_SPEC = """
    tables:
      - source: public.cli_prices
        mode: replace
        partition: {column: traded_at, by: day, start: "2024-01-01", timezone: Asia/Seoul}
      - source: public.cli_plain
"""


def cli(pg: PgPair | None, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`stagecopy ARGS --spec CLI_SPEC` against `pg` (None: URLs that reach no database)."""
    spec = tmp_path / "replication.yaml"
    spec.write_text(textwrap.dedent(CLI_SPEC), encoding="utf-8")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("STAGECOPY_", "DAGSTER_", "PG"))
    }
    nowhere = "postgresql://nobody@127.0.0.1:1/none"
    env |= {
        "STAGECOPY_SOURCE_URL": pg.source_url if pg else nowhere,
        "STAGECOPY_TARGET_URL": pg.target_url if pg else nowhere,
        "STAGECOPY_HOME": str(tmp_path / "home"),
    }
    return subprocess.run(
        [str(STAGECOPY), *args, "--spec", str(spec)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.integration
def test_cli_runs_and_checks_a_partition_or_a_range(any_pg: PgPair, tmp_path: Path) -> None:
    any_pg.source(
        *prices_setup("cli_prices", "date"),
        "CREATE TABLE cli_plain (id int PRIMARY KEY)",
        "INSERT INTO cli_plain SELECT generate_series(1, 10)",
    )
    one = cli(any_pg, tmp_path, "run", "--select", "cli_prices", "--partition", "2024-01-02")
    assert one.returncode == 0, one.stdout + one.stderr
    assert any_pg.target_rows("SELECT DISTINCT traded_at::text FROM cli_prices") == [
        ("2024-01-02",)
    ]
    span = cli(
        any_pg,
        tmp_path,
        "run",
        "--select",
        "cli_prices",
        "--from",
        "2024-01-01",
        "--to",
        "2024-01-03",
    )
    assert span.returncode == 0, span.stdout + span.stderr
    assert any_pg.target_rows("SELECT count(DISTINCT traded_at) FROM cli_prices")[0][0] == 3
    check = cli(
        any_pg,
        tmp_path,
        "check",
        "--select",
        "cli_prices",
        "--from",
        "2024-01-01",
        "--to",
        "2024-01-03",
    )
    assert check.returncode == 0, check.stdout + check.stderr
    # A row of 2024-01-03 changes at the source: the check of that day alone fails.
    any_pg.source("UPDATE cli_prices SET price = 0 WHERE traded_at = '2024-01-03'")
    assert (
        cli(
            any_pg, tmp_path, "check", "--select", "cli_prices", "--partition", "2024-01-02"
        ).returncode
        == 0
    )
    bad = cli(any_pg, tmp_path, "check", "--select", "cli_prices", "--partition", "2024-01-03")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "2024-01-03" in bad.stdout
    # Without --select, the flags pick that partition of every partitioned table.
    again = cli(any_pg, tmp_path, "run", "--partition", "2024-01-03")
    assert again.returncode == 0, again.stdout + again.stderr
    assert cli(any_pg, tmp_path, "check", "--partition", "2024-01-03").returncode == 0
    assert any_pg.target_rows("SELECT to_regclass('public.cli_plain') IS NULL")[0][0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--select", "cli_plain", "--partition", "2024-01-02"), "public.cli_plain: "),
        (("--select", "cli_prices", "cli_plain", "--to", "2024-01-02"), "public.cli_plain: "),
        (("--select", "cli_prices", "--partition", "yesterday"), "'yesterday' is not a partition"),
        (("--select", "cli_prices", "--from", "2024-01-05", "--to", "2024-01-02"), "comes after"),
    ],
)
def test_cli_partition_flags_misused_exit_2_naming_the_table(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    # Refused before any database is reached: the URLs point nowhere.
    result = cli(None, tmp_path, "run", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr


def test_jobs_schedules_and_sensor_with_two_partitionings() -> None:
    monthly = {"column": "d", "by": "month", "start": "2024-01-01"}
    defs = build_definitions(
        {
            "tables": [
                {"source": "public.prices", "partition": SEOUL_DAYS, "schedule": "0 1 * * *"},
                {"source": "public.monthly", "partition": monthly},
                {"source": "public.plain", "schedule": "0 1 * * *"},
            ]
        },
        source_url="postgresql://s/db",
        target_url="postgresql://t/db",
    )
    main = defs.resolve_job_def("stagecopy_all")
    assert main.partitions_def == partitions_definition(
        load_spec(one_table(SEOUL_DAYS)).tables[0].partition  # type: ignore[arg-type]
    )
    assert {k.to_user_string() for k in main.asset_layer.selected_asset_keys} == {"prices", "plain"}
    extra = defs.resolve_job_def("stagecopy_all_monthly")
    assert {k.to_user_string() for k in extra.asset_layer.selected_asset_keys} == {"monthly"}
    # The partitioned table's schedule runs its latest partition; the sensor skips it.
    schedules = {s.name: s for s in defs.schedules or []}
    (name,) = [n for n in schedules if "partitions_schedule" in n]
    schedule = schedules[name]
    assert isinstance(schedule, dg.ScheduleDefinition)
    when = datetime(2024, 3, 5, 1, 0, tzinfo=UTC)
    with dg.build_schedule_context(scheduled_execution_time=when) as context:
        request = schedule(context)
    assert isinstance(request, dg.RunRequest) and request.partition_key == "2024-03-04"
    (sensor,) = defs.sensors or []
    assert isinstance(sensor, dg.SensorDefinition)
    assert sensor.asset_selection is not None
    assert {
        k.to_user_string() for k in sensor.asset_selection.resolve(defs.resolve_asset_graph())
    } == {"plain"}


def test_row_counts_are_one_grouped_query() -> None:
    table = load_spec(one_table(SEOUL_DAYS, where="price > 0")).tables[0]
    keys = ("2024-01-02", "2024-01-03")
    condition = (
        "(price > 0) AND (traded_at >= '2024-01-02'::date AND traded_at < '2024-01-04'::date)"
    )
    scope = PartitionScope(table.model_copy(update={"where": parse_where(condition)}), keys, "date")
    assert row_counts_statement(scope).as_string(None) == (
        "SELECT width_bucket(\"traded_at\", ARRAY['2024-01-02'::date, '2024-01-03'::date, "
        '\'2024-01-04\'::date])::text, count(*) FROM "public"."prices" '
        f"WHERE ({parse_where(condition).text}) GROUP BY 1"
    )
    values = load_spec(one_table({"column": "market", "values": ["KOSPI", "KONEX"]})).tables[0]
    scope = PartitionScope(
        values.model_copy(update={"where": parse_where("market IN ('KOSPI')")}), ("KOSPI",), "text"
    )
    assert row_counts_statement(scope).as_string(None) == (
        'SELECT "market"::text, count(*) FROM "public"."prices" '
        "WHERE (market IN ('KOSPI')) GROUP BY 1"
    )
