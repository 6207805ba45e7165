"""Other tools on the same data, side by side with stagecopy: sling, dlt, connectorx.

Each runs in a process of its own (its peak RSS measured like the CLI's, `bench.measured`)
into a schema of its own in the target database, after the rounds. Their results are checked
by row count and the sum of the key (`sum(id)`): their column types differ from the source's
(they choose their own), so the row hash the stagecopy paths are checked with does not apply.

* sling (`sling-linux-amd64` wheel, which carries the binary; `sling` on PATH works too):
  `sling run --mode full-refresh` into a table that does not exist; with `--sling-upsert`,
  then a full upsert (`--mode incremental --primary-key id`, no update key: every source row
  merged) into it (about 8 x (b) at 1M rows: a minute).
* dlt, its fastest documented path: `sql_table(backend="connectorx")` reads the table into
  Arrow, written as parquet and loaded by the postgres destination through ADBC
  (`adbc-driver-postgresql` installed, `loader_file_format="parquet"`), into an empty dataset.
  The script checks that the load job really was parquet (dlt falls back to another format
  when the ADBC driver is missing).
* dlt with its defaults (`--dlt-defaults`): `sql_table()` with the SQLAlchemy backend, rows as
  Python dicts, loaded with INSERT VALUES. Much slower, so not run unless asked.
* connectorx: reading only (source -> Arrow in memory): it has no PostgreSQL writer.

The tools come from the `bench` extra (`pip install -e '.[bench]'`) or from any interpreter
that has them (`--competitor-python`).
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import psycopg
from psycopg import sql

from bench.clusters import BenchClusters
from bench.measured import ChildFailed, Measured, clean_env, measured
from stagecopy_dagster.identifiers import QualifiedName

SCHEMA_PREFIX = "bench_"
KEY = "id"

# The issue's targets: a competitor must take at least this many times (a)'s median.
SLING_TARGET = 3.0
DLT_TARGET = 2.5


@dataclass(frozen=True)
class Expected:
    """What a complete copy of the source holds: rows and the sum of the key."""

    rows: int
    key_sum: int


@dataclass(frozen=True)
class Outcome:
    """What one competitor path did (or why it did not run)."""

    key: str
    name: str
    what: str
    versus: str | None = None
    """The stagecopy line its seconds are divided by (`a`, `b`)."""
    target: float | None = None
    """Its seconds must be at least this many times the stagecopy line's (PASS/MISS)."""
    seconds: list[float] = field(default_factory=list)
    rows: int | None = None
    maxrss_kb: int | None = None
    version: str = ""
    note: str = ""
    correct: bool = False

    @property
    def median_seconds(self) -> float | None:
        """The median over its runs (None when it did not run)."""
        return statistics.median(self.seconds) if self.seconds else None


@dataclass(frozen=True)
class Setting:
    """Where the competitors run: clusters, source table, interpreter, runs and timeout."""

    clusters: BenchClusters
    source: QualifiedName
    python: str
    runs: int
    timeout: float
    expected: Expected


_PROBE = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({mod!r}) else 1)"


def _importable(python: str, module: str) -> bool:
    probe = [python, "-c", _PROBE.format(mod=module)]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def _sling_binary(python: str) -> str | None:
    probe = subprocess.run(
        [python, "-c", "import sling_linux_amd64 as s; print(s.SLING_BIN)"],
        capture_output=True,
        text=True,
        check=False,
    )
    path = probe.stdout.strip()
    if probe.returncode == 0 and path and Path(path).is_file():
        return path
    return shutil.which("sling")


def _version(args: list[str]) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    return proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 and proc.stdout else ""


def expected_of(url: str, table: QualifiedName) -> Expected:
    """Rows and key sum of `table` (the source, after the rounds put it back whole)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*), coalesce(sum({}), 0) FROM {}").format(
                sql.Identifier(KEY), table.identifier
            )
        ).fetchone()
    assert row is not None
    return Expected(int(row[0]), int(row[1]))


def _check(url: str, table: QualifiedName, expected: Expected) -> tuple[int, str]:
    """The table's row count, and a note when count or key sum differ from `expected`."""
    got = expected_of(url, table)
    if got == expected:
        return got.rows, ""
    return got.rows, f"WRONG RESULT: {got.rows} rows, key sum {got.key_sum}; expected {expected}"


def _drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _checkpoint(cl: BenchClusters) -> None:
    """Flush both clusters, as before every stagecopy step."""
    for url in (cl.source.url, cl.target.url):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")


