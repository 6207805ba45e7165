"""PostgreSQL `COMMENT`s: read them from the catalog, write them on the target.

A table's comment and its columns' comments are its documentation; stagecopy carries them from
the source to the target and into Dagster (asset description, column descriptions).
"""

from __future__ import annotations

from psycopg import sql

from stagecopy_dagster.identifiers import QualifiedName

#: (schema, table, table comment, {column: comment}) of each named table that exists.
#: Parameters: an array of schemas and an array of table names, paired by position.
TABLE_COMMENTS = sql.SQL(
    "SELECT n.nspname, c.relname, pg_catalog.obj_description(c.oid, 'pg_class'), "
    "(SELECT pg_catalog.json_object_agg(a.attname, d.description ORDER BY a.attnum) "
    "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_description d "
    "ON d.objoid = a.attrelid AND d.objsubid = a.attnum "
    "AND d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass "
    "WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) "
    "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "JOIN unnest(%s::text[], %s::text[]) AS w(nspname, relname) "
    "ON w.nspname = n.nspname AND w.relname = c.relname"
)


def comment_on_table(table: QualifiedName, comment: str) -> sql.Composed:
    """`COMMENT ON TABLE` (a literal: COMMENT takes no bind parameters)."""
    return sql.SQL("COMMENT ON TABLE {} IS {}").format(table.identifier, sql.Literal(comment))


def comment_on_column(table: QualifiedName, column: str, comment: str) -> sql.Composed:
    """`COMMENT ON COLUMN` (a literal: COMMENT takes no bind parameters)."""
    return sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(
        table.identifier, sql.Identifier(column), sql.Literal(comment)
    )
