"""stagecopy runs in a process of their own, so their peak memory can be read.

One run:

    BENCH_SOURCE_URL=... BENCH_TARGET_URL=... python -m bench.copy_once \\
        --source bench.items --target bench.items --mode merge [--incremental] [--check-only]

prints one JSON object: the timing and counts of the copy (or of the integrity check with
`--check-only`), the peak RSS (`VmHWM`), the RSS before the copy started (imports and
connections) and `ru_maxrss`. URLs come from the environment, never argv, so no password shows
in `ps`.

`--serve` reads one job per line on stdin (a JSON object with the same keys) and answers each
with one JSON line: the benchmark keeps one such worker, so it pays the imports once. Before
each job the peak is reset (`/proc/self/clear_refs`), so `VmHWM` is that job's peak.

`VmHWM` rather than `ru_maxrss` is the figure: Linux carries `ru_maxrss` across `exec`, so a
child forked from a large parent starts with the parent's peak.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
from pathlib import Path
from typing import Any

from bench.paths import run_check, run_copy, run_copy_checked, table_spec
from stagecopy_dagster.copier import CopyOptions
from stagecopy_dagster.identifiers import parse_qualified_name


def status_kb(field: str) -> int | None:
    """A `/proc/self/status` memory field (`VmHWM`, `VmRSS`) in KB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Reset `VmHWM` to the current RSS (Linux 4.0+); False where that is not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def run_job(job: dict[str, Any], source_url: str, target_url: str) -> dict[str, Any]:
    """Run one copy or check; return its report."""
    gc.collect()
    peak_reset = reset_peak()
    source = parse_qualified_name(job["source"])
    target = parse_qualified_name(job["target"])
    spec = table_spec(
        source,
        target,
        mode=job.get("mode", "merge"),
        incremental=job.get("incremental", False),
        parallel=int(job.get("parallel", 1)),
        diff=bool(job.get("diff", True)),
    )
    out: dict[str, Any] = {"baseline_rss_kb": status_kb("VmRSS"), "peak_reset": peak_reset}
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    if job.get("check_only"):
        report, seconds = run_check(source_url, target_url, spec)
        out.update(
            seconds=seconds,
            rows=report.source_rows,
            passed=report.passed,
            source_rows=report.source_rows,
            target_rows=report.target_rows,
            missing=report.missing_rows,
            extra=report.extra_rows,
            changed=report.changed_rows,
        )
    else:
        options = None
        if job.get("write_block"):
            options = CopyOptions(write_block=int(job["write_block"]))
        report = None
        if job.get("verify"):
            result, report, seconds = run_copy_checked(
                source_url, target_url, spec, options=options
            )
        else:
            result, seconds = run_copy(source_url, target_url, spec, options=options)
        steps = dict(result.steps)
        if report is not None:
            steps["check"] = report.seconds
            out.update(
                passed=report.passed,
                check_scope=report.check_scope,
                check_source_rows=report.source_rows,
                check_target_rows=report.target_rows,
                window_rows=report.window_rows,
            )
        out.update(
            seconds=seconds,
            # The rows the path handled: compared by the diff, else copied (for rows/s).
            rows=max(result.rows_copied, result.rows_compared),
            rows_copied=result.rows_copied,
            rows_compared=result.rows_compared,
            path=result.path,
            copy_format=result.copy_format,
            inserted=result.inserted,
            updated=result.updated,
            deleted=result.deleted,
            target_rows=result.target_rows,
            bytes=result.bytes,
            steps=steps,
        )
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_seconds"] = (cpu_after.ru_utime - cpu_before.ru_utime) + (
        cpu_after.ru_stime - cpu_before.ru_stime
    )
    out["vmhwm_kb"] = status_kb("VmHWM")
    out["ru_maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.copy_once")
    parser.add_argument("--serve", action="store_true", help="jobs as JSON lines on stdin")
    parser.add_argument("--source")
    parser.add_argument("--target")
    parser.add_argument("--mode", default="merge")
    parser.add_argument("--incremental", action="store_true")
    parser.add_argument("--check-only", action="store_true")
    parser.add_argument("--write-block", type=int, help="CopyOptions.write_block (bytes)")
    args = parser.parse_args(argv)
    source_url = os.environ["BENCH_SOURCE_URL"]
    target_url = os.environ["BENCH_TARGET_URL"]
    if not args.serve:
        if not (args.source and args.target):
            parser.error("--source and --target are required without --serve")
        job = {k: getattr(args, k) for k in ("source", "target", "mode", "incremental")}
        job["check_only"] = args.check_only
        job["write_block"] = args.write_block
        print(json.dumps(run_job(job, source_url, target_url)), flush=True)
        return 0
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = run_job(json.loads(line), source_url, target_url)
        except Exception as exc:  # the parent decides; keep serving
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
