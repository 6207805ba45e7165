"""Applying staged rows to the target: MERGE, plain INSERT, scoped deletes and their counts."""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import sql

from stagecopy_dagster.engine.types import Column
from stagecopy_dagster.identifiers import QualifiedName
from stagecopy_dagster.sqlguard import CheckedSql
from stagecopy_dagster.statements.compose import column_list, join_on
from stagecopy_dagster.statements.scope import qualified_scope, scope_filter


def delete_scope(table: QualifiedName, where: CheckedSql | None) -> sql.Composed:
    """`DELETE FROM table WHERE scope` (mode replace)."""
    return sql.SQL("DELETE FROM {}{}").format(table.identifier, scope_filter(where))


def duplicate_keys(staging: QualifiedName, key: Sequence[str], limit: int = 5) -> sql.Composed:
    """Keys that occur more than once (or are NULL) in the staged rows, a few of them."""
    null_key = sql.SQL(" OR ").join(sql.SQL("{} IS NULL").format(sql.Identifier(k)) for k in key)
    return sql.SQL(
        "SELECT {keys}, count(*) FROM {stg} GROUP BY {keys} "
        "HAVING count(*) > 1 OR bool_or({null}) ORDER BY count(*) DESC LIMIT {limit}"
    ).format(keys=column_list(key), stg=staging.identifier, null=null_key, limit=sql.Literal(limit))


def merge(
    target: QualifiedName,
    staging: QualifiedName,
    *,
    columns: Sequence[Column],
    key: Sequence[str],
    delete_scope: CheckedSql | None = None,
    delete_missing: bool = False,
    returning: bool = False,
    nulled: Sequence[str] = (),
) -> sql.Composed:
    """MERGE the staged rows into the target by `key`.

    Matched rows are updated only when their binary image differs (`*<>`, which also works for
    types without an equality operator and tells 1.0 from 1.00), so unchanged rows are never
    rewritten. With `delete_missing` (PostgreSQL 17+), target rows in `delete_scope` whose key is
    not staged are deleted in the same statement. With `returning` (PostgreSQL 17+), the
    statement returns one `merge_action()` per affected row, for exact counts. Columns in
    `nulled` (target columns gone from the source) are set NULL in inserted and updated rows
    but do not make a row differ.
    """
    updatable = [c.name for c in columns if c.name not in key and not c.identity_always]
    clauses: list[sql.Composable] = []
    if updatable:
        clauses.append(_update_if_changed(updatable, nulled))
    clauses.append(_insert_if_new(columns, nulled))
    if delete_missing:
        clauses.append(_delete_if_not_staged(delete_scope))
    stmt = sql.SQL("MERGE INTO {} AS t USING {} AS s ON {} {}").format(
        target.identifier, staging.identifier, join_on(key, "t", "s"), sql.SQL(" ").join(clauses)
    )
    return _count_actions(stmt) if returning else stmt


def _update_if_changed(updatable: Sequence[str], nulled: Sequence[str] = ()) -> sql.Composed:
    """`WHEN MATCHED AND <binary image differs> THEN UPDATE SET` the updatable columns."""
    sets = [sql.SQL("{} = {}").format(sql.Identifier(n), sql.Identifier("s", n)) for n in updatable]
    sets += [sql.SQL("{} = NULL").format(sql.Identifier(n)) for n in nulled]
    return sql.SQL("WHEN MATCHED AND record_image_ne(ROW({}), ROW({})) THEN UPDATE SET {}").format(
        column_list(updatable, alias="t"),
        column_list(updatable, alias="s"),
        sql.SQL(", ").join(sets),
    )


def _insert_if_new(columns: Sequence[Column], nulled: Sequence[str] = ()) -> sql.Composed:
    """`WHEN NOT MATCHED THEN INSERT` every column (and NULL into the `nulled` ones)."""
    names = [c.name for c in columns]
    values: list[sql.Composable] = [sql.Identifier("s", n) for n in names]
    values += [sql.SQL("NULL") for _ in nulled]
    return sql.SQL("WHEN NOT MATCHED THEN INSERT ({}){} VALUES ({})").format(
        column_list([*names, *nulled]), _overriding(columns), sql.SQL(", ").join(values)
    )


def _delete_if_not_staged(scope: CheckedSql | None) -> sql.Composed:
    """`WHEN NOT MATCHED BY SOURCE [AND scope] THEN DELETE` (PostgreSQL 17+)."""
    condition = (
        sql.SQL(" AND {}").format(qualified_scope(scope, "t")) if scope is not None else sql.SQL("")
    )
    return sql.SQL("WHEN NOT MATCHED BY SOURCE{} THEN DELETE").format(condition)


def _count_actions(statement: sql.Composable) -> sql.Composed:
    """The MERGE wrapped to return its inserts, updates and deletes (PostgreSQL 17+)."""
    return sql.SQL(
        "WITH m AS ({} RETURNING merge_action() AS action) "
        "SELECT count(*) FILTER (WHERE action = 'INSERT'), "
        "count(*) FILTER (WHERE action = 'UPDATE'), "
        "count(*) FILTER (WHERE action = 'DELETE') FROM m"
    ).format(statement)


def _overriding(columns: Sequence[Column]) -> sql.SQL:
    """` OVERRIDING SYSTEM VALUE` when a column is `GENERATED ALWAYS AS IDENTITY`."""
    return sql.SQL(" OVERRIDING SYSTEM VALUE" if any(c.identity_always for c in columns) else "")


def count_new_keys(
    staging: QualifiedName, target: QualifiedName, *, key: Sequence[str]
) -> sql.Composed:
    """How many staged keys the target does not hold yet: the MERGE's inserts (PG 15/16).

    With few staged rows this probes the target's key index, instead of counting the whole
    target before and after the MERGE.
    """
    return sql.SQL(
        "SELECT count(*) FROM {} AS s WHERE NOT EXISTS (SELECT FROM {} AS t WHERE {})"
    ).format(staging.identifier, target.identifier, join_on(key, "t", "s"))


def delete_missing(
    target: QualifiedName, keys: QualifiedName, *, key: Sequence[str], where: CheckedSql | None
) -> sql.Composed:
    """Delete target rows in scope whose key is not in `keys` (sync on PostgreSQL 15/16).

    The scope stands outside the sub-select, where the only relation is the target, so its
    unqualified column names cannot be captured by the staging table.
    """
    missing = sql.SQL("NOT EXISTS (SELECT FROM {} AS s WHERE {})").format(
        keys.identifier, join_on(key, "s", "t")
    )
    return sql.SQL("DELETE FROM {} AS t{}").format(
        target.identifier, scope_filter(where, extra=missing)
    )


def insert_from(
    target: QualifiedName, staging: QualifiedName, columns: Sequence[Column]
) -> sql.Composed:
    """`INSERT INTO target (cols) SELECT cols FROM staging`."""
    names = [c.name for c in columns]
    return sql.SQL("INSERT INTO {} ({}){} SELECT {} FROM {}").format(
        target.identifier,
        column_list(names),
        _overriding(columns),
        column_list(names),
        staging.identifier,
    )
