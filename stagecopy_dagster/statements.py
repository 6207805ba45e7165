"""Pure SQL builders: every statement stagecopy sends, composed with :mod:`psycopg.sql`.

Nothing here touches a database; each builder returns a :class:`psycopg.sql.Composed` whose text
the unit tests compare exactly (``stmt.as_string(None)``). Identifiers are always
:class:`~psycopg.sql.Identifier`; values are :class:`~psycopg.sql.Literal` (COPY cannot take bind
parameters) or bind parameters; the only user SQL comes in as a
:class:`~stagecopy_dagster.sqlguard.CheckedSql`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Any, LiteralString, cast

from psycopg import sql

from stagecopy_dagster.engine.types import Column, CopyFormat
from stagecopy_dagster.identifiers import QualifiedName
from stagecopy_dagster.sqlguard import CheckedSql

#: Session settings that make text output identical on both sides (COPY text, check hashes).
SESSION_SETTINGS: dict[str, str] = {
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "TimeZone": "UTC",
    "extra_float_digits": "3",
    "bytea_output": "hex",
    "client_encoding": "UTF8",
}


def type_sql(type_name: str) -> sql.SQL:
    """A column type as the catalog's `format_type()` printed it (catalog text, not user text)."""
    return sql.SQL(cast(LiteralString, type_name))


def ident(name: str) -> sql.Identifier:
    """Shorthand for one quoted identifier."""
    return sql.Identifier(name)


def column_list(names: Sequence[str], *, alias: str | None = None) -> sql.Composed:
    """`"a", "b"` or, with an alias, `t."a", t."b"`."""
    if alias is None:
        return sql.SQL(", ").join(sql.Identifier(n) for n in names)
    return sql.SQL(", ").join(sql.Identifier(alias, n) for n in names)


def _and(parts: Sequence[sql.Composable]) -> sql.Composable:
    return sql.SQL(" AND ").join(parts) if parts else sql.SQL("TRUE")


# --- catalog ---------------------------------------------------------------------------------

RELATION_OID = sql.SQL(
    "SELECT c.oid, c.relkind FROM pg_catalog.pg_class c "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = %s AND c.relname = %s"
)

COLUMNS = sql.SQL(
    "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull, "
    "a.attgenerated <> '', a.attidentity = 'a', "
    "(t.typtype IN ('b', 'e', 'r', 'm') AND (t.oid < 16384 OR t.typtype = 'e')) "
    "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
    "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
)

PRIMARY_KEY = sql.SQL(
    "SELECT a.attname FROM pg_catalog.pg_index i "
    "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) "
    "JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
    "WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.ord"
)

FORMAT_TYPE = sql.SQL(
    "SELECT pg_catalog.format_type(%s, %s), "
    "(t.typtype IN ('b', 'e', 'r', 'm') AND (t.oid < 16384 OR t.typtype = 'e')) "
    "FROM pg_catalog.pg_type t WHERE t.oid = %s"
)

#: Volatile functions among the given names (side effects or different answers per call).
VOLATILE_FUNCTIONS = sql.SQL(
    "SELECT DISTINCT p.proname FROM pg_catalog.pg_proc p "
    "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
    "WHERE p.provolatile = 'v' AND p.proname = ANY(%s) "
    "AND (%s::text IS NULL OR n.nspname = %s)"
)

#: The planner's row estimate of a table (no scan), from its quoted name.
ESTIMATED_ROWS = sql.SQL("SELECT reltuples FROM pg_catalog.pg_class WHERE oid = %s::regclass")

SCHEMA_EXISTS = sql.SQL("SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = %s")


def set_session(settings: dict[str, str] | None = None) -> sql.Composed:
    """`SET name = 'value'; ...` for the session settings both sides must share."""
    items = (settings or SESSION_SETTINGS).items()
    return sql.SQL("; ").join(
        sql.SQL("SET {} = {}").format(sql.Identifier(k), sql.Literal(v)) for k, v in items
    )


#: Planner costs that let a big read (the diff's hashing of every target row) use parallel
#: workers, which the defaults withhold from a CREATE TABLE AS whose result is small.
EAGER_PARALLEL: dict[str, str] = {"parallel_setup_cost": "0", "parallel_tuple_cost": "0.001"}


