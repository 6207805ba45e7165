"""`stagecopy status`: how fresh every table is and whether its last `integrity` check passed.

Read from the Dagster instance (the last materialization, its metadata, the last `integrity`
execution) and, for tables with an `incremental_field`, from the databases: the copy's
watermark (the target's newest `incremental_field` in scope) and how many source rows in scope
are newer than it (with the time between the two newest values when the field is a time).
A table is *stale* when its last copy is older than its `freshness.max_lag` (or it was never
copied and has a `freshness`). Nothing is written anywhere.
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
import psycopg

from stagecopy_dagster import statements as st
from stagecopy_dagster.connection import Database
from stagecopy_dagster.errors import ConnectionConfigError, StagecopyError, describe_db_error
from stagecopy_dagster.spec import TableSpec
from stagecopy_dagster.statements.status import rows_after
from stagecopy_dagster.translator import INTEGRITY_CHECK

#: Metadata keys of a materialization that status reads (written by assets.py).
ROW_COUNT = "dagster/row_count"
WATERMARK = "stagecopy/watermark"
_HOURS_SHOWN_AS_HOURS = 48


@dataclass(frozen=True)
class Behind:
    """How far the source is ahead of the copy of an incremental table."""

    watermark: str | None
    """The target's newest `incremental_field` in scope (None: the target has no row)."""
    rows: int
    """Source rows in scope newer than the watermark."""
    seconds: float | None
    """Newest source value minus the watermark, when both are times (0 when none is newer)."""


@dataclass(frozen=True)
class TableStatus:
    """One table's status: its last copy, its last check, and how far behind it is."""

    asset: str
    table: str
    last_copy: datetime | None
    age_seconds: float | None
    rows: int | None
    run_id: str | None
    copy_from: str | None
    """`stagecopy/watermark` of the last copy: the watermark it started from (lookback applied)."""
    integrity: str
    """`passed`, `failed`, `error` (the step failed), `running`, `skipped` or `none`."""
    integrity_time: datetime | None
    integrity_description: str | None
    behind: Behind | None
    behind_error: str | None
    max_lag_seconds: float | None
    stale: bool

    @property
    def ok(self) -> bool:
        """False when the last check failed (or could not run) or the table is stale."""
        return self.integrity not in ("failed", "error") and not self.stale


_CHECK_STATES = {
    "SUCCEEDED": "passed",
    "FAILED": "failed",
    "EXECUTION_FAILED": "error",
    "PLANNED": "running",
    "SKIPPED": "skipped",
}


def _metadata_value(metadata: dict[str, Any], key: str) -> Any:
    entry = metadata.get(key)
    return getattr(entry, "value", entry)


def _as_utc(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, tz=UTC)


def _integrity(
    instance: dg.DagsterInstance, key: dg.AssetCheckKey
) -> tuple[str, datetime | None, str | None]:
    record = instance.get_latest_asset_check_evaluation_record(key)
    if record is None:
        return "none", None, None
    state = _CHECK_STATES.get(record.status.value, record.status.value.lower())
    evaluation = record.event.asset_check_evaluation if record.event is not None else None
    when = record.event.timestamp if record.event is not None else record.create_timestamp
    if evaluation is not None and state == "passed" and not evaluation.passed:
        state = "failed"
    return state, _as_utc(when), evaluation.description if evaluation is not None else None


def _seconds_between(newer: Any, older: Any) -> float | None:
    if isinstance(newer, datetime | date) and type(newer) is type(older):
        try:
            return max(0.0, (newer - older).total_seconds())
        except TypeError:  # aware vs naive
            return None
    return None


def behind(table: TableSpec, source: Database, target: Database) -> Behind | None:
    """How far the source is ahead of the target (None without `incremental_field`)."""
    field = table.incremental_field
    if field is None:
        return None
    relation = table.source if table.source is not None else table.query
    assert relation is not None
    with target.connect() as tgt:
        row = tgt.execute(st.max_watermark(table.target_table, field, table.where, None)).fetchone()
    watermark = row[0] if row is not None else None
    with source.connect() as src:
        newer = src.execute(rows_after(relation, field, table.where, watermark)).fetchone()
    count, newest = (newer[0], newer[1]) if newer is not None else (0, None)
    seconds = 0.0 if not count else _seconds_between(newest, watermark)
    return Behind(
        watermark=None if watermark is None else str(watermark), rows=int(count), seconds=seconds
    )


