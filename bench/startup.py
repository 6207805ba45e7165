"""`python -m bench --startup`: the fixed cost of `stagecopy run` on a 1-row table.

The whole command as a user runs it (no `DAGSTER_HOME`), into an existing target table that
already holds the row (a re-copy: describe, diff, check), `--runs` times; the median is the
start-up figure of docs/performance.md. `stagecopy --help` is timed alongside: the cost of
starting Python and the command itself.
"""

from __future__ import annotations

import os
import resource
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg
import yaml

from bench.cli_run import _command, cli_env
from bench.clusters import BenchClusters
from bench.measured import ChildFailed, measured
from bench.run import BenchFailure, log


@dataclass(frozen=True)
class Startup:
    """Wall and CPU seconds of each `stagecopy run` of one row, and of `stagecopy --help`.

    CPU seconds (user + system of the command and its children) barely move with the
    machine's load; wall seconds do.
    """

    run: tuple[float, ...]
    help: tuple[float, ...]
    run_cpu: tuple[float, ...]
    help_cpu: tuple[float, ...]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_startup(cl: BenchClusters, *, runs: int) -> Startup:
    """Time `stagecopy run` of a 1-row table (and `--help`) `runs` times each."""
    with psycopg.connect(cl.source.url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS public.one_row")
        conn.execute("CREATE TABLE public.one_row (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO public.one_row VALUES (1, 'one')")
    spec = {"tables": [{"source": "public.one_row"}]}
    run_s: list[float] = []
    help_s: list[float] = []
    run_cpu: list[float] = []
    help_cpu: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        spec_path = Path(tmp) / "replication.yaml"
        spec_path.write_text(yaml.safe_dump(spec))
        env = cli_env(cl.source.url, cl.target.url)
        command = [*_command(), "run", "--spec", str(spec_path)]
        try:
            measured(command, env, timeout=300, cwd=Path(tmp))  # creates the target table
            for i in range(runs):
                before = _children_cpu()
                m = measured(command, env, timeout=300, cwd=Path(tmp))
                if "1 tables: ok" not in m.output:
                    raise BenchFailure(f"stagecopy run: no ok line:\n{m.output[-2000:]}")
                between = _children_cpu()
                h = measured([*_command(), "--help"], env, timeout=300, cwd=Path(tmp))
                run_s.append(m.seconds)
                help_s.append(h.seconds)
                run_cpu.append(between - before)
                help_cpu.append(_children_cpu() - between)
                log(
                    f"  {i + 1}/{runs}: run {m.seconds:5.2f} s ({run_cpu[-1]:.2f} s CPU), "
                    f"--help {h.seconds:5.2f} s ({help_cpu[-1]:.2f} s CPU) "
                    f"(load average {os.getloadavg()[0]:.1f})"
                )
        except ChildFailed as exc:
            raise BenchFailure(f"stagecopy failed: {exc}") from exc
    return Startup(tuple(run_s), tuple(help_s), tuple(run_cpu), tuple(help_cpu))


def render(s: Startup) -> str:
    """Medians and ranges."""
    med = statistics.median
    return (
        f"`stagecopy run` of a 1-row table: median {med(s.run):.2f} s wall "
        f"({min(s.run):.2f}-{max(s.run):.2f}, {len(s.run)} runs), {med(s.run_cpu):.2f} s CPU; "
        f"`stagecopy --help`: median {med(s.help):.2f} s wall, {med(s.help_cpu):.2f} s CPU"
    )