def reset_local(name: str) -> sql.Composed:
    """`SET LOCAL name TO DEFAULT`: back to the session's value."""
    return sql.SQL("SET LOCAL {} TO DEFAULT").format(sql.Identifier(name))


def set_local(name: str, value: str) -> sql.Composed:
    """`SET LOCAL name = 'value'` (lasts until the transaction ends)."""
    return sql.SQL("SET LOCAL {} = {}").format(sql.Identifier(name), sql.Literal(value))


# --- reading the source ----------------------------------------------------------------------


def source_relation(source: QualifiedName | CheckedSql) -> sql.Composable:
    """The FROM item for a source table or a checked query."""
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
        op = sql.SQL(">=") if inclusive else sql.SQL(">")
        parts.append(
            sql.SQL("{} {} {}").format(
                sql.Identifier(incremental_field), op, sql.Literal(watermark)
            )
        )
    if extra is not None:
        parts.append(extra)
    if not parts:
        return sql.SQL("")
    return sql.SQL(" WHERE {}").format(_and(parts))


def select_rows(
    source: QualifiedName | CheckedSql,
    columns: Sequence[str],
    where: sql.Composable,
) -> sql.Composed:
    """`SELECT cols FROM source WHERE ...`."""
    return sql.SQL("SELECT {} FROM {}{}").format(
        column_list(columns), source_relation(source), where
    )


def copy_out(select: sql.Composable, fmt: CopyFormat) -> sql.Composed:
    """`COPY (select) TO STDOUT (FORMAT fmt)`."""
    return sql.SQL("COPY ({}) TO STDOUT (FORMAT {})").format(select, sql.SQL(fmt))


def copy_in(table: sql.Composable, columns: Sequence[str], fmt: CopyFormat) -> sql.Composed:
    """`COPY table (cols) FROM STDIN (FORMAT fmt)`."""
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT {})").format(
        table, column_list(columns), sql.SQL(fmt)
    )


def export_snapshot() -> sql.SQL:
    """`SELECT pg_export_snapshot()`: lets parallel readers share the copy's snapshot."""
    return sql.SQL("SELECT pg_catalog.pg_export_snapshot()")


def set_snapshot(snapshot_id: str) -> sql.Composed:
    """`SET TRANSACTION SNAPSHOT '...'`."""
    return sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_id))


def ctid_range(first_block: int, end_block: int | None) -> sql.Composed:
    """A TID range condition covering heap blocks [first_block, end_block)."""
    low = sql.SQL("ctid >= {}::tid").format(sql.Literal(f"({first_block},0)"))
    if end_block is None:
        return low
    return sql.SQL("{} AND ctid < {}::tid").format(low, sql.Literal(f"({end_block},0)"))


RELATION_BLOCKS = sql.SQL(
    "SELECT pg_catalog.pg_relation_size(%s::oid) / current_setting('block_size')::int"
)


# --- preparing the target --------------------------------------------------------------------


def create_schema(schema: str) -> sql.Composed:
    """`CREATE SCHEMA IF NOT EXISTS schema`."""
    return sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))


def create_table(
    table: QualifiedName, columns: Sequence[Column], primary_key: Sequence[str] | None
) -> sql.Composed:
    """`CREATE TABLE` with the source's exact types, NOT NULLs and primary key."""
    defs: list[sql.Composable] = [
        sql.SQL("{} {}{}").format(
            sql.Identifier(c.name), type_sql(c.type), sql.SQL(" NOT NULL" if c.not_null else "")
        )
        for c in columns
    ]
    if primary_key:
        defs.append(sql.SQL("PRIMARY KEY ({})").format(column_list(primary_key)))
    return sql.SQL("CREATE TABLE {} ({})").format(table.identifier, sql.SQL(", ").join(defs))


def add_primary_key(table: QualifiedName, key: Sequence[str]) -> sql.Composed:
    """`ALTER TABLE ... ADD PRIMARY KEY`: built after the first load, by one sort."""
    return sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(table.identifier, column_list(key))


def create_index(table: QualifiedName, index_name: str, column: str) -> sql.Composed:
    """`CREATE INDEX name ON table (column)` (the watermark column of a created table)."""
    return sql.SQL("CREATE INDEX {} ON {} ({})").format(
        sql.Identifier(index_name), table.identifier, sql.Identifier(column)
    )