def table_status(
    instance: dg.DagsterInstance,
    table: TableSpec,
    *,
    asset_key: dg.AssetKey,
    source: Database,
    target: Database,
    now: datetime,
) -> TableStatus:
    """The status of one table (see the module's docstring)."""
    event = instance.get_latest_materialization_event(asset_key)
    materialization = event.asset_materialization if event is not None else None
    metadata = dict(materialization.metadata) if materialization is not None else {}
    last_copy = _as_utc(event.timestamp) if event is not None else None
    age = (now - last_copy).total_seconds() if last_copy is not None else None
    rows = _metadata_value(metadata, ROW_COUNT)
    copy_from = _metadata_value(metadata, WATERMARK) or None
    state, checked_at, description = _integrity(
        instance, dg.AssetCheckKey(asset_key, INTEGRITY_CHECK)
    )
    try:
        lag, lag_error = behind(table, source, target), None
    except StagecopyError as exc:
        lag, lag_error = None, str(exc)
    except psycopg.Error as exc:
        lag, lag_error = None, f"{table.label}: {describe_db_error(exc)}"
    # `freshness` (issue #11's spec key); read defensively so a spec model without it works.
    freshness = getattr(table, "freshness", None)
    max_lag = freshness.fail_window.total_seconds() if freshness is not None else None
    stale = max_lag is not None and (age is None or age > max_lag)
    return TableStatus(
        asset=asset_key.to_user_string(),
        table=table.label,
        last_copy=last_copy,
        age_seconds=age,
        rows=int(rows) if isinstance(rows, int) else None,
        run_id=event.run_id if event is not None else None,
        copy_from=str(copy_from) if copy_from is not None else None,
        integrity=state,
        integrity_time=checked_at,
        integrity_description=description,
        behind=lag,
        behind_error=lag_error,
        max_lag_seconds=max_lag,
        stale=stale,
    )


def read_status(
    instance: dg.DagsterInstance,
    tables: Sequence[TableSpec],
    *,
    source: Database,
    target: Database,
    key_of: Callable[[TableSpec], dg.AssetKey] | None = None,
    now: datetime | None = None,
) -> list[TableStatus]:
    """The status of every table, in spec order.

    Example:
        >>> with dg.DagsterInstance.get() as instance:  # doctest: +SKIP
        ...     [s.ok for s in read_status(instance, spec.tables, source=src, target=dst)]
    """
    key_of = key_of or (lambda t: dg.AssetKey(t.asset_name))
    now = now or datetime.now(tz=UTC)
    return [
        table_status(instance, t, asset_key=key_of(t), source=source, target=target, now=now)
        for t in tables
    ]


def _instance(spec: str | os.PathLike[str]) -> dg.DagsterInstance:
    """The instance runs were recorded in: `$DAGSTER_HOME`'s, or the demo's for its spec."""
    from stagecopy_dagster.build import is_demo_spec  # noqa: PLC0415 (build imports assets)

    if not os.environ.get("DAGSTER_HOME"):
        if not is_demo_spec(spec):
            raise ConnectionConfigError(
                "status reads the Dagster instance the runs were recorded in: set DAGSTER_HOME "
                "(as for `stagecopy run`, whose runs land there)"
            )
        from stagecopy_dagster.local.demo.lifecycle import prepare_dagster_home  # noqa: PLC0415

        prepare_dagster_home()
    return dg.DagsterInstance.get()


