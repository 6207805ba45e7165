"""A partition as SQL: the WHERE scope of some partitions of a table, and their row counts.

The partition keys of a table (:mod:`stagecopy_dagster.partitions`) become a predicate over its
partition column, typed after the column as the source declares it (`date`, `timestamp` as
wall-clock time in the partition's timezone, `timestamptz` as the instant, or the listed
values), AND-ed with the spec's `where` and passed through the same trust boundary as any
`where` (:func:`~stagecopy_dagster.sqlguard.parse_where`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from stagecopy_dagster import catalog
from stagecopy_dagster import statements as st
from stagecopy_dagster.errors import SpecError
from stagecopy_dagster.partitions import PartitionSpec, partitions_definition, range_label
from stagecopy_dagster.sqlguard import parse_where

if TYPE_CHECKING:
    from stagecopy_dagster.spec import TableSpec

_DATE = "date"
_TIMESTAMP = re.compile(r"^timestamp(\(\d\))? without time zone$")
_TIMESTAMPTZ = re.compile(r"^timestamp(\(\d\))? with time zone$")


@dataclass(frozen=True)
class PartitionScope:
    """A partitioned table narrowed to some of its partitions, ready to copy or check."""

    table: TableSpec
    """The table with `where` = its own `where` AND the partitions' predicate."""
    keys: tuple[str, ...]
    column_type: str
    """`format_type()` of the partition column at the source."""

    @property
    def label(self) -> str:
        """The partitions as messages name them."""
        return range_label(self.keys)


def column_type(conn: psycopg.Connection, table: TableSpec) -> str:
    """`format_type()` of the partition column at the source; an error names the table."""
    spec = table.partition
    assert spec is not None
    if table.source is not None:
        oid = catalog.relation_oid(conn, table.source)
        if oid is None:  # the copy says so, with its own message
            raise SpecError(
                f"source table {table.source} does not exist (or the source role cannot see it)",
                table=table.label,
            )
        columns = catalog.columns(conn, oid)
    else:
        assert table.query is not None
        columns = catalog.query_columns(conn, table.query)
    types = {c.name: c.type for c in columns}
    found = types.get(spec.column)
    if found is None:
        raise SpecError(
            f"partition column {spec.column!r} is not a column of the source "
            f"(columns: {', '.join(types)})",
            table=table.label,
        )
    if spec.is_time:
        kind = _time_kind(found)
        if kind is None:
            raise SpecError(
                f"partition column {spec.column!r} is {found}; time partitions (by: {spec.by}) "
                "need a date, timestamp or timestamptz column",
                table=table.label,
            )
        if kind == _DATE and spec.by == "hour":
            raise SpecError(
                f"partition column {spec.column!r} is a date; hourly partitions need a "
                "timestamp or timestamptz column",
                table=table.label,
            )
    return found


def _time_kind(type_name: str) -> str | None:
    if type_name == _DATE:
        return _DATE
    if _TIMESTAMP.match(type_name):
        return "timestamp"
    if _TIMESTAMPTZ.match(type_name):
        return "timestamptz"
    return None


def _bound(value: datetime, type_name: str) -> sql.Composable:
    """A window bound as a literal of the column's type (so an index on it is used)."""
    kind = _time_kind(type_name)
    if kind == _DATE:
        return sql.Literal(value.date())
    if kind == "timestamp":  # wall-clock time in the partition's timezone
        return sql.Literal(value.replace(tzinfo=None))
    return sql.Literal(value)  # timestamptz: the instant, with its offset


def windows(spec: PartitionSpec, keys: Sequence[str]) -> list[tuple[datetime, datetime]]:
    """The time windows of `keys`, contiguous ones merged, in order."""
    import dagster as dg  # noqa: PLC0415

    definition = partitions_definition(spec)
    assert isinstance(definition, dg.TimeWindowPartitionsDefinition)
    merged: list[tuple[datetime, datetime]] = []
    for key in keys:
        window = definition.time_window_for_partition_key(key)
        if merged and merged[-1][1] == window.start:
            merged[-1] = (merged[-1][0], window.end)
        else:
            merged.append((window.start, window.end))
    return merged


