"""Other tools on the same initial load, when they are installed: sling, dlt, connectorx.

Each runs once, in a process of its own, into a fresh table of its own schema in the target
database; its row count is checked. They are context, not targets: their type mappings differ
(sling and dlt choose their own column types), so only the count is compared.

* sling: the `sling-linux-amd64` wheel carries the binary (`sling` on PATH works too).
* dlt: `dlt[postgres]` plus `pyarrow` (the arrow backend; the default one is slower still).
* connectorx: read side only (source -> Arrow in memory): it has no PostgreSQL writer.

They run with `--competitor-python` (default: this interpreter), so they can live in a venv of
their own without touching the project's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from bench.clusters import BenchClusters
from stagecopy_dagster.identifiers import QualifiedName

SCHEMA_PREFIX = "bench_"


@dataclass(frozen=True)
class Outcome:
    """What one competitor did (or why it did not run)."""

    name: str
    what: str
    seconds: float | None = None
    rows: int | None = None
    maxrss_kb: int | None = None
    note: str = ""


_PROBE = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({mod!r}) else 1)"


def _importable(python: str, module: str) -> bool:
    return (
        subprocess.run(
            [python, "-c", _PROBE.format(mod=module)], capture_output=True, check=False
        ).returncode
        == 0
    )


def _sling_binary(python: str) -> str | None:
    found = shutil.which("sling")
    if found:
        return found
    probe = subprocess.run(
        [python, "-c", "import sling_linux_amd64 as s; print(s.SLING_BIN)"],
        capture_output=True,
        text=True,
        check=False,
    )
    path = probe.stdout.strip()
    return path if probe.returncode == 0 and path and Path(path).is_file() else None


_PEAK = Path(__file__).with_name("peak.py")


def _timed(args: list[str], env: dict[str, str], timeout: float) -> tuple[float, int, str]:
    """Run a child through `peak.py`; return (seconds, its peak RSS in KB, output tail)."""
    with tempfile.TemporaryDirectory(prefix="bench-peak-") as tmp:
        peak_file = Path(tmp) / "peak.json"
        log_file = Path(tmp) / "out.log"
        started = time.perf_counter()
        with log_file.open("wb") as log:
            proc = subprocess.run(
                [sys.executable, "-S", str(_PEAK), str(peak_file), "--", *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        seconds = time.perf_counter() - started
        tail = log_file.read_bytes()[-3000:].decode(errors="replace")
        peak = json.loads(peak_file.read_text()) if peak_file.exists() else {}
    if proc.returncode:
        raise RuntimeError(f"exit {proc.returncode}: {tail.strip()}")
    return seconds, int(peak.get("maxrss_kb", 0)), tail


def _count(url: str, table: QualifiedName) -> int:
    import psycopg
    from psycopg import sql

    with psycopg.connect(url) as conn:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table.identifier)).fetchone()
        assert row is not None
        return int(row[0])


def _drop_schema(url: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def run_sling(cl: BenchClusters, source: QualifiedName, python: str, timeout: float) -> Outcome:
    """`sling run` full-refresh of the source table into `bench_sling.items`."""
    what = "sling full-refresh (initial load)"
    binary = _sling_binary(python)
    if binary is None:
        return Outcome("sling", what, note="not installed (pip install sling-linux-amd64)")
    target = QualifiedName(SCHEMA_PREFIX + "sling", source.name)
    _drop_schema(cl.target.url, target.schema)
    with tempfile.TemporaryDirectory(prefix="sling-home-") as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(
            SLING_HOME_DIR=home,
            SLING_DISABLE_TELEMETRY="true",
            SLING_LOGGING="NO_COLOR",
            BENCH_SRC=cl.source.url + "?sslmode=disable",
            BENCH_TGT=cl.target.url + "?sslmode=disable",
        )
        args = [
            binary, "run",
            "--src-conn", "BENCH_SRC", "--src-stream", f"{source.schema}.{source.name}",
            "--tgt-conn", "BENCH_TGT", "--tgt-object", f"{target.schema}.{target.name}",
            "--mode", "full-refresh",
        ]  # fmt: skip
        try:
            seconds, rss, _ = _timed(args, env, timeout)
        except RuntimeError as exc:
            return Outcome("sling", what, note=f"failed: {str(exc)[-400:]}")
    rows = _count(cl.target.url, target)
    _drop_schema(cl.target.url, target.schema)
    return Outcome("sling", what, seconds, rows, rss)


_DLT_SCRIPT = textwrap.dedent(
    """
    import os, tempfile
    import dlt
    from dlt.sources.sql_database import sql_table

    table = sql_table(
        credentials=os.environ["BENCH_SRC"].replace("postgresql://", "postgresql+psycopg2://", 1),
        schema=os.environ["BENCH_SCHEMA"], table=os.environ["BENCH_TABLE"], backend="pyarrow",
        chunk_size=50000,
    )
    pipeline = dlt.pipeline(
        pipeline_name="stagecopy_bench", pipelines_dir=tempfile.mkdtemp(),
        destination=dlt.destinations.postgres(credentials=os.environ["BENCH_TGT"]),
        dataset_name=os.environ["BENCH_DATASET"],
    )
    pipeline.run(table, write_disposition="replace", loader_file_format="csv")
    """
)


def run_dlt(cl: BenchClusters, source: QualifiedName, python: str, timeout: float) -> Outcome:
    """A dlt pipeline: sql_table (pyarrow backend) -> postgres destination (CSV COPY)."""
    what = "dlt sql_table(pyarrow) -> postgres, replace"
    for module in ("dlt", "pyarrow", "psycopg2"):
        if not _importable(python, module):
            return Outcome(
                "dlt", what, note=f"not installed ({module}; pip install 'dlt[postgres]' pyarrow)"
            )
    dataset = SCHEMA_PREFIX + "dlt"
    _drop_schema(cl.target.url, dataset)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(
        BENCH_SRC=cl.source.url,
        BENCH_TGT=cl.target.url,
        BENCH_SCHEMA=source.schema,
        BENCH_TABLE=source.name,
        BENCH_DATASET=dataset,
        RUNTIME__LOG_LEVEL="WARNING",
        DLT_TELEMETRY_DISABLED="1",
        RUNTIME__DLTHUB_TELEMETRY="false",
    )
    try:
        seconds, rss, _ = _timed([python, "-c", _DLT_SCRIPT], env, timeout)
    except RuntimeError as exc:
        return Outcome("dlt", what, note=f"failed: {str(exc)[-400:]}")
    rows = _count(cl.target.url, QualifiedName(dataset, source.name))
    _drop_schema(cl.target.url, dataset)
    return Outcome("dlt", what, seconds, rows, rss)


_CX_SCRIPT = textwrap.dedent(
    """
    import json, os
    import connectorx as cx
    table = cx.read_sql(os.environ["BENCH_SRC"], os.environ["BENCH_QUERY"], return_type="arrow")
    print(json.dumps({"rows": table.num_rows}))
    """
)


def run_connectorx(
    cl: BenchClusters, source: QualifiedName, python: str, timeout: float
) -> Outcome:
    """connectorx reading the whole table into Arrow (no write: it has no PostgreSQL writer)."""
    what = "connectorx read to Arrow only (no write)"
    if not _importable(python, "connectorx"):
        return Outcome("connectorx", what, note="not installed (pip install connectorx pyarrow)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(
        BENCH_SRC=cl.source.url + "?sslmode=disable",
        BENCH_QUERY=f'SELECT * FROM "{source.schema}"."{source.name}"',
    )
    try:
        seconds, rss, tail = _timed([python, "-c", _CX_SCRIPT], env, timeout)
    except RuntimeError as exc:
        return Outcome("connectorx", what, note=f"failed: {str(exc)[-400:]}")
    rows = json.loads(tail.strip().splitlines()[-1])["rows"]
    return Outcome("connectorx", what, seconds, int(rows), rss)


def run_all(cl: BenchClusters, source: QualifiedName, python: str, timeout: float) -> list[Outcome]:
    """Every competitor, one after the other."""
    return [runner(cl, source, python, timeout) for runner in (run_sling, run_dlt, run_connectorx)]