def _repeat(
    base: Outcome,
    s: Setting,
    table: QualifiedName,
    prepare: Callable[[], None],
    run_once: Callable[[], Measured],
) -> Outcome:
    """`prepare()` then time `run_once()` `s.runs` times; check the table after each run."""
    seconds: list[float] = []
    peak = rows = 0
    for _ in range(s.runs):
        prepare()
        _checkpoint(s.clusters)
        try:
            m = run_once()
        except (ChildFailed, ValueError) as exc:
            return _with(base, note=f"failed: {str(exc)[-600:]}")
        rows, wrong = _check(s.clusters.target.url, table, s.expected)
        if wrong:
            return _with(base, seconds=[m.seconds], rows=rows, maxrss_kb=m.maxrss_kb, note=wrong)
        seconds.append(m.seconds)
        peak = max(peak, m.maxrss_kb)
    return _with(base, seconds=seconds, rows=rows, maxrss_kb=peak, correct=True)


def _with(base: Outcome, **changes: object) -> Outcome:
    return replace(base, **changes)  # type: ignore[arg-type]


# -- sling -------------------------------------------------------------------------------------


def _sling_env(cl: BenchClusters, home: str) -> dict[str, str]:
    return clean_env(
        SLING_HOME_DIR=home,
        SLING_DISABLE_TELEMETRY="true",
        SLING_LOGGING="NO_COLOR",
        BENCH_SRC=cl.source.url + "?sslmode=disable",
        BENCH_TGT=cl.target.url + "?sslmode=disable",
    )


def _sling_args(binary: str, source: QualifiedName, target: QualifiedName) -> list[str]:
    return [
        binary, "run",
        "--src-conn", "BENCH_SRC", "--src-stream", f"{source.schema}.{source.name}",
        "--tgt-conn", "BENCH_TGT", "--tgt-object", f"{target.schema}.{target.name}",
    ]  # fmt: skip


def run_sling(s: Setting, *, upsert: bool) -> list[Outcome]:
    """`sling run` full-refresh into a new table; then, with `upsert`, a full upsert into it."""
    cl = s.clusters
    refresh = Outcome(
        "sling_full_refresh",
        "sling",
        "sling full-refresh, new table",
        versus="a",
        target=SLING_TARGET,
    )
    merge = Outcome("sling_upsert", "sling", "sling full upsert (incremental, pk only)", "b")
    binary = _sling_binary(s.python)
    if binary is None:
        missing = "not installed (pip install -e '.[bench]', or sling-linux-amd64)"
        return [_with(refresh, note=missing)] + ([_with(merge, note=missing)] if upsert else [])
    version = _version([binary, "--version"]).removeprefix("Version:").strip()
    target = QualifiedName(SCHEMA_PREFIX + "sling", s.source.name)
    args = _sling_args(binary, s.source, target)
    with tempfile.TemporaryDirectory(prefix="sling-home-") as home:
        env = _sling_env(cl, home)
        outcomes = [
            _repeat(
                _with(refresh, version=version),
                s,
                target,
                lambda: _drop_schema(cl.target.url, target.schema),
                lambda: measured([*args, "--mode", "full-refresh"], env, timeout=s.timeout),
            )
        ]
        if upsert:
            upsert_args = [*args, "--mode", "incremental", "--primary-key", KEY]
            outcomes.append(
                _repeat(
                    _with(merge, version=version),
                    s,
                    target,
                    lambda: None,  # the full-refresh left the whole table there
                    lambda: measured(upsert_args, env, timeout=s.timeout),
                )
                if outcomes[0].correct
                else _with(merge, version=version, note="skipped: the full-refresh failed")
            )
    _drop_schema(cl.target.url, target.schema)
    return outcomes


# -- dlt ---------------------------------------------------------------------------------------

_DLT_SCRIPT = textwrap.dedent(
    """
    import json, os, tempfile
    import dlt
    from dlt.sources.sql_database import sql_table

    fastest = os.environ["BENCH_DLT_FASTEST"] == "1"
    kwargs = {"backend": "connectorx"} if fastest else {}
    table = sql_table(
        credentials=os.environ["BENCH_SRC"], schema=os.environ["BENCH_SCHEMA"],
        table=os.environ["BENCH_TABLE"], **kwargs,
    )
    with tempfile.TemporaryDirectory(prefix="dlt-bench-") as pipelines_dir:
        pipeline = dlt.pipeline(
            pipeline_name="stagecopy_bench", pipelines_dir=pipelines_dir,
            destination=dlt.destinations.postgres(credentials=os.environ["BENCH_TGT"]),
            dataset_name=os.environ["BENCH_DATASET"],
        )
        info = pipeline.run(table, loader_file_format="parquet" if fastest else None)
        formats = sorted({
            job.job_file_info.file_format
            for package in info.load_packages
            for job in package.jobs["completed_jobs"]
            if job.job_file_info.table_name == os.environ["BENCH_TABLE"]
        })
    print(json.dumps({"dlt": dlt.__version__, "formats": formats}))
    """
)


