"""The diff path: key and row-image hashes, the staged changed and gone keys, and their pages.

The source's keys and row hashes are staged on the target; one join there finds the keys to
copy (new or hashing differently) and, for sync, the keys gone from the source.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from psycopg import sql

from stagecopy_dagster.engine.types import Column
from stagecopy_dagster.identifiers import QualifiedName
from stagecopy_dagster.sqlguard import CheckedSql
from stagecopy_dagster.statements.compose import column_list, join_on, type_sql
from stagecopy_dagster.statements.projection import Projection
from stagecopy_dagster.statements.scope import (
    qualified_scope,
    scope_filter,
    source_relation,
)

#: Types whose values hash apart whenever their stored images differ (equality is identity):
#: hashed as they are. Strings are hashed under `COLLATE "C"`, so a nondeterministic collation
#: cannot make `'a'` and `'A'` hash alike.
_IMAGE_HASH = re.compile(
    r"^(smallint|integer|bigint|boolean|date|uuid|bytea|oid|\"char\"|name|text|"
    r"character varying(\(\d+\))?|character(\(\d+\))?|"
    r"time(stamp)?(\(\d\))? without time zone|timestamp(\(\d\))? with time zone)$"
)
_NUMERIC = re.compile(r"^numeric(\(\d+(,\d+)?\))?$")
_COLLATABLE = re.compile(r"^(name|text|character varying(\(\d+\))?|character(\(\d+\))?)$")


def _image_hash_parts(column: Column, alias: str | None) -> list[sql.Composable]:
    col = sql.Identifier(alias, column.name) if alias else sql.Identifier(column.name)
    type_name = column.type
    if _IMAGE_HASH.match(type_name):
        if _COLLATABLE.match(type_name):
            return [sql.SQL('{} COLLATE "C"').format(col)]
        return [col]
    if _NUMERIC.match(type_name):  # 1.0 = 1.00 but they are different rows to copy
        return [col, sql.SQL("scale({})").format(col)]
    if type_name == "double precision":  # -0 = 0
        return [sql.SQL("float8send({})").format(col)]
    if type_name == "real":
        return [sql.SQL("float4send({})").format(col)]
    # jsonb ({"a": 1.0} = {"a": 1.00}), interval ('1 day' = '24 hours'), arrays, enums (whose
    # hash is an OID that differs between databases), user types: their text, which both
    # sides print alike under SESSION_SETTINGS.
    return [sql.SQL('{}::text COLLATE "C"').format(col)]


def row_image_hash(columns: Sequence[Column], alias: str | None = None) -> sql.Composed:
    """A 64-bit hash of a row that changes whenever any column's stored image changes.

    Unlike the integrity check's hash (equality: `1.0` = `1.00`), this one tells apart every
    two values MERGE's `record_image_ne` tells apart, so a row whose hash is unchanged needs no
    copy; two different rows share a hash with probability 2^-64.

    Example:
        >>> row_image_hash([Column("id", "bigint"), Column("v", "numeric(9,2)")]).as_string()
        'hash_record_extended(ROW("id", "v", scale("v")), 0)'
    """
    parts = [p for c in columns for p in _image_hash_parts(c, alias)]
    return sql.SQL("hash_record_extended(ROW({}), 0)").format(sql.SQL(", ").join(parts))


def select_key_hashes(
    source: QualifiedName | CheckedSql | Projection,
    key: Sequence[str],
    columns: Sequence[Column],
    where: CheckedSql | None,
) -> sql.Composed:
    """`SELECT key, row hash FROM source WHERE scope`: what the diff reads at the source."""
    return sql.SQL("SELECT {}, {} FROM {}{}").format(
        column_list(key), row_image_hash(columns), source_relation(source), scope_filter(where)
    )


def create_changed_keys(
    changed: QualifiedName,
    keys: QualifiedName,
    target: QualifiedName,
    *,
    key: Sequence[str],
    columns: Sequence[Column],
    hash_column: str,
    gone_column: str,
    sync_scope: CheckedSql | None = None,
    sync: bool = False,
) -> sql.Composed:
    """Stage the keys to copy: new to the target, or hashing differently there.

    With `sync`, the same join (a FULL one) also stages, flagged in `gone_column`, the keys of
    target rows inside `sync_scope` that the source no longer has: the rows to delete. A plain
    CREATE TABLE AS (unlike MERGE) may run with parallel workers; its result is small when few
    rows changed.
    """
    changed_row = sql.SQL("{} IS NULL OR {} <> {}").format(
        sql.Identifier("t", key[0]),
        sql.Identifier("k", hash_column),
        row_image_hash(columns, alias="t"),
    )
    pick = _changed_or_gone(key, changed_row, sync_scope) if sync else _changed(key, changed_row)
    return sql.SQL(
        "CREATE UNLOGGED TABLE {changed} WITH (autovacuum_enabled = false) AS "
        "SELECT {keys_out}, {flag} AS {gone} FROM {keys} AS k {join} {target} AS t ON {on} "
        "WHERE {condition}"
    ).format(
        changed=changed.identifier,
        keys_out=pick.keys_out,
        flag=pick.gone_flag,
        gone=sql.Identifier(gone_column),
        keys=keys.identifier,
        join=pick.join,
        target=target.identifier,
        on=join_on(key, "t", "k"),
        condition=pick.condition,
    )


class _KeyPick(NamedTuple):
    """How the changed-keys statement joins the staged keys (`k`) to the target (`t`)."""

    keys_out: sql.Composable
    """The key columns it stages."""
    gone_flag: sql.Composable
    """Whether a staged key is one to delete."""
    join: sql.SQL
    condition: sql.Composable
    """Which joined rows it stages."""


def _changed(key: Sequence[str], changed_row: sql.Composable) -> _KeyPick:
    """Merge: the source's keys that are new to the target or hash differently there."""
    return _KeyPick(
        keys_out=column_list(key, alias="k"),
        gone_flag=sql.SQL("false"),
        join=sql.SQL("LEFT JOIN"),
        condition=changed_row,
    )


