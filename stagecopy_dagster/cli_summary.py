"""The summary at the end of `stagecopy run` and `stagecopy check`: a row per table.

:func:`summarize` reads a finished in-process Dagster run (its materializations, `integrity`
evaluations and step failures) into a :class:`RunSummary`, failures first, each with its
one-line reason. :func:`render_text` prints it as a table for people; :func:`render_json`
as JSON for CI (keys documented in docs/cli.md, stable: new keys may be added, none renamed).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import dagster as dg

from stagecopy_dagster.spec import TableSpec

#: The version of the JSON document's shape; it changes only if a key changes meaning.
SUMMARY_VERSION = 1

OK, FAILED, CHECK_FAILED, NOT_RUN = "ok", "failed", "check_failed", "not_run"
_ORDER = {FAILED: 0, CHECK_FAILED: 1, NOT_RUN: 2, OK: 3}


@dataclass(frozen=True)
class TableOutcome:
    """What happened to one table in the run."""

    asset: str
    table: str
    """The target table (`schema.name`)."""
    source: str
    mode: str
    status: str
    """`ok`, `failed` (the copy or the check could not run), `check_failed` or `not_run`."""
    path: str | None = None
    rows_copied: int | None = None
    inserted: int | None = None
    updated: int | None = None
    deleted: int | None = None
    bytes: int | None = None
    seconds: float | None = None
    """The copy's seconds (`run`), or the check's (`check`)."""
    check: str | None = None
    """`passed`, `failed`, or None when the check did not run."""
    source_rows: int | None = None
    """Rows in scope at the source, as the check counted them."""
    target_rows: int | None = None
    """Rows in scope in the target, as the check counted them."""
    reason: str | None = None
    """One line: why the table failed (the error, or the failed check's summary)."""
    check_summary: str | None = None
    """The check's own one-line summary (passed or not)."""

    @property
    def ok(self) -> bool:
        """Whether the table came through (copied as asked, check passed when it ran)."""
        return self.status == OK


@dataclass(frozen=True)
class RunSummary:
    """Every selected table's outcome, failures first."""

    command: str
    run_id: str
    tables: tuple[TableOutcome, ...]

    @property
    def ok(self) -> bool:
        """Whether every table came through."""
        return all(t.ok for t in self.tables)


def _value(metadata: Mapping[str, Any], key: str) -> Any:
    entry = metadata.get(key)
    return getattr(entry, "value", entry)


def _failure_reason(event: dg.DagsterEvent) -> str:
    """The one line a step failure means: the Failure's description, else the error's line."""
    data = event.step_failure_data
    if data is None:
        return "the step failed"
    if data.user_failure_data is not None and data.user_failure_data.description:
        return one_line(data.user_failure_data.description)
    error = data.error
    if error is None:
        return "the step failed"
    return f"{one_line(error.message)} (stagecopy -v shows the traceback)"


def one_line(text: str) -> str:
    """The first non-empty line of `text`."""
    return next((line.strip() for line in text.splitlines() if line.strip()), text.strip())


@dataclass(frozen=True)
class _Check:
    """One table's check in a run: a partitioned table's results folded into one."""

    passed: bool
    description: str | None
    metadata: Mapping[str, Any]


def _checks_by_asset(evaluations: Iterable[dg.AssetCheckEvaluation]) -> dict[dg.AssetKey, _Check]:
    """Each asset's check; for partitions, failed if any partition failed, and counted."""
    grouped: dict[dg.AssetKey, list[dg.AssetCheckEvaluation]] = {}
    for evaluation in evaluations:
        grouped.setdefault(evaluation.asset_key, []).append(evaluation)
    checks: dict[dg.AssetKey, _Check] = {}
    for key, found in grouped.items():
        failed = [e for e in found if not e.passed]
        shown = failed[0] if failed else found[0]
        description = shown.description
        if len(found) > 1 or found[0].partition is not None:
            partitions = [e.partition for e in found]
            where = f" [{shown.partition}]" if failed else ""
            description = (
                f"{description}{where}; {len(found) - len(failed)} of {len(found)} partitions "
                f"passed ({partitions[0]}...{partitions[-1]})"
            )
        checks[key] = _Check(not failed, description, shown.metadata)
    return checks


def combine(summaries: Sequence[RunSummary], *, command: str) -> RunSummary:
    """One summary of several runs (one per partitioning), failures first."""
    tables = [t for s in summaries for t in s.tables]
    ordered = sorted(enumerate(tables), key=lambda it: (_ORDER[it[1].status], it[0]))
    return RunSummary(command, ", ".join(s.run_id for s in summaries), tuple(t for _, t in ordered))


def summarize(
    result: dg.ExecuteInProcessResult | dg.JobExecutionResult,
    tables: Sequence[TableSpec],
    assets: Iterable[dg.AssetsDefinition],
    *,
    key_of: Callable[[TableSpec], dg.AssetKey],
    command: str,
) -> RunSummary:
    """Each of `tables` as the run left it.

    `assets` are the definitions the run executed; `key_of` gives a table's asset key (the
    translator's), which names it in the summary (`raw/orders` for a key with a prefix).
    """
    node_of = {key: a.node_def.name for a in assets for key in a.keys}
    materialized = {
        e.asset_key: e.step_materialization_data.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key is not None
    }
    checks = _checks_by_asset(result.get_asset_check_evaluations())
    failures = {
        e.step_key: _failure_reason(e)
        for e in result.all_events
        if e.event_type_value == "STEP_FAILURE" and e.step_key is not None
    }
    outcomes = []
    for table in tables:
        key = key_of(table)
        meta = materialized.get(key, {})
        check = checks.get(key)
        failure = failures.get(node_of.get(key, ""))
        check_meta = check.metadata if check is not None else {}
        if failure is not None:
            status, reason = FAILED, failure
        elif check is not None and not check.passed:
            status, reason = CHECK_FAILED, one_line(check.description or "integrity failed")
        elif (command == "run" and not meta) or (command == "check" and check is None):
            status, reason = NOT_RUN, "did not run"
        else:
            status, reason = OK, None
        seconds = _value(meta, "stagecopy/seconds") if command == "run" else None
        if command == "check":
            seconds = _value(check_meta, "seconds")
        outcomes.append(
            TableOutcome(
                asset=key.to_user_string(),
                table=table.label,
                source=table.source_label,
                mode=table.mode.value,
                status=status,
                path=_value(meta, "stagecopy/path"),
                rows_copied=_value(meta, "stagecopy/rows_copied"),
                inserted=_value(meta, "stagecopy/inserted"),
                updated=_value(meta, "stagecopy/updated"),
                deleted=_value(meta, "stagecopy/deleted"),
                bytes=_value(meta, "stagecopy/bytes"),
                seconds=seconds,
                check=None if check is None else ("passed" if check.passed else "failed"),
                source_rows=_value(check_meta, "source_rows"),
                target_rows=_value(check_meta, "target_rows"),
                reason=reason,
                check_summary=None if check is None else check.description,
            )
        )
    ordered = sorted(enumerate(outcomes), key=lambda io: (_ORDER[io[1].status], io[0]))
    return RunSummary(command, result.run_id, tuple(o for _, o in ordered))


def _cell(value: object, fmt: str = "{:,}") -> str:
    return "-" if value is None else fmt.format(value)


def _rows(summary: RunSummary) -> tuple[list[str], list[list[str]], set[int]]:
    """Header, cells and the right-aligned columns of the table."""
    if summary.command == "check":
        header = ["asset", "mode", "source rows", "target rows", "seconds", "check"]
        cells = [
            [
                t.asset,
                t.mode,
                _cell(t.source_rows),
                _cell(t.target_rows),
                _cell(t.seconds, "{:,.2f}"),
                t.check or "-",
            ]
            for t in summary.tables
        ]
        return header, cells, {2, 3, 4}
    header = ["asset", "mode", "path", "rows", "inserted", "updated", "deleted", "MB"]
    header += ["seconds", "check"]
    cells = [
        [
            t.asset,
            t.mode,
            t.path or "-",
            _cell(t.rows_copied),
            _cell(t.inserted),
            _cell(t.updated),
            _cell(t.deleted),
            _cell(None if t.bytes is None else t.bytes / 1e6, "{:,.1f}"),
            _cell(t.seconds, "{:,.2f}"),
            t.check or "-",
        ]
        for t in summary.tables
    ]
    return header, cells, {3, 4, 5, 6, 7, 8}


def render_text(summary: RunSummary) -> str:
    """The summary for people: the table, then a line per table (failures first), then totals.

    A failed check's line is `<asset>: integrity FAILED: <summary>`; a failed copy's is
    `<asset>: FAILED: <reason>`; the last line is `stagecopy: N tables: ok|FAILED (run <id>)`.
    """
    header, cells, right = _rows(summary)
    widths = [max(len(r[i]) for r in [header, *cells]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    out += [line(row) for row in cells]
    out.append("")
    for t in summary.tables:
        if t.status in (FAILED, NOT_RUN):
            out.append(f"{t.asset}: {'FAILED' if t.status == FAILED else 'not run'}: {t.reason}")
        if t.check_summary is not None:
            verdict = "passed" if t.check == "passed" else "FAILED"
            out.append(f"{t.asset}: integrity {verdict}: {one_line(t.check_summary)}")
    what = "checks" if summary.command == "check" else "tables"
    verdict = "ok" if summary.ok else "FAILED"
    out.append(f"stagecopy: {len(summary.tables)} {what}: {verdict} (run {summary.run_id})")
    return "\n".join(out) + "\n"


def as_json(summary: RunSummary, *, exit_code: int) -> dict[str, Any]:
    """The summary as the JSON document `--json` prints (see docs/cli.md)."""
    tables = []
    for t in summary.tables:
        row = asdict(t)
        row["mb"] = None if t.bytes is None else round(t.bytes / 1e6, 3)
        tables.append(row)
    return {
        "summary_version": SUMMARY_VERSION,
        "command": summary.command,
        "ok": summary.ok,
        "exit_code": exit_code,
        "run_id": summary.run_id,
        "tables": tables,
    }


def render_json(summary: RunSummary, *, exit_code: int) -> str:
    """:func:`as_json`, printed."""
    return json.dumps(as_json(summary, exit_code=exit_code), indent=2, ensure_ascii=False) + "\n"