def add_column(table: QualifiedName, column: Column) -> sql.Composed:
    """`ALTER TABLE ... ADD COLUMN` for a column that appeared at the source (nullable)."""
    return sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
        table.identifier, sql.Identifier(column.name), type_sql(column.type)
    )


def advisory_lock(table: QualifiedName) -> sql.Composed:
    """A transaction-level advisory lock that serializes stagecopy runs on one target."""
    key = f"stagecopy:{table.schema}.{table.name}"
    return sql.SQL("SELECT pg_catalog.pg_advisory_xact_lock(hashtextextended({}, 0))").format(
        sql.Literal(key)
    )


def lock_table(table: QualifiedName) -> sql.Composed:
    """`LOCK TABLE ... IN SHARE ROW EXCLUSIVE MODE`: readers go on, other writers wait."""
    return sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(table.identifier)


def is_empty(table: QualifiedName, where: CheckedSql | None) -> sql.Composed:
    """`SELECT NOT EXISTS (SELECT FROM table WHERE scope)`."""
    return sql.SQL("SELECT NOT EXISTS (SELECT FROM {}{})").format(
        table.identifier, scope_filter(where)
    )


def max_watermark(
    table: QualifiedName, field: str, where: CheckedSql | None, lookback: str | None
) -> sql.Composed:
    """The target's watermark within scope, moved back by `lookback` when given."""
    value: sql.Composable = sql.SQL("max({})").format(sql.Identifier(field))
    if lookback:
        value = sql.SQL("{} - {}::interval").format(value, sql.Literal(lookback))
    return sql.SQL("SELECT {} FROM {}{}").format(value, table.identifier, scope_filter(where))


def count_rows(table: QualifiedName) -> sql.Composed:
    """`SELECT count(*) FROM table`."""
    return sql.SQL("SELECT count(*) FROM {}").format(table.identifier)


def create_staging(
    staging: QualifiedName, target: QualifiedName, columns: Sequence[str]
) -> sql.Composed:
    """An UNLOGGED, index-free staging table with the target's column types.

    Example:
        >>> create_staging(QualifiedName("s", "_stg"), QualifiedName("s", "t"), ["id"]).as_string()
        'CREATE UNLOGGED TABLE "s"."_stg" WITH (autovacuum_enabled = false) AS SELECT "id" FROM "s"."t" WITH NO DATA'
    """  # noqa: E501
    return sql.SQL(
        "CREATE UNLOGGED TABLE {} WITH (autovacuum_enabled = false) AS SELECT {} FROM {} "
        "WITH NO DATA"
    ).format(staging.identifier, column_list(columns), target.identifier)


def create_staging_table(staging: QualifiedName, columns: Sequence[Column]) -> sql.Composed:
    """An UNLOGGED, index-free staging table declared from column types (parallel loads)."""
    return sql.SQL("CREATE UNLOGGED TABLE {} ({}) WITH (autovacuum_enabled = false)").format(
        staging.identifier,
        sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c.name), type_sql(c.type)) for c in columns
        ),
    )


def analyze(table: QualifiedName) -> sql.Composed:
    """`ANALYZE table`: statistics for a freshly loaded staging table."""
    return sql.SQL("ANALYZE {}").format(table.identifier)


def drop_table(table: QualifiedName) -> sql.Composed:
    """`DROP TABLE IF EXISTS table`."""
    return sql.SQL("DROP TABLE IF EXISTS {}").format(table.identifier)


def truncate(table: QualifiedName) -> sql.Composed:
    """`TRUNCATE table`."""
    return sql.SQL("TRUNCATE {}").format(table.identifier)


def delete_scope(table: QualifiedName, where: CheckedSql | None) -> sql.Composed:
    """`DELETE FROM table WHERE scope` (mode replace)."""
    return sql.SQL("DELETE FROM {}{}").format(table.identifier, scope_filter(where))


# --- applying the rows -----------------------------------------------------------------------


