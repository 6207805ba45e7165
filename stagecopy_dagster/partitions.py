"""Partitioned tables: a Dagster partition is a WHERE scope.

A table's `partition:` names a column and either time windows (`by: hour | day | week | month`
from `start`, in `timezone`) or a fixed list of `values`. Each partition key is a scope over that
column, AND-ed with the spec's `where`:

* a time window: `col >= <window start> AND col < <window end>`, the bounds typed after the
  column (`date`, `timestamp` as wall-clock time in the partition's timezone, `timestamptz` as
  the instant);
* a value: `col IN ('KOSPI', ...)`.

A run over several partitions (a backfill) is one scope over the whole range, so the table is
copied in one COPY stream. The combined scope is composed with `psycopg.sql` (identifiers and
literals), printed by the source connection and then passed through the same trust boundary as
any `where` (:func:`~stagecopy_dagster.sqlguard.parse_where`): from there it flows wherever
`where` flows (the source read, the target side of sync/replace, the watermark, the check).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from stagecopy_dagster.errors import SpecError
from stagecopy_dagster.identifiers import parse_column_name

if TYPE_CHECKING:
    import dagster as dg

    from stagecopy_dagster.spec import TableSpec

#: Time grains of `by:`.
TIME_GRAINS = ("hour", "day", "week", "month")
#: Dagster's key format per grain (its own Daily/Hourly/Weekly/Monthly definitions use these).
_KEY_FORMATS = {
    "hour": "%Y-%m-%d-%H:%M",
    "day": "%Y-%m-%d",
    "week": "%Y-%m-%d",
    "month": "%Y-%m-%d",
}
_START_FORMATS = ("%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d-%H:%M")


class PartitionSelectionError(SpecError):
    """A partition selection (`--partition`, `--from`/`--to`) that the table cannot take."""


def _as_column(value: Any) -> Any:
    return parse_column_name(value) if isinstance(value, str) else value


def _as_values(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(
            str(v) if isinstance(v, int | str) and not isinstance(v, bool) else v for v in value
        )
    return value


def _parse_start(value: str) -> datetime:
    for fmt in _START_FORMATS:
        try:
            return datetime.strptime(value.strip(), fmt)
        except ValueError:
            continue
    raise ValueError(
        f"start {value!r} is not a date: write it as 'YYYY-MM-DD' "
        "(or 'YYYY-MM-DD HH:MM' for by: hour)"
    )


class PartitionSpec(BaseModel):
    """`partition:` of a table: time windows over a column, or a fixed list of its values."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    column: Annotated[str, BeforeValidator(_as_column)] = Field(
        description="The column each partition scopes (date/timestamp/timestamptz for `by`)."
    )
    by: str | None = Field(default=None, description="hour | day | week | month: time windows.")
    start: str | None = Field(default=None, description="First window, 'YYYY-MM-DD'.")
    timezone: str | None = Field(default=None, description="Timezone of the windows (default UTC).")
    values: Annotated[tuple[str, ...] | None, BeforeValidator(_as_values)] = Field(
        default=None, description="A fixed list of the column's values, one partition each."
    )

    @field_validator("by")
    @classmethod
    def _check_by(cls, value: str | None) -> str | None:
        if value is not None and value not in TIME_GRAINS:
            raise ValueError(f"by {value!r} is not one of {', '.join(TIME_GRAINS)}")
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"timezone {value!r} is not a known IANA timezone (e.g. Asia/Seoul)"
                ) from None
        return value

    @field_validator("values")
    @classmethod
    def _check_values(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("values must list at least one value")
        if len(set(value)) != len(value):
            raise ValueError("values lists a value twice")
        return value

    @model_validator(mode="after")
    def _check_shape(self) -> PartitionSpec:
        if self.by is not None and self.values is not None:
            raise ValueError("give either `by` (time windows) or `values` (a fixed list), not both")
        if self.by is None and self.values is None:
            raise ValueError(
                "give `by: hour | day | week | month` with `start`, or `values: [...]`"
            )
        if self.values is not None and (self.start is not None or self.timezone is not None):
            raise ValueError("`start` and `timezone` go with `by`, not with `values`")
        if self.by is not None:
            if self.start is None:
                raise ValueError(f"by: {self.by} needs `start` ('YYYY-MM-DD')")
            started = _parse_start(self.start)
            if self.by != "hour" and (started.hour or started.minute):
                raise ValueError(
                    f"start {self.start!r}: by: {self.by} windows start at midnight; give a date"
                )
            if self.by == "month" and started.day != 1:
                raise ValueError(
                    f"start {self.start!r}: monthly windows start on the first of a month"
                )
            if started.minute:
                raise ValueError(f"start {self.start!r}: hourly windows start on the hour")
        # Dagster's own checks (characters of static keys), at load time, not at run time.
        partitions_definition(self)
        return self

    @property
    def is_time(self) -> bool:
        """Whether the partitions are time windows (else a fixed list of values)."""
        return self.by is not None

    @property
    def zone(self) -> str:
        """The windows' timezone."""
        return self.timezone or "UTC"

    def describe(self) -> str:
        """One line for descriptions and metadata."""
        if self.is_time:
            return f"{self.column} by {self.by} from {self.start} ({self.zone})"
        return f"{self.column} in {', '.join(self.values or ())}"


def partitions_definition(spec: PartitionSpec) -> dg.PartitionsDefinition:
    """The Dagster partitions of `spec`: Hourly/Daily/Weekly/Monthly or Static."""
    return _definition(spec.by, spec.start, spec.zone, spec.values)


@functools.lru_cache(maxsize=256)
def _definition(
    by: str | None, start: str | None, zone: str, values: tuple[str, ...] | None
) -> dg.PartitionsDefinition:
    import dagster as dg  # noqa: PLC0415 (loading a spec must not load Dagster)

    if values is not None:
        try:
            return dg.StaticPartitionsDefinition(list(values))
        except dg.DagsterInvalidDefinitionError as exc:
            raise ValueError(f"values: {exc}") from None
    assert by is not None and start is not None
    started = _parse_start(start)
    first = started.strftime(_KEY_FORMATS[by])
    if by == "hour":
        return dg.HourlyPartitionsDefinition(start_date=first, timezone=zone)
    if by == "day":
        return dg.DailyPartitionsDefinition(start_date=first, timezone=zone)
    if by == "week":
        # Weeks begin on the weekday of `start` (Dagster counts 0 = Sunday).
        return dg.WeeklyPartitionsDefinition(
            start_date=first, timezone=zone, day_offset=(started.weekday() + 1) % 7
        )
    return dg.MonthlyPartitionsDefinition(start_date=first, timezone=zone)


def all_keys(spec: PartitionSpec) -> tuple[str, ...]:
    """Every partition key of `spec` as of now, in order."""
    return tuple(partitions_definition(spec).get_partition_keys())


def select_keys(
    table: TableSpec,
    *,
    partition: str | None = None,
    first: str | None = None,
    last: str | None = None,
) -> tuple[str, ...] | None:
    """The keys a CLI selection names (`--partition`, `--from`/`--to`); every key when none.

    None for an unpartitioned table without a selection.

    Raises:
        PartitionSelectionError: A selection on an unpartitioned table, an unknown key,
            `--from` after `--to`, or `--partition` with `--from`/`--to`.
    """
    asked = partition is not None or first is not None or last is not None
    if table.partition is None:
        if asked:
            raise PartitionSelectionError(
                "--partition/--from/--to: the table is not partitioned "
                "(no `partition:` in the spec)",
                table=table.label,
            )
        return None
    if partition is not None and (first is not None or last is not None):
        raise PartitionSelectionError(
            "give --partition or --from/--to, not both", table=table.label
        )
    keys = all_keys(table.partition)
    if not keys:
        raise PartitionSelectionError(
            "the table has no partitions yet (start is in the future)", table=table.label
        )

    def index(key: str, flag: str) -> int:
        try:
            return keys.index(key)
        except ValueError:
            raise PartitionSelectionError(
                f"{flag} {key!r} is not a partition key ({table.partition.describe()}: "  # type: ignore[union-attr]
                f"{keys[0]} … {keys[-1]})",
                table=table.label,
            ) from None

    if partition is not None:
        return (keys[index(partition, "--partition")],)
    lo = index(first, "--from") if first is not None else 0
    hi = index(last, "--to") if last is not None else len(keys) - 1
    if lo > hi:
        raise PartitionSelectionError(
            f"--from {first!r} comes after --to {last!r}", table=table.label
        )
    return keys[lo : hi + 1]


@dataclass(frozen=True)
class PartitionRun:
    """Tables that run together, and the partition tags of their run (none: unpartitioned)."""

    tables: tuple[TableSpec, ...]
    tags: dict[str, str]


def partition_runs(
    tables: Sequence[TableSpec],
    *,
    partition: str | None = None,
    first: str | None = None,
    last: str | None = None,
) -> list[PartitionRun]:
    """The runs a command makes: unpartitioned tables in one, each partitioning in its own.

    A selection (`--partition`, `--from`/`--to`) applies to every table and must fit each
    (:func:`select_keys`); without one, a partitioned table runs over all its partitions.
    """
    plain: list[TableSpec] = []
    by_keys: dict[tuple[PartitionSpec, tuple[str, ...]], list[TableSpec]] = {}
    for table in tables:
        keys = select_keys(table, partition=partition, first=first, last=last)
        if keys is None or table.partition is None:
            plain.append(table)
        else:
            by_keys.setdefault((_partitioning(table.partition), keys), []).append(table)
    runs = [PartitionRun(tuple(plain), {})] if plain else []
    for (_, keys), members in by_keys.items():
        tags = (
            {"dagster/partition": keys[0]}
            if len(keys) == 1
            else {
                "dagster/asset_partition_range_start": keys[0],
                "dagster/asset_partition_range_end": keys[-1],
            }
        )
        runs.append(PartitionRun(tuple(members), tags))
    return runs


def partitioned_tables(tables: Sequence[TableSpec]) -> tuple[TableSpec, ...]:
    """The partitioned tables among `tables`; an error when there are none."""
    found = tuple(t for t in tables if t.partition is not None)
    if not found:
        raise PartitionSelectionError(
            "--partition/--from/--to: no table of the spec is partitioned (`partition:`)"
        )
    return found


def _partitioning(spec: PartitionSpec) -> PartitionSpec:
    """`spec` without its column: tables whose windows are the same can share a run."""
    return spec.model_copy(update={"column": ""})


def range_label(keys: Sequence[str]) -> str:
    """`2024-01-01` or `2024-01-01...2024-01-05` (Dagster's way of writing a range)."""
    return keys[0] if len(keys) == 1 else f"{keys[0]}...{keys[-1]}"


__all__ = [
    "TIME_GRAINS",
    "PartitionSelectionError",
    "PartitionSpec",
    "all_keys",
    "partition_runs",
    "partitioned_tables",
    "partitions_definition",
    "range_label",
    "select_keys",
]
