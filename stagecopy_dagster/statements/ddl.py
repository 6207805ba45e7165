"""Schema changes on the target: schemas, tables, staging tables, keys, indexes, columns."""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import sql

from stagecopy_dagster.engine.types import Column
from stagecopy_dagster.identifiers import QualifiedName
from stagecopy_dagster.statements.compose import column_list, type_sql


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


def alter_column_type(table: QualifiedName, column: Column) -> sql.Composed:
    """`ALTER TABLE ... ALTER COLUMN ... TYPE`: a lossless widening to the source's type."""
    return sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {}").format(
        table.identifier, sql.Identifier(column.name), type_sql(column.type)
    )


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