def report(
    spec: str | os.PathLike[str],
    selectors: list[str] | None,
    *,
    source: Database,
    target: Database,
    translator: str | None = None,
    as_json: bool = False,
) -> tuple[str, bool]:
    """`stagecopy status`: the text (a table, or JSON) and whether every table is ok.

    Raises:
        SpecError: The spec is invalid, or a selector matches no table.
        ConnectionConfigError: No `$DAGSTER_HOME` (outside the demo).
    """
    from stagecopy_dagster.selection import load_translator, select_tables  # noqa: PLC0415
    from stagecopy_dagster.spec import load_spec  # noqa: PLC0415

    chosen = load_translator(translator)  # the keys the runs were recorded under

    def key_of(table: TableSpec) -> dg.AssetKey:
        return chosen.get_asset_spec(table).key

    tables = select_tables(load_spec(spec), selectors, key_of)
    now = datetime.now(tz=UTC)
    with _instance(spec) as instance:
        statuses = read_status(
            instance, tables, source=source, target=target, key_of=key_of, now=now
        )
    ok = all(s.ok for s in statuses)
    return (to_json(statuses) if as_json else to_table(statuses, now=now)), ok


# --- output ------------------------------------------------------------------------------------


def format_duration(delta: timedelta) -> str:
    """A short human form: `'45s'`, `'12m'`, `'3h 5m'`, `'2d 4h'`."""
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return "-" + format_duration(-delta)
    minutes, hours = seconds // 60, seconds // 3600
    if not minutes:
        return f"{seconds}s"
    if not hours:
        return f"{minutes}m"
    if hours < _HOURS_SHOWN_AS_HOURS:
        return f"{hours}h {minutes % 60}m" if minutes % 60 else f"{hours}h"
    return f"{hours // 24}d {hours % 24}h" if hours % 24 else f"{hours // 24}d"


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def to_json(statuses: Sequence[TableStatus]) -> str:
    """`{"ok": ..., "tables": [...]}`, one object per table with every field of its status."""
    tables = [{**asdict(s), "ok": s.ok} for s in statuses]
    return json.dumps(
        {"ok": all(s.ok for s in statuses), "tables": tables},
        default=_json_default,
        ensure_ascii=False,
        indent=2,
    )


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _when(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    return f"{moment:%Y-%m-%d %H:%M}Z ({format_duration(now - moment)} ago)"


def _behind_text(status: TableStatus) -> str:
    if status.behind_error is not None:
        return "unknown (source or target unreachable)"
    lag = status.behind
    if lag is None:
        return "-"
    if not lag.rows:
        return "up to date"
    text = f"{lag.rows:,} rows"
    return text + (f", {format_duration(timedelta(seconds=lag.seconds))}" if lag.seconds else "")


def _row(status: TableStatus, now: datetime) -> list[str]:
    copied = _when(status.last_copy, now)
    if status.stale and status.max_lag_seconds is not None:
        copied += f" STALE (max_lag {format_duration(timedelta(seconds=status.max_lag_seconds))})"
    failed = status.integrity in ("failed", "error")
    check = status.integrity.upper() if failed else status.integrity
    if status.integrity_time is not None:
        check += f" {status.integrity_time:%H:%M}Z"
    watermark = status.behind.watermark if status.behind is not None else None
    return [
        status.table,
        copied,
        f"{status.rows:,}" if status.rows is not None else "-",
        check,
        watermark or "-",
        _behind_text(status),
    ]


def to_table(statuses: Sequence[TableStatus], *, now: datetime | None = None) -> str:
    """A plain-text table, one row per table, then a one-line verdict."""
    now = now or datetime.now(tz=UTC)
    header = ["TABLE", "LAST COPY", "ROWS", "INTEGRITY", "WATERMARK", "BEHIND"]
    rows = [header, *(_row(s, now) for s in statuses)]
    widths = [max(_width(r[i]) for r in rows) for i in range(len(header))]
    right = {2}  # numbers align right
    lines = []
    for r in rows:
        cells = [
            (" " * (w - _width(c)) + c) if i in right else (c + " " * (w - _width(c)))
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    bad = [s for s in statuses if not s.ok]
    failed = sum(s.integrity in ("failed", "error") for s in bad)
    stale = sum(s.stale for s in bad)
    verdict = (
        f"stagecopy status: {len(statuses)} tables: ok"
        if not bad
        else f"stagecopy status: {len(statuses)} tables: {failed} check(s) failed, {stale} stale"
    )
    errors = [f"  {s.table}: {s.behind_error}" for s in statuses if s.behind_error]
    return "\n".join([*lines, *errors, verdict])
