"""`python -m bench`: run the stagecopy benchmark and print the table (see bench/README.md)."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import competitors as comp
from bench import dataset as ds
from bench.cli_run import CLI_RSS_TARGET_MB, CliRun, measure_cli
from bench.clusters import BenchClusters, running_clusters, server_settings
from bench.report import (
    RSS_GROWTH_TARGET,
    RSS_TARGET_MB,
    Sample,
    Summary,
    competitor_lines,
    render,
    summarize,
    write_json,
)
from bench.run import REPO, BenchFailure, Runner, log

#: The table size the issue states its targets for.
TARGET_ROWS = 1_000_000


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument(
        "--shape",
        choices=("narrow", "wide", "both"),
        default="both",
        help="data set: narrow (~280 B/row), wide (20 columns, ~1 KB/row, TOAST), or both",
    )
    p.add_argument(
        "--rows",
        type=int,
        help="rows in the source table (default: 1,000,000 narrow, 1,500,000 wide)",
    )
    p.add_argument("--runs", type=int, default=5, help="rounds; the table shows medians")
    p.add_argument("--pg", type=int, choices=(18, 15), default=18, help="PostgreSQL version")
    p.add_argument("--quick", action="store_true", help="100k rows, 3 runs (CI smoke)")
    p.add_argument(
        "--memory",
        action="store_true",
        help="also measure the copier's peak RSS at the narrow rows and N x them (slow)",
    )
    p.add_argument(
        "--memory-factor",
        type=int,
        default=5,
        help="N for --memory (default 5; 10 gives the issue's 1M / 10M rows)",
    )
    p.add_argument(
        "--competitors",
        action="store_true",
        help="also time sling, dlt and connectorx side by side (the `bench` extra; +3 min)",
    )
    p.add_argument(
        "--competitor-python",
        default=sys.executable,
        help="interpreter that has the `bench` extra's tools (default: this one)",
    )
    p.add_argument(
        "--competitor-runs",
        type=int,
        default=1,
        help="runs of each other tool; the table shows medians (default 1: fits 10 minutes)",
    )
    p.add_argument(
        "--sling-upsert",
        action="store_true",
        help="with --competitors, also sling's full upsert after its full-refresh (+1 min)",
    )
    p.add_argument(
        "--dlt-defaults",
        action="store_true",
        help="with --competitors, also dlt with its default settings (slow: minutes at 1M rows)",
    )
    p.add_argument(
        "--write-block",
        type=int,
        help="CopyOptions.write_block for the copier, in bytes (default: the copier's own)",
    )
    p.add_argument(
        "--many",
        action="store_true",
        help="instead: 8 tables x 200k rows, `stagecopy run --jobs N` for N = 1, 2, 4",
    )
    p.add_argument(
        "--startup",
        action="store_true",
        help="instead: `stagecopy run` of a 1-row table, --runs times (start-up cost)",
    )
    p.add_argument("--workdir", type=Path, help="where the clusters live (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the clusters' data directory")
    p.add_argument(
        "--json",
        type=Path,
        help="where to write the record (default: bench/results/<date>.json)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.runs = 3
    # --runs 0 with --memory: only the peak RSS lines (and the CLI's), no rounds.
    min_runs = 0 if args.memory else 1
    if (
        (args.rows is not None and args.rows < 1000)
        or args.runs < min_runs
        or args.competitor_runs < 1
    ):
        p.error("--rows must be at least 1000, --runs and --competitor-runs at least 1")
    return args


def _shapes(args: argparse.Namespace) -> list[tuple[ds.Shape, int]]:
    """The data sets to run, in order, each with its row count."""
    names = ("narrow", "wide") if args.shape == "both" else (args.shape,)
    shapes = [ds.SHAPES[n] for n in names]
    return [(s, args.rows or (s.quick_rows if args.quick else s.default_rows)) for s in shapes]


def _memory_lines(
    a_samples: list[Sample],
    one_shot: dict[str, Any] | None,
    big: dict[str, Any] | None,
    cli: CliRun,
    rows: int,
    *,
    factor: int = 5,
) -> list[dict[str, Any]]:
    """The (f) lines: peak RSS of the copier process at --rows (and N x), and of the CLI."""
    lines = []
    if one_shot is not None:
        base, imports = one_shot["vmhwm_kb"] / 1024, one_shot["baseline_rss_kb"] / 1024
    else:
        base = statistics.median(s.maxrss_kb or 0 for s in a_samples) / 1024
        imports = statistics.median(s.detail["baseline_rss_kb"] for s in a_samples) / 1024
    lines.append(
        {
            "label": f"(f) peak RSS, {rows:,} rows ({imports:.0f} MB imports)",
            "maxrss_mb": base,
            "baseline_mb": imports,
            "target_text": f"<{RSS_TARGET_MB:g}MB",
            "verdict": "PASS" if base < RSS_TARGET_MB else "MISS",
        }
    )
    if big is not None:
        mb = big["vmhwm_kb"] / 1024
        growth = mb / base
        ok = mb < RSS_TARGET_MB and growth <= RSS_GROWTH_TARGET
        lines.append(
            {
                "label": f"(f) peak RSS, {factor * rows:,} rows "
                f"({big['baseline_rss_kb'] / 1024:.0f} MB imports)",
                "maxrss_mb": mb,
                "baseline_mb": big["baseline_rss_kb"] / 1024,
                "ratio": growth,
                "ratio_text": f"{growth:.2f} x 1x",
                "target_text": f"<={RSS_GROWTH_TARGET:g}",
                "verdict": "PASS" if ok else "MISS",
                "seconds": big["seconds"],
            }
        )
    cli_mb = cli.maxrss_kb / 1024
    lines.append(
        {
            "label": f"(f) peak RSS, `stagecopy run` CLI, {cli.rows:,} rows",
            "maxrss_mb": cli_mb,
            "target_text": f"<{CLI_RSS_TARGET_MB:g}MB",
            "verdict": "PASS" if cli_mb < CLI_RSS_TARGET_MB else "MISS",
            "seconds": cli.seconds,
        }
    )
    return lines


#: Above this 1-minute load average the numbers come out slower than the machine can do.
_BUSY_LOAD = 1.5


@dataclass
class _Measured:
    """What the stagecopy rounds measured, before the other tools run."""

    runner: Runner
    rounds: list[dict[str, float]]
    cli: CliRun
    one_shot: dict[str, Any] | None
    big: dict[str, Any] | None


def _record(args: argparse.Namespace, load_before: tuple[float, float, float]) -> dict[str, Any]:
    """The start of the JSON record: the run's settings and the machine."""
    return {
        "started": datetime.now().isoformat(timespec="seconds"),
        "shape": args.shape,
        "rows": args.rows,
        "runs": args.runs,
        "write_block": args.write_block,
        "competitor_python": args.competitor_python if args.competitors else None,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_before": load_before,
        },
    }


