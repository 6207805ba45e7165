"""`python -m bench --many`: many tables at once, `stagecopy run --jobs N` for N = 1, 2, 4.

Eight tables of 200,000 rows (about 280 bytes a row, as the main data set) are copied into an
empty target by the CLI, as a user runs it (no `DAGSTER_HOME`: for N > 1 a temporary instance
whose pools allow 4 copies at once). Each run starts from empty target tables and is checked
against the source (count and a hash sum per table) besides the run's own integrity checks.
The report gives each N's median wall time (the whole command, start-up included) and its
speed-up over N = 1.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg
import yaml
from psycopg import sql

from bench.cli_run import _command, cli_env
from bench.clusters import BenchClusters
from bench.measured import ChildFailed, measured
from bench.run import BenchFailure, log

SCHEMA = "many"
TABLES = 8
ROWS = 200_000
JOBS = (1, 2, 4)

_SEED = """
CREATE TABLE {table} (
    id bigint PRIMARY KEY,
    name text NOT NULL,
    note text,
    amount numeric(14, 2),
    ratio float8,
    attrs jsonb,
    created_at timestamptz NOT NULL
);
INSERT INTO {table}
SELECT g,
       '종목 ' || g || E'\\t' || md5(g::text),
       CASE WHEN g % 10 = 0 THEN NULL ELSE repeat(md5((g * 7)::text), 3) END,
       (g * 13.37)::numeric(14, 2),
       g / 7.0,
       jsonb_build_object('k', g % 97, 'tag', md5(g::text)),
       '2026-01-01'::timestamptz + g * interval '1 second'
FROM generate_series(1, {rows}) g;
"""


@dataclass(frozen=True)
class JobsResult:
    """The runs of one `--jobs N`: wall seconds of each, the machine's busy CPU seconds of each."""

    jobs: int
    seconds: tuple[float, ...]
    cpu_seconds: tuple[float, ...] = ()
    """CPU time the whole machine spent during each run (`/proc/stat`: both PostgreSQL
    servers, the command, its step processes and anything else running)."""

    @property
    def median(self) -> float:
        """The median wall time."""
        return statistics.median(self.seconds)

    @property
    def cpu_median(self) -> float | None:
        """The median busy CPU seconds (None where `/proc/stat` cannot be read)."""
        return statistics.median(self.cpu_seconds) if self.cpu_seconds else None


def busy_cpu_seconds() -> float | None:
    """CPU seconds the machine has spent busy since boot (all cores), from `/proc/stat`."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    ticks = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq + steal) / ticks


def _table(i: int) -> sql.Identifier:
    return sql.Identifier(SCHEMA, f"t{i}")


def _digests(url: str, tables: int) -> list[tuple[int, int]]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = []
        for i in range(tables):
            row = conn.execute(
                sql.SQL("SELECT count(*), coalesce(sum(hashtext(t::text)), 0) FROM {} t").format(
                    _table(i)
                )
            ).fetchone()
            assert row is not None
            rows.append((int(row[0]), int(row[1])))
    return rows


def seed(cl: BenchClusters, *, tables: int = TABLES, rows: int = ROWS) -> None:
    """The source tables (the target schema is created by the first run)."""
    with psycopg.connect(cl.source.url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SCHEMA)))
        for i in range(tables):
            conn.execute(
                sql.SQL(_SEED).format(table=_table(i), rows=sql.Literal(rows))  # type: ignore[arg-type]
            )
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(_table(i)))


def _empty_target(cl: BenchClusters) -> None:
    """An empty target schema. It exists before the run: tables copied side by side into a
    schema that does not exist yet would wait for each other (the first copy creates the
    schema in its transaction, and the others' CREATE SCHEMA waits for it to commit)."""
    with psycopg.connect(cl.target.url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SCHEMA)))
        conn.execute("CHECKPOINT")


def run_many(cl: BenchClusters, *, runs: int, tables: int = TABLES) -> list[JobsResult]:
    """Time `stagecopy run --jobs N` for each N of JOBS, `runs` times, verifying every run."""
    spec = {"tables": [{"source": f"{SCHEMA}.t{i}"} for i in range(tables)]}
    expected = _digests(cl.source.url, tables)
    seconds: dict[int, list[float]] = {n: [] for n in JOBS}
    cpu: dict[int, list[float]] = {n: [] for n in JOBS}
    with tempfile.TemporaryDirectory(prefix="bench-many-") as tmp:
        spec_path = Path(tmp) / "replication.yaml"
        spec_path.write_text(yaml.safe_dump(spec))
        env = cli_env(cl.source.url, cl.target.url)
        for run in range(runs):
            # Interleaved, so a change in the machine's load touches every N alike.
            for jobs in JOBS:
                _empty_target(cl)
                command = [*_command(), "run", "--spec", str(spec_path), "--jobs", str(jobs)]
                busy_before = busy_cpu_seconds()
                try:
                    m = measured(command, env, timeout=1200, cwd=Path(tmp))
                except ChildFailed as exc:
                    raise BenchFailure(f"stagecopy run --jobs {jobs} failed: {exc}") from exc
                busy_after = busy_cpu_seconds()
                if busy_before is not None and busy_after is not None:
                    cpu[jobs].append(busy_after - busy_before)
                if f"{tables} tables: ok" not in m.output:
                    raise BenchFailure(f"--jobs {jobs}: no ok line:\n{m.output[-2000:]}")
                if _digests(cl.target.url, tables) != expected:
                    raise BenchFailure(f"--jobs {jobs}: the target differs from the source")
                seconds[jobs].append(m.seconds)
                busy = f", machine CPU {cpu[jobs][-1]:.1f} s" if cpu[jobs] else ""
                log(
                    f"  round {run + 1}/{runs} --jobs {jobs}: {m.seconds:6.2f} s{busy} "
                    f"(load average {os.getloadavg()[0]:.1f})"
                )
    return [JobsResult(n, tuple(seconds[n]), tuple(cpu[n])) for n in JOBS]


def render(results: list[JobsResult], *, tables: int, rows: int) -> str:
    """The table: each N's median (and range) and its speed-up over N = 1."""
    base = results[0].median
    lines = [
        f"`stagecopy run --jobs N`, {tables} tables x {rows:,} rows, empty target, "
        f"{os.cpu_count()} CPUs (medians of {len(results[0].seconds)} runs)",
        "| N | seconds (median) | range | speed-up over N = 1 | machine CPU s (cores busy) |",
        "|---|---|---|---|---|",
    ]
    lines.extend(
        f"| {r.jobs} | {r.median:.1f} | {min(r.seconds):.1f}-{max(r.seconds):.1f} | "
        f"{base / r.median:.2f} x | {_busy(r)} |"
        for r in results
    )
    return "\n".join(lines)


def _busy(result: JobsResult) -> str:
    """Median CPU seconds of the machine during the runs, and the cores that kept busy."""
    cpu = result.cpu_median
    return "" if cpu is None else f"{cpu:.1f} ({cpu / result.median:.2f})"
