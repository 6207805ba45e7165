"""(f) `stagecopy run`: the whole CLI process, Dagster included, on one table of the data set.

The command a user runs: `stagecopy run --spec replication.yaml` with the connection URLs in
`STAGECOPY_SOURCE_URL` / `STAGECOPY_TARGET_URL` (never argv), no `DAGSTER_HOME` (an ephemeral
instance). It imports Dagster, builds the definitions, materializes the table's asset in
process (an initial load of `bench.items` into the new table `bench.items_cli`) and runs its
integrity check. Its peak RSS is that process' `VmHWM` (with any child it waited for), read by
`bench/peak.py`; the result is checked like every other path: row count and hash sum.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml
from psycopg import sql

from bench import dataset as ds
from bench.measured import ChildFailed, clean_env, measured
from bench.run import REPO, BenchFailure, Runner, log
from stagecopy_dagster.identifiers import QualifiedName

CLI_TARGET = QualifiedName(ds.SCHEMA, f"{ds.SOURCE_TABLE.name}_cli")
CLI_RSS_TARGET_MB = 300.0


@dataclass(frozen=True)
class CliRun:
    """One `stagecopy run`: wall seconds from launch to exit (imports included), peak RSS."""

    seconds: float
    maxrss_kb: int
    rows: int


def _command() -> list[str]:
    """The `stagecopy` console script next to this interpreter, else `python -m` the CLI."""
    script = Path(sys.executable).with_name("stagecopy")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "stagecopy_dagster.cli"]


def cli_env(source_url: str, target_url: str) -> dict[str, str]:
    """The environment a measured `stagecopy` child gets: the URLs, this checkout, no instance."""
    env = clean_env(
        STAGECOPY_SOURCE_URL=source_url,
        STAGECOPY_TARGET_URL=target_url,
        DAGSTER_DISABLE_TELEMETRY="1",
    )
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    for name in ("DAGSTER_HOME", "STAGECOPY_SPEC"):
        env.pop(name, None)
    return env


def measure_cli(runner: Runner, *, timeout: float = 600) -> CliRun:
    """Run `stagecopy run` on the data set's table into `CLI_TARGET`; check it; drop it."""
    drop = sql.SQL("DROP TABLE IF EXISTS {}").format(CLI_TARGET.identifier)
    runner.on_target(lambda c: c.execute(drop))
    spec = {
        "tables": [
            {
                "source": str(ds.SOURCE_TABLE),
                "target": str(CLI_TARGET),
                "mode": "merge",
                "description": "stagecopy benchmark: the CLI's peak RSS",
            }
        ]
    }
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        spec_path = Path(tmp) / "replication.yaml"
        spec_path.write_text(yaml.safe_dump(spec, allow_unicode=True))
        env = clean_env(
            STAGECOPY_SOURCE_URL=runner.cl.source.url,
            STAGECOPY_TARGET_URL=runner.cl.target.url,
            DAGSTER_DISABLE_TELEMETRY="1",
        )
        # The stagecopy next to this bench/ (as the copier worker imports it), not another
        # checkout an editable install may point at.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        for name in ("DAGSTER_HOME", "STAGECOPY_SPEC"):
            env.pop(name, None)
        runner.checkpoint()
        try:
            m = measured(
                [*_command(), "run", "--spec", str(spec_path)], env, timeout=timeout, cwd=Path(tmp)
            )
        except ChildFailed as exc:
            raise BenchFailure(f"stagecopy run failed: {exc}") from exc
    if "integrity passed" not in m.output or "1 tables: ok" not in m.output:
        raise BenchFailure(f"stagecopy run did not report a passed check:\n{m.output[-2000:]}")
    runner.verify("stagecopy run", CLI_TARGET, runner.source_digest)
    runner.on_target(lambda c: c.execute(drop))
    log(
        f"  cli      {m.seconds:7.2f} s  {runner.source_digest.rows} rows, "
        f"peak RSS {m.maxrss_kb / 1024:.0f} MB (stagecopy run, Dagster in process)"
    )
    return CliRun(m.seconds, m.maxrss_kb, runner.source_digest.rows)