def duplicate_keys(staging: QualifiedName, key: Sequence[str], limit: int = 5) -> sql.Composed:
    """Keys that occur more than once (or are NULL) in the staged rows, a few of them."""
    null_key = sql.SQL(" OR ").join(sql.SQL("{} IS NULL").format(sql.Identifier(k)) for k in key)
    return sql.SQL(
        "SELECT {keys}, count(*) FROM {stg} GROUP BY {keys} "
        "HAVING count(*) > 1 OR bool_or({null}) ORDER BY count(*) DESC LIMIT {limit}"
    ).format(keys=column_list(key), stg=staging.identifier, null=null_key, limit=sql.Literal(limit))


def _join_on(key: Sequence[str], left: str, right: str) -> sql.Composable:
    return _and(
        [sql.SQL("{} = {}").format(sql.Identifier(left, k), sql.Identifier(right, k)) for k in key]
    )


def merge(
    target: QualifiedName,
    staging: QualifiedName,
    *,
    columns: Sequence[Column],
    key: Sequence[str],
    delete_scope: CheckedSql | None = None,
    delete_missing: bool = False,
    returning: bool = False,
) -> sql.Composed:
    """MERGE the staged rows into the target by `key`.

    Matched rows are updated only when their binary image differs (`*<>`, which also works for
    types without an equality operator and tells 1.0 from 1.00), so unchanged rows are never
    rewritten. With `delete_missing` (PostgreSQL 17+), target rows in `delete_scope` whose key is
    not staged are deleted in the same statement. With `returning` (PostgreSQL 17+), the
    statement returns one `merge_action()` per affected row, for exact counts.
    """
    names = [c.name for c in columns]
    updatable = [c.name for c in columns if c.name not in key and not c.identity_always]
    clauses: list[sql.Composable] = []
    if updatable:
        clauses.append(
            sql.SQL("WHEN MATCHED AND record_image_ne(ROW({}), ROW({})) THEN UPDATE SET {}").format(
                column_list(updatable, alias="t"),
                column_list(updatable, alias="s"),
                sql.SQL(", ").join(
                    sql.SQL("{} = {}").format(sql.Identifier(n), sql.Identifier("s", n))
                    for n in updatable
                ),
            )
        )
    overriding = sql.SQL(
        " OVERRIDING SYSTEM VALUE" if any(c.identity_always for c in columns) else ""
    )
    clauses.append(
        sql.SQL("WHEN NOT MATCHED THEN INSERT ({}){} VALUES ({})").format(
            column_list(names), overriding, column_list(names, alias="s")
        )
    )
    if delete_missing:
        condition = (
            sql.SQL(" AND {}").format(sql.SQL(delete_scope.qualified("t")))  # pyright: ignore[reportArgumentType]  # noqa: E501 (re-printed parse tree)
            if delete_scope is not None
            else sql.SQL("")
        )
        clauses.append(sql.SQL("WHEN NOT MATCHED BY SOURCE{} THEN DELETE").format(condition))
    stmt = sql.SQL("MERGE INTO {} AS t USING {} AS s ON {} {}").format(
        target.identifier, staging.identifier, _join_on(key, "t", "s"), sql.SQL(" ").join(clauses)
    )
    if not returning:
        return stmt
    return sql.SQL(
        "WITH m AS ({} RETURNING merge_action() AS action) "
        "SELECT count(*) FILTER (WHERE action = 'INSERT'), "
        "count(*) FILTER (WHERE action = 'UPDATE'), "
        "count(*) FILTER (WHERE action = 'DELETE') FROM m"
    ).format(stmt)


def count_new_keys(
    staging: QualifiedName, target: QualifiedName, *, key: Sequence[str]
) -> sql.Composed:
    """How many staged keys the target does not hold yet: the MERGE's inserts (PG 15/16).

    With few staged rows this probes the target's key index, instead of counting the whole
    target before and after the MERGE.
    """
    return sql.SQL(
        "SELECT count(*) FROM {} AS s WHERE NOT EXISTS (SELECT FROM {} AS t WHERE {})"
    ).format(staging.identifier, target.identifier, _join_on(key, "t", "s"))


def delete_missing(
    target: QualifiedName, keys: QualifiedName, *, key: Sequence[str], where: CheckedSql | None
) -> sql.Composed:
    """Delete target rows in scope whose key is not in `keys` (sync on PostgreSQL 15/16).

    The scope stands outside the sub-select, where the only relation is the target, so its
    unqualified column names cannot be captured by the staging table.
    """
    missing = sql.SQL("NOT EXISTS (SELECT FROM {} AS s WHERE {})").format(
        keys.identifier, _join_on(key, "s", "t")
    )
    return sql.SQL("DELETE FROM {} AS t{}").format(
        target.identifier, scope_filter(where, extra=missing)
    )