def predicate(spec: PartitionSpec, keys: Sequence[str], type_name: str) -> sql.Composable:
    """The partitions' scope over the column: half-open windows, or `IN (values)`."""
    column = sql.Identifier(spec.column)
    if not spec.is_time:
        return sql.SQL("{} IN ({})").format(
            column, sql.SQL(", ").join(sql.Literal(k) for k in keys)
        )
    parts = [
        sql.SQL("{} >= {} AND {} < {}").format(
            column, _bound(lo, type_name), column, _bound(hi, type_name)
        )
        for lo, hi in windows(spec, keys)
    ]
    if len(parts) == 1:
        return parts[0]
    return sql.SQL(" OR ").join(sql.SQL("({})").format(p) for p in parts)


def scoped(table: TableSpec, keys: Sequence[str], conn: psycopg.Connection) -> PartitionScope:
    """`table` narrowed to `keys`: its `where` AND the partitions' predicate.

    `conn` (the source) tells the partition column's type and prints the literals.
    """
    spec = table.partition
    assert spec is not None and keys
    type_name = column_type(conn, table)
    condition = predicate(spec, keys, type_name)
    if table.where is not None:
        condition = sql.SQL("{} AND ({})").format(table.where.composable(), condition)
    # Through the same trust boundary as any `where`: from here on it *is* the table's scope.
    where = parse_where(condition.as_string(conn))
    narrowed = table.model_copy(update={"where": where})
    return PartitionScope(narrowed, tuple(keys), type_name)


def row_counts_statement(scope: PartitionScope) -> sql.Composed:
    """Rows per partition in the target, in one grouped scan of the scope.

    Time windows are told apart by `width_bucket` over the windows' bounds (a binary search per
    row); values by the column's text.
    """
    table = scope.table
    spec = table.partition
    assert spec is not None
    column = sql.Identifier(spec.column)
    if spec.is_time:
        bounds = _window_bounds(spec, scope.keys)
        group: sql.Composable = sql.SQL("width_bucket({}, ARRAY[{}])").format(
            column, sql.SQL(", ").join(_bound(b, scope.column_type) for b in bounds)
        )
    else:
        group = column
    return sql.SQL("SELECT {}::text, count(*) FROM {}{} GROUP BY 1").format(
        group, table.target_table.identifier, st.scope_filter(table.where)
    )


def _window_bounds(spec: PartitionSpec, keys: Sequence[str]) -> list[datetime]:
    import dagster as dg  # noqa: PLC0415

    definition = partitions_definition(spec)
    assert isinstance(definition, dg.TimeWindowPartitionsDefinition)
    bounds: set[datetime] = set()
    for key in keys:
        window = definition.time_window_for_partition_key(key)
        bounds |= {window.start, window.end}
    return sorted(bounds)


def row_counts(conn: psycopg.Connection, scope: PartitionScope) -> dict[str, int]:
    """Rows of each partition in the target (0 for an empty one)."""
    spec = scope.table.partition
    assert spec is not None
    found = {str(k): int(n) for k, n in conn.execute(row_counts_statement(scope)).fetchall()}
    if not spec.is_time:
        return {key: found.get(key, 0) for key in scope.keys}
    import dagster as dg  # noqa: PLC0415

    definition = partitions_definition(spec)
    assert isinstance(definition, dg.TimeWindowPartitionsDefinition)
    bounds = _window_bounds(spec, scope.keys)
    counts: dict[str, int] = {}
    for key in scope.keys:
        bucket = bounds.index(definition.time_window_for_partition_key(key).start) + 1
        counts[key] = found.get(str(bucket), 0)
    return counts
