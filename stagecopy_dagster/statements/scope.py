"""What a statement reads: the FROM item for a table or a checked query, and the scope's WHERE.

The spec's `where` (a :class:`~stagecopy_dagster.sqlguard.CheckedSql`) enters a statement
through :func:`scope_filter`, parenthesised, next to the watermark and any extra condition, or,
where the target's columns must be told from a staging table's, through
:func:`qualified_scope`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, LiteralString, cast

from psycopg import sql

from stagecopy_dagster.identifiers import QualifiedName
from stagecopy_dagster.sqlguard import CheckedSql
from stagecopy_dagster.statements.compose import all_of, column_list
from stagecopy_dagster.statements.projection import Projection, projection_relation


def source_relation(source: QualifiedName | CheckedSql | Projection) -> sql.Composable:
    """The FROM item for a source table, a checked query, or a masked read of either."""
    if isinstance(source, Projection):
        return projection_relation(source, source_relation(source.base))
    if isinstance(source, QualifiedName):
        return source.identifier
    return sql.SQL("{} AS q").format(source.composable())


def describe_query(query: CheckedSql) -> sql.Composed:
    """A statement that returns no rows but the query's columns and types."""
    return sql.SQL("SELECT * FROM {} LIMIT 0").format(source_relation(query))


def scope_filter(
    where: CheckedSql | None,
    *,
    incremental_field: str | None = None,
    watermark: Any = None,
    inclusive: bool = True,
    extra: sql.Composable | None = None,
) -> sql.Composable:
    """The WHERE clause (with the keyword) for a scope and an optional watermark."""
    parts: list[sql.Composable] = []
    if where is not None:
        parts.append(where.composable())
    if incremental_field is not None and watermark is not None:
        parts.append(window_condition(incremental_field, watermark, inclusive=inclusive))
    if extra is not None:
        parts.append(extra)
    if not parts:
        return sql.SQL("")
    return sql.SQL(" WHERE {}").format(all_of(parts))


def window_condition(field: str, start: Any, *, inclusive: bool = True) -> sql.Composed:
    """`field >= start` (or `>` when not `inclusive`): the rows an incremental run reads."""
    op = sql.SQL(">=") if inclusive else sql.SQL(">")
    return sql.SQL("{} {} {}").format(sql.Identifier(field), op, sql.Literal(start))


def qualified_scope(where: CheckedSql, alias: str) -> sql.SQL:
    """The scope with its bare column names qualified by `alias`, not parenthesised.

    For statements that join the target to a staging table with the same column names (MERGE's
    `WHEN NOT MATCHED BY SOURCE AND <scope>`, the diff's gone keys), where a bare name would be
    ambiguous or captured by the wrong relation.
    """
    # User SQL, but re-printed from the parse tree that sqlguard checked; only the column
    # references changed, so it is as safe as `CheckedSql.composable()`.
    return sql.SQL(cast(LiteralString, where.qualified(alias)))


def select_rows(
    source: QualifiedName | CheckedSql | Projection,
    columns: Sequence[str],
    where: sql.Composable,
) -> sql.Composed:
    """`SELECT cols FROM source WHERE ...`."""
    return sql.SQL("SELECT {} FROM {}{}").format(
        column_list(columns), source_relation(source), where
    )


def is_empty(table: QualifiedName, where: CheckedSql | None) -> sql.Composed:
    """`SELECT NOT EXISTS (SELECT FROM table WHERE scope)`."""
    return sql.SQL("SELECT NOT EXISTS (SELECT FROM {}{})").format(
        table.identifier, scope_filter(where)
    )


def count_rows(table: QualifiedName) -> sql.Composed:
    """`SELECT count(*) FROM table`."""
    return sql.SQL("SELECT count(*) FROM {}").format(table.identifier)


def max_watermark(
    table: QualifiedName, field: str, where: CheckedSql | None, lookback: str | None
) -> sql.Composed:
    """The target's watermark within scope, moved back by `lookback` when given."""
    value: sql.Composable = sql.SQL("max({})").format(sql.Identifier(field))
    if lookback:
        value = sql.SQL("{} - {}::interval").format(value, sql.Literal(lookback))
    return sql.SQL("SELECT {} FROM {}{}").format(value, table.identifier, scope_filter(where))


def watermark_signature(
    source: QualifiedName | CheckedSql, field: str, where: CheckedSql | None
) -> sql.Composed:
    """`max(field)` and count of the scope at the source: cheap with an index on `field`."""
    return sql.SQL("SELECT max({})::text, count(*) FROM {}{}").format(
        sql.Identifier(field), source_relation(source), scope_filter(where)
    )


def explain_estimate(select: sql.Composable) -> sql.Composed:
    """The planner's estimate of a SELECT (`Plan Rows`, `Plan Width`), without running it."""
    return sql.SQL("EXPLAIN (FORMAT JSON) {}").format(select)


def count_select(select: sql.Composable) -> sql.Composed:
    """`SELECT count(*)` of the rows a SELECT returns."""
    return sql.SQL("SELECT count(*) FROM ({}) AS s").format(select)
