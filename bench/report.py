"""Turning samples into the published table and the JSON record."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.competitors import Outcome


@dataclass(frozen=True)
class Line:
    """One row of the table: a path, and the reference and target of its ratio."""

    key: str
    label: str
    versus: str | None = None
    """The key of the line it is divided by, run by run (paired)."""
    target: float | None = None
    """The ratio must be at most this (PASS/MISS)."""


LINES = (
    Line("F2", "F2 floor: psql|psql binary, UNLOGGED no index"),
    Line("Fpk", "Fpk floor: psql|psql binary, table with PK"),
    Line("a", "(a) initial load, merge, empty target", "Fpk", 1.10),
    Line("b", "(b) full re-copy, 1% changed, merge (diff)", "F2", 2.0),
    Line("b_all", "(b') the same, diff: false (all rows MERGEd)", "F2"),
    Line("c", "(c) incremental, 1% changed, + window check", "a", 0.15),
    Line("d_merge", "(d') merge, 1% deleted at source"),
    Line("d", "(d) sync, 1% deleted at source", "d_merge", 1.2),
    Line("e", "(e) integrity check (compare), all rows", "a", 0.5),
    Line("g", "(g) initial load, parallel: 2 (two COPY streams)", "a"),
)

RSS_TARGET_MB = 80.0
RSS_GROWTH_TARGET = 1.10


@dataclass
class Sample:
    """One timed run of one path."""

    key: str
    run: int
    seconds: float
    rows: int
    maxrss_kb: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Summary:
    """One line of the table, computed."""

    key: str
    label: str
    runs: int
    median_seconds: float
    rows: int
    rows_per_second: float
    ratio: float | None
    versus: str | None
    target: float | None
    verdict: str
    maxrss_mb: float | None
    cpu_seconds: float | None
    """Median CPU seconds of the client side: the copier process, or both psql."""
    seconds: list[float]
    ratios: list[float]


def summarize(samples: list[Sample]) -> list[Summary]:
    """Medians per path; ratios as the median of per-run ratios against the paired line."""
    by_key: dict[str, dict[int, Sample]] = {}
    for s in samples:
        by_key.setdefault(s.key, {})[s.run] = s
    out: list[Summary] = []
    for line in LINES:
        runs = by_key.get(line.key)
        if not runs:
            continue
        seconds = [s.seconds for s in runs.values()]
        median = statistics.median(seconds)
        rows = int(statistics.median([s.rows for s in runs.values()]))
        ratios: list[float] = []
        if line.versus is not None:
            ref = by_key.get(line.versus, {})
            ratios = [s.seconds / ref[r].seconds for r, s in runs.items() if r in ref]
        ratio = statistics.median(ratios) if ratios else None
        verdict = ""
        if line.target is not None and ratio is not None:
            verdict = "PASS" if ratio <= line.target else "MISS"
        rss = [s.maxrss_kb for s in runs.values() if s.maxrss_kb]
        cpu = [s.detail["cpu_seconds"] for s in runs.values() if "cpu_seconds" in s.detail]
        out.append(
            Summary(
                key=line.key,
                label=line.label,
                runs=len(runs),
                median_seconds=median,
                rows=rows,
                rows_per_second=rows / median if median > 0 else 0.0,
                ratio=ratio,
                versus=line.versus,
                target=line.target,
                verdict=verdict,
                maxrss_mb=max(rss) / 1024 if rss else None,
                cpu_seconds=statistics.median(cpu) if cpu else None,
                seconds=seconds,
                ratios=ratios,
            )
        )
    return out


def _fmt_rate(rows_per_second: float) -> str:
    if rows_per_second >= 1e6:
        return f"{rows_per_second / 1e6:.2f}M"
    if rows_per_second >= 1e3:
        return f"{rows_per_second / 1e3:.0f}k"
    return f"{rows_per_second:.0f}"


def competitor_lines(summaries: list[Summary], outcomes: list[Outcome]) -> list[dict[str, Any]]:
    """One line per competitor path: its median, and its ratio to the stagecopy line it faces.

    The ratio is competitor seconds / stagecopy seconds (medians of this run): above 1, the
    other tool is that many times slower. A target is a minimum; a wrong result has no verdict.
    """
    medians = {s.key: s.median_seconds for s in summaries}
    lines = []
    for o in outcomes:
        median = o.median_seconds
        ref = medians.get(o.versus) if o.versus else None
        ratio = median / ref if median is not None and ref else None
        verdict = ""
        if o.correct and ratio is not None and o.target is not None:
            verdict = "PASS" if ratio >= o.target else "MISS"
        lines.append(
            {
                "key": o.key,
                "label": o.what,
                "version": o.version,
                "runs": len(o.seconds),
                "median_seconds": median,
                "seconds": o.seconds,
                "rows": o.rows,
                "maxrss_mb": o.maxrss_kb / 1024 if o.maxrss_kb else None,
                "versus": o.versus,
                "ratio": ratio,
                "target": o.target,
                "verdict": verdict,
                "correct": o.correct,
                "note": o.note,
            }
        )
    return lines


def render(
    summaries: list[Summary],
    memory: list[dict[str, Any]],
    competitors: list[dict[str, Any]],
    competitor_runs: int = 1,
) -> str:
    """The plain-text table, and the other tools' table under it."""
    cols = (
        f"{'path':<46} {'median s':>8} {'rows/s':>7} {'x ref (paired)':>16} {'target':>7} "
        f"{'':>4} {'peak RSS':>8} {'cli CPU s':>9}"
    )
    lines = [cols, "-" * len(cols)]
    for s in summaries:
        ratio = f"{s.ratio:.3f} x {s.versus}" if s.ratio is not None else ""
        target = f"<={s.target:g}" if s.target is not None else ""
        rss = f"{s.maxrss_mb:.0f} MB" if s.maxrss_mb is not None else ""
        cpu = f"{s.cpu_seconds:.1f}" if s.cpu_seconds is not None else ""
        lines.append(
            f"{s.label:<46} {s.median_seconds:>8.2f} {_fmt_rate(s.rows_per_second):>7} "
            f"{ratio:>16} {target:>7} {s.verdict:>4} {rss:>8} {cpu:>9}"
        )
    for m in memory:
        rss = f"{m['maxrss_mb']:.0f} MB"
        seconds = f"{m['seconds']:.2f}" if m.get("seconds") is not None else ""
        lines.append(
            f"{m['label']:<46} {seconds:>8} {'':>7} {m.get('ratio_text', ''):>16} "
            f"{m['target_text']:>7} {m['verdict']:>4} {rss:>8}"
        )
    if competitors:
        runs = "once" if competitor_runs == 1 else f"{competitor_runs} times (median)"
        lines.append("")
        lines.append(
            f"other tools, same data, each run {runs} after the rounds (rows and sum(id) "
            "checked); x = their seconds / stagecopy's median on that line, target a minimum:"
        )
        head = (
            f"{'tool and path':<46} {'median s':>8} {'rows/s':>7} {'x stagecopy':>16} "
            f"{'target':>7} {'':>4} {'peak RSS':>8}  version"
        )
        lines += [head, "-" * len(cols)]
        for c in competitors:
            if c["median_seconds"] is None:
                lines.append(f"{c['label']:<46} {c['note']}")
                continue
            ratio = f"{c['ratio']:.2f} x {c['versus']}" if c["ratio"] is not None else ""
            target = f">={c['target']:g}" if c["target"] is not None else ""
            rate = _fmt_rate((c["rows"] or 0) / c["median_seconds"])
            rss = f"{c['maxrss_mb']:.0f} MB" if c["maxrss_mb"] else ""
            note = f"  {c['note']}" if c["note"] else ""
            lines.append(
                f"{c['label']:<46} {c['median_seconds']:>8.2f} {rate:>7} {ratio:>16} "
                f"{target:>7} {c['verdict']:>4} {rss:>8}  {c['version']}{note}".rstrip()
            )
    return "\n".join(lines)


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Write the run's record (settings, every sample, summaries)."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def default(o: Any) -> Any:
        if hasattr(o, "__dataclass_fields__"):
            return asdict(o)
        return str(o)

    path.write_text(json.dumps(record, indent=2, ensure_ascii=False, default=default) + "\n")