def _changed_or_gone(
    key: Sequence[str], changed_row: sql.Composable, sync_scope: CheckedSql | None
) -> _KeyPick:
    """Sync: the changed keys, and the keys of target rows in scope the source no longer has."""
    k_key = sql.Identifier("k", key[0])
    gone = sql.SQL("{} IS NULL").format(k_key)
    if sync_scope is not None:
        gone = sql.SQL("{} AND ({})").format(gone, qualified_scope(sync_scope, "t"))
    return _KeyPick(
        keys_out=sql.SQL(", ").join(
            sql.SQL("coalesce({}, {}) AS {}").format(
                sql.Identifier("k", k), sql.Identifier("t", k), sql.Identifier(k)
            )
            for k in key
        ),
        gone_flag=sql.SQL("{} IS NULL").format(k_key),
        join=sql.SQL("FULL JOIN"),
        condition=sql.SQL("({}) OR ({})").format(gone, changed_row),
    )


def count_changed(changed: QualifiedName, gone_column: str) -> sql.Composed:
    """How many of the staged changed keys are to copy (not flagged gone)."""
    return sql.SQL("SELECT count(*) FROM {} WHERE NOT {}").format(
        changed.identifier, sql.Identifier(gone_column)
    )


def create_gone_keys(
    gone: QualifiedName,
    keys: QualifiedName,
    target: QualifiedName,
    *,
    key: Sequence[str],
    where: CheckedSql | None,
) -> sql.Composed:
    """Stage the keys of target rows in scope that are not among the source's `keys`.

    Sync's deletes on PostgreSQL 15, which cannot run the diff's FULL JOIN in parallel: an
    anti-join that can. The scope stands outside the sub-select, where the only relation is
    the target, so its unqualified column names cannot be captured by the keys table.
    """
    missing = sql.SQL("NOT EXISTS (SELECT FROM {} AS k WHERE {})").format(
        keys.identifier, join_on(key, "k", "t")
    )
    return sql.SQL(
        "CREATE UNLOGGED TABLE {} WITH (autovacuum_enabled = false) AS SELECT {} FROM {} AS t{}"
    ).format(
        gone.identifier,
        column_list(key, alias="t"),
        target.identifier,
        scope_filter(where, extra=missing),
    )


def delete_gone(
    target: QualifiedName,
    gone: QualifiedName,
    *,
    key: Sequence[str],
    gone_column: str | None = None,
) -> sql.Composed:
    """Delete the target rows whose keys are staged in `gone` (flagged in `gone_column`)."""
    join = join_on(key, "t", "c")
    if gone_column is not None:
        join = sql.SQL("{} AND {}").format(sql.Identifier("c", gone_column), join)
    return sql.SQL("DELETE FROM {} AS t USING {} AS c WHERE {}").format(
        target.identifier, gone.identifier, join
    )


def changed_key_arrays(
    changed: QualifiedName, key: Sequence[str], gone_column: str, offset: int, limit: int
) -> sql.Composed:
    """One array literal per key column for `limit` keys to copy from `offset` (in key order).

    The aggregates of one query see their rows in one order, so the arrays line up.
    """
    return sql.SQL(
        "SELECT {arrays} FROM (SELECT {keys} FROM {changed} WHERE NOT {gone} ORDER BY {keys} "
        "OFFSET {offset} LIMIT {limit}) AS c"
    ).format(
        arrays=sql.SQL(", ").join(
            sql.SQL("array_agg({})::text").format(sql.Identifier(k)) for k in key
        ),
        keys=column_list(key),
        changed=changed.identifier,
        gone=sql.Identifier(gone_column),
        offset=sql.Literal(offset),
        limit=sql.Literal(limit),
    )


def key_in(key: Sequence[Column], arrays: Sequence[str]) -> sql.Composed:
    """`key = ANY(...)` (or a row IN unnest(...)) for array literals of the key's own types.

    The arrays are literals, not bind parameters: the statement is a COPY (which takes none)
    around the user's `where`, whose `%` must not be read as a placeholder.
    """
    typed = [
        sql.SQL("CAST({} AS {}[])").format(sql.Literal(a), type_sql(c.type))
        for c, a in zip(key, arrays, strict=True)
    ]
    if len(key) == 1:
        return sql.SQL("{} = ANY({})").format(sql.Identifier(key[0].name), typed[0])
    return sql.SQL("({}) IN (SELECT * FROM unnest({}))").format(
        column_list([c.name for c in key]), sql.SQL(", ").join(typed)
    )