def _rounds(runner: Runner, runs: int) -> list[dict[str, float]]:
    """Run the timed rounds; each one's load average and seconds."""
    rounds: list[dict[str, float]] = []
    for run in range(runs):
        load = os.getloadavg()[0]
        log(f"round {run + 1}/{runs} (load average {load:.1f})")
        round_started = time.perf_counter()
        runner.round(run)
        rounds.append({"load_average": load, "seconds": time.perf_counter() - round_started})
    return rounds


def _measure(cl: BenchClusters, args: argparse.Namespace, shape: ds.Shape, rows: int) -> _Measured:
    """Seed the source, run the rounds, then the CLI's and (with --memory) the copier's RSS."""
    runner = Runner(cl, rows, write_block=args.write_block, shape=shape)
    one_shot = big = None
    try:
        runner.setup_source()
        rounds = _rounds(runner, args.runs)
        runner.check_source_digest()
        log("stagecopy run (the CLI, Dagster in process): peak RSS")
        cli = measure_cli(runner)
        if args.memory and shape is ds.NARROW:
            log(f"memory: fresh copier processes, 1x and {args.memory_factor}x rows")
            one_shot = runner.memory_run(rows)
            big = runner.memory_run(args.memory_factor * rows)
    finally:
        runner.close()
    return _Measured(runner, rounds, cli, one_shot, big)


def _competitors(cl: BenchClusters, args: argparse.Namespace) -> list[comp.Outcome]:
    """Time the other tools (with --competitors), logging each one's outcome."""
    outcomes: list[comp.Outcome] = []
    if not args.competitors:
        return outcomes
    log(f"other tools, {args.competitor_runs} run(s) each")
    setting = comp.Setting(
        clusters=cl,
        source=ds.SOURCE_TABLE,
        python=args.competitor_python,
        runs=args.competitor_runs,
        timeout=600,
        expected=comp.expected_of(cl.source.url, ds.SOURCE_TABLE),
    )
    for outcome in comp.run_all(
        setting, sling_upsert=args.sling_upsert, dlt_defaults=args.dlt_defaults
    ):
        outcomes.append(outcome)
        shown = " ".join(f"{x:.2f}" for x in outcome.seconds) or "-"
        rss = f"{(outcome.maxrss_kb or 0) / 1024:.0f} MB"
        log(f"  {outcome.key}: {shown} s, {outcome.rows} rows, {rss} {outcome.note}")
    return outcomes