def run_dlt(s: Setting, *, fastest: bool) -> Outcome:
    """A dlt pipeline from the source table into an empty dataset of the target."""
    if fastest:
        base = Outcome(
            "dlt_fastest",
            "dlt",
            "dlt connectorx, parquet via ADBC, empty target",
            versus="a",
            target=DLT_TARGET,
        )
        needed = (
            "dlt",
            "psycopg2",
            "sqlalchemy",
            "pyarrow",
            "connectorx",
            "adbc_driver_postgresql",
        )
    else:
        base = Outcome("dlt_defaults", "dlt", "dlt defaults (sqlalchemy rows, INSERT VALUES)", "a")
        needed = ("dlt", "psycopg2", "sqlalchemy")
    missing = [m for m in needed if not _importable(s.python, m)]
    if missing:
        return _with(base, note=f"not installed ({', '.join(missing)}; pip install -e '.[bench]')")
    cl = s.clusters
    dataset = SCHEMA_PREFIX + base.key
    src = cl.source.url.replace("postgresql://", "postgresql+psycopg2://", 1)
    env = clean_env(
        BENCH_SRC=src + "?sslmode=disable",  # connectorx reads the URL dlt derives from this
        BENCH_TGT=cl.target.url,
        BENCH_SCHEMA=s.source.schema,
        BENCH_TABLE=s.source.name,
        BENCH_DATASET=dataset,
        BENCH_DLT_FASTEST="1" if fastest else "0",
        RUNTIME__LOG_LEVEL="WARNING",
        RUNTIME__DLTHUB_TELEMETRY="false",
        DLT_TELEMETRY_DISABLED="1",
    )
    reports: list[dict[str, object]] = []

    def once() -> Measured:
        m = measured([s.python, "-c", _DLT_SCRIPT], env, timeout=s.timeout)
        report = json.loads(m.output.strip().splitlines()[-1])
        if fastest and report["formats"] != ["parquet"]:
            raise ValueError(f"dlt loaded {report['formats']}, not parquet (ADBC driver found?)")
        reports.append(report)
        return m

    outcome = _repeat(
        base,
        s,
        QualifiedName(dataset, s.source.name),
        lambda: _drop_schema(cl.target.url, dataset),
        once,
    )
    _drop_schema(cl.target.url, dataset)
    if reports:
        formats = "+".join(str(f) for f in reports[-1]["formats"])  # type: ignore[union-attr]
        outcome = _with(outcome, version=f"{reports[-1]['dlt']} ({formats})")
    return outcome


# -- connectorx (read only) --------------------------------------------------------------------

_CX_SCRIPT = textwrap.dedent(
    """
    import json, os
    import connectorx as cx
    table = cx.read_sql(os.environ["BENCH_SRC"], os.environ["BENCH_QUERY"], return_type="arrow")
    print(json.dumps({"rows": table.num_rows, "version": cx.__version__}))
    """
)


def run_connectorx(s: Setting) -> Outcome:
    """connectorx reading the whole table into Arrow (no write: it has no PostgreSQL writer)."""
    base = Outcome("connectorx", "connectorx", "connectorx read to Arrow only (no write)", "a")
    if not _importable(s.python, "connectorx"):
        return _with(base, note="not installed (pip install -e '.[bench]')")
    env = clean_env(
        BENCH_SRC=s.clusters.source.url + "?sslmode=disable",
        BENCH_QUERY=sql.SQL("SELECT * FROM {}").format(s.source.identifier).as_string(),
    )
    seconds: list[float] = []
    peak = 0
    report: dict[str, object] = {}
    for _ in range(s.runs):
        try:
            m = measured([s.python, "-c", _CX_SCRIPT], env, timeout=s.timeout)
        except ChildFailed as exc:
            return _with(base, note=f"failed: {str(exc)[-600:]}")
        report = json.loads(m.output.strip().splitlines()[-1])
        seconds.append(m.seconds)
        peak = max(peak, m.maxrss_kb)
    rows = int(report["rows"])  # type: ignore[call-overload]
    ok = rows == s.expected.rows
    return _with(
        base,
        seconds=seconds,
        rows=rows,
        maxrss_kb=peak,
        version=str(report.get("version", "")),
        correct=ok,
        note="" if ok else f"WRONG RESULT: {rows} rows read; expected {s.expected.rows}",
    )


def run_all(
    s: Setting, *, sling_upsert: bool = False, dlt_defaults: bool = False
) -> Iterator[Outcome]:
    """Every competitor, one after the other, each outcome as soon as it is known."""
    yield from run_sling(s, upsert=sling_upsert)
    yield run_dlt(s, fastest=True)
    if dlt_defaults:
        yield run_dlt(s, fastest=False)
    yield run_connectorx(s)