def insert_from(
    target: QualifiedName, staging: QualifiedName, columns: Sequence[Column]
) -> sql.Composed:
    """`INSERT INTO target (cols) SELECT cols FROM staging`."""
    names = [c.name for c in columns]
    overriding = sql.SQL(
        " OVERRIDING SYSTEM VALUE" if any(c.identity_always for c in columns) else ""
    )
    return sql.SQL("INSERT INTO {} ({}){} SELECT {} FROM {}").format(
        target.identifier,
        column_list(names),
        overriding,
        column_list(names),
        staging.identifier,
    )


# --- diff by key and row hash ---------------------------------------------------------------

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
    source: QualifiedName | CheckedSql,
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
    t_key = sql.Identifier("t", key[0])
    k_key = sql.Identifier("k", key[0])
    changed_row = sql.SQL("{} IS NULL OR {} <> {}").format(
        t_key, sql.Identifier("k", hash_column), row_image_hash(columns, alias="t")
    )
    if sync:
        gone = sql.SQL("{} IS NULL").format(k_key)
        if sync_scope is not None:
            gone = sql.SQL("{} AND ({})").format(gone, sql.SQL(sync_scope.qualified("t")))  # pyright: ignore[reportArgumentType]  # noqa: E501 (re-printed parse tree)
        keys_out = sql.SQL(", ").join(
            sql.SQL("coalesce({}, {}) AS {}").format(
                sql.Identifier("k", k), sql.Identifier("t", k), sql.Identifier(k)
            )
            for k in key
        )
        condition = sql.SQL("({}) OR ({})").format(gone, changed_row)
        join = sql.SQL("FULL JOIN")
        flag = sql.SQL("{} IS NULL").format(k_key)
    else:
        keys_out = column_list(key, alias="k")
        condition = changed_row
        join = sql.SQL("LEFT JOIN")
        flag = sql.SQL("false")
    return sql.SQL(
        "CREATE UNLOGGED TABLE {changed} WITH (autovacuum_enabled = false) AS "
        "SELECT {keys_out}, {flag} AS {gone} FROM {keys} AS k {join} {target} AS t ON {on} "
        "WHERE {condition}"
    ).format(
        changed=changed.identifier,
        keys_out=keys_out,
        flag=flag,
        gone=sql.Identifier(gone_column),
        keys=keys.identifier,
        join=join,
        target=target.identifier,
        on=_join_on(key, "t", "k"),
        condition=condition,
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
        keys.identifier, _join_on(key, "k", "t")
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
    join = _join_on(key, "t", "c")
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


# --- housekeeping ----------------------------------------------------------------------------

#: Staging tables left behind (by any schema), with whether another session holds a lock on them.
LEFTOVER_STAGING = sql.SQL(
    "SELECT n.nspname, c.relname, "
    "EXISTS (SELECT FROM pg_catalog.pg_locks l "
    "WHERE l.relation = c.oid AND l.pid <> pg_backend_pid()) "
    "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind = 'r' AND c.relname LIKE '\\_stagecopy\\_%%' ORDER BY 1, 2"
)


# --- integrity -------------------------------------------------------------------------------

#: Rows are spread over this many buckets; only buckets whose digests differ are read row by row.
CHECK_BUCKETS = 1024


def _row_text(names: Sequence[str]) -> sql.Composable:
    return sql.SQL("ROW({})::text").format(column_list(names))


#: Built-in types whose hash functions are stable across servers and versions (hash
#: partitioning relies on it), so `hash_record_extended` may fingerprint them without text
#: output. Not here: enums (their hash is the label's OID), arrays, json, geometric types.
_PORTABLE_HASH = re.compile(
    r"^(smallint|integer|bigint|real|double precision|boolean|text|bytea|uuid|jsonb|date|"
    r"interval|oid|inet|cidr|macaddr|\"char\"|name|numeric(\(\d+(,\d+)?\))?|"
    r"character varying(\(\d+\))?|character(\(\d+\))?|"
    r"time(stamp)?(\(\d\))? with(out)? time zone)$"
)


def has_portable_hash(type_name: str) -> bool:
    """Whether values of `type_name` (a `format_type()` text) hash alike on every server.

    Equal values hash alike, so such columns compare by equality (`1.0` = `1.00`).
    """
    return bool(_PORTABLE_HASH.match(type_name))


def _row_hash(names: Sequence[str], hashable: Collection[str], seed: int) -> sql.Composable:
    """A 64-bit fingerprint of columns: binary hashes where portable, text hashes elsewhere."""
    binary = [n for n in names if n in hashable]
    text = [n for n in names if n not in hashable]
    parts: list[sql.Composable] = []
    if binary:
        parts.append(
            sql.SQL("hash_record_extended(ROW({}), {})").format(
                column_list(binary), sql.Literal(seed)
            )
        )
    if text:
        parts.append(sql.SQL("hashtextextended({}, {})").format(_row_text(text), sql.Literal(seed)))
    return sql.SQL(" # ").join(parts)


def _bucket_of(key: Sequence[str], hashable: Collection[str]) -> sql.Composable:
    return sql.SQL("({} & {})::int").format(
        _row_hash(key, hashable, 0), sql.Literal(CHECK_BUCKETS - 1)
    )


def bucket_digests(
    relation: QualifiedName | CheckedSql,
    columns: Sequence[str],
    key: Sequence[str],
    where: CheckedSql | None,
    hashable: Collection[str] = (),
) -> sql.Composed:
    """Per bucket of keys: row count and the sum of row hashes, for the rows in scope.

    Both sides compute this over the same columns with the same session settings, so equal
    rows give equal hashes; a bucket whose (count, sum) differ holds a difference. Columns in
    `hashable` (see :func:`has_portable_hash`) are hashed in binary, the rest as text.
    """
    # The sub-select (OFFSET 0 keeps it from being flattened) hands the aggregate 12-byte
    # (bucket, hash) pairs instead of whole rows, which otherwise spill to temp files.
    return sql.SQL(
        "SELECT b, count(*), sum(h) FROM (SELECT {bucket} AS b, {row} AS h FROM {rel}{where} "
        "OFFSET 0) AS d GROUP BY 1"
    ).format(
        bucket=_bucket_of(key, hashable),
        row=_row_hash(columns, hashable, 1),
        rel=source_relation(relation),
        where=scope_filter(where),
    )


def row_digests(
    relation: QualifiedName | CheckedSql,
    columns: Sequence[str],
    key: Sequence[str],
    where: CheckedSql | None,
    buckets: Sequence[int],
    hashable: Collection[str] = (),
) -> sql.Composed:
    """Key text and row hash of the rows in scope whose bucket is one of `buckets`.

    The buckets are a literal, not a bind parameter: the statement holds the user's `where`,
    whose `%` (as in `LIKE 'a%'`) must not be read as a placeholder.
    """
    in_buckets = sql.SQL("{} = ANY({}::int[])").format(
        _bucket_of(key, hashable), sql.Literal("{" + ",".join(str(int(b)) for b in buckets) + "}")
    )
    return sql.SQL("SELECT {key}, {row} FROM {rel}{where}").format(
        key=_row_text(key),
        row=_row_hash(columns, hashable, 1),
        rel=source_relation(relation),
        where=scope_filter(where, extra=in_buckets),
    )


# --- change detection (sensor) ---------------------------------------------------------------

#: Cumulative write counters and the file node (changes on TRUNCATE) of one table.
TABLE_CHANGE_COUNTERS = sql.SQL(
    "SELECT s.n_tup_ins, s.n_tup_upd, s.n_tup_del, pg_catalog.pg_relation_filenode(c.oid) "
    "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "LEFT JOIN pg_catalog.pg_stat_all_tables s ON s.relid = c.oid "
    "WHERE n.nspname = %s AND c.relname = %s"
)


def watermark_signature(
    source: QualifiedName | CheckedSql, field: str, where: CheckedSql | None
) -> sql.Composed:
    """`max(field)` and count of the scope at the source: cheap with an index on `field`."""
    return sql.SQL("SELECT max({})::text, count(*) FROM {}{}").format(
        sql.Identifier(field), source_relation(source), scope_filter(where)
    )