def _print_misses(
    rows: int,
    summaries: list[Summary],
    *,
    memory: list[dict[str, Any]],
    others: list[dict[str, Any]],
) -> None:
    """Name every target the run missed (stated for TARGET_ROWS rows)."""
    misses = (
        [s.key for s in summaries if s.verdict == "MISS"]
        + [m["label"] for m in memory if m["verdict"] == "MISS"]
        + [c["key"] for c in others if c["verdict"] == "MISS"]
    )
    if misses:
        scale = "" if rows >= TARGET_ROWS else f" at {rows:,} rows"
        print(f"targets missed{scale}: {', '.join(misses)}")
        if rows < TARGET_ROWS:
            # A run's fixed cost (lock, describe, commit) weighs more in a small table.
            print(f"(the targets are stated for {TARGET_ROWS:,} rows)")


@dataclass
class _ShapeResult:
    """One data set's measurements, summarized."""

    shape: ds.Shape
    rows: int
    measured: _Measured
    outcomes: list[comp.Outcome]


def _report_shape(args: argparse.Namespace, done: _ShapeResult) -> dict[str, Any]:
    """Print one data set's table; its part of the JSON record."""
    samples = done.measured.runner.samples
    summaries = summarize(samples)
    memory = _memory_lines(
        [s for s in samples if s.key == "a"],
        done.measured.one_shot,
        done.measured.big,
        done.measured.cli,
        done.rows,
        factor=args.memory_factor,
    )
    others = competitor_lines(summaries, done.outcomes)
    table = render(summaries, memory, others, args.competitor_runs)
    print()
    print(f"shape {done.shape.name}: {done.rows:,} rows")
    print(table)
    _print_misses(done.rows, summaries, memory=memory, others=others)
    return {
        "rows": done.rows,
        "rounds": done.measured.rounds,
        "summaries": summaries,
        "memory": memory,
        "competitors": others,
        "samples": samples,
        "table": table.splitlines(),
    }


def _other_shape(args: argparse.Namespace) -> int:
    """`--many` or `--startup`: their own data and table (bench/many.py, bench/startup.py)."""
    from bench import many, startup  # noqa: PLC0415 (only for these modes)

    try:
        with running_clusters(args.pg, args.workdir, keep=args.keep) as cl:
            log(f"PostgreSQL {cl.install.version} source and target clusters up")
            if args.startup:
                print(startup.render(startup.run_startup(cl, runs=args.runs)))
                return 0
            many.seed(cl)
            results = many.run_many(cl, runs=args.runs)
    except BenchFailure as exc:
        log(f"BENCHMARK FAILED: {exc}")
        return 2
    print(many.render(results, tables=many.TABLES, rows=many.ROWS))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if args.many or args.startup:
        return _other_shape(args)
    started = time.perf_counter()
    load_before = os.getloadavg()
    if load_before[0] > _BUSY_LOAD:
        log(f"warning: the machine is busy (load average {load_before[0]:.1f}): slower numbers")
    record = _record(args, load_before)
    results: list[_ShapeResult] = []
    try:
        with running_clusters(args.pg, args.workdir, keep=args.keep) as cl:
            log(f"PostgreSQL {cl.install.version} source and target clusters up")
            record["settings"] = server_settings(cl.target)
            for shape, rows in _shapes(args):
                log(f"shape {shape.name}: {rows:,} rows")
                measured = _measure(cl, args, shape, rows)
                # The other tools run on the narrow table (the one their targets are set for).
                outcomes = _competitors(cl, args) if shape is ds.NARROW else []
                results.append(_ShapeResult(shape, rows, measured, outcomes))
    except BenchFailure as exc:
        log(f"BENCHMARK FAILED: {exc}")
        return 2
    elapsed = time.perf_counter() - started
    print()
    print(
        f"stagecopy benchmark: {', '.join(f'{r.shape.name} {r.rows:,} rows' for r in results)}, "
        f"{args.runs} runs, PostgreSQL {args.pg}, "
        + (f"write_block {args.write_block}, " if args.write_block else "")
        + f"{os.cpu_count()} CPUs, load average {load_before[0]:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after; {elapsed / 60:.1f} min"
    )
    shapes = {r.shape.name: _report_shape(args, r) for r in results}
    record["machine"]["load_average_after"] = os.getloadavg()
    record.update(seconds=elapsed, shapes=shapes)
    out = args.json or REPO / "bench" / "results" / f"{datetime.now():%Y-%m-%dT%H%M%S}.json"
    write_json(out, record)
    print(f"\nrecord: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
