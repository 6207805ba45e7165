"""Reading what the databases hold: relations, columns, keys, versions.

Thin functions over the catalog statements in :mod:`stagecopy_dagster.statements`; each takes an
open connection and returns plain values.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from stagecopy_dagster import statements as st
from stagecopy_dagster.engine.types import SourceSize
from stagecopy_dagster.errors import SourceError, UnsafeSqlError
from stagecopy_dagster.identifiers import QualifiedName
from stagecopy_dagster.sqlguard import CheckedSql
from stagecopy_dagster.statements import Column


def server_version(conn: psycopg.Connection) -> int:
    """The server's `server_version_num` (e.g. 180006)."""
    return conn.info.server_version


def relation_oid(conn: psycopg.Connection, table: QualifiedName) -> int | None:
    """The OID of a table or view, or None when it does not exist."""
    row = conn.execute(st.RELATION_OID, (table.schema, table.name)).fetchone()
    return None if row is None else int(row[0])


def columns(conn: psycopg.Connection, oid: int) -> list[Column]:
    """The relation's live columns in order."""
    rows = conn.execute(st.COLUMNS, (oid,)).fetchall()
    return [
        Column(name, type_, bool(nn), bool(gen), bool(ident), bool(safe))
        for name, type_, nn, gen, ident, safe in rows
    ]


def primary_key(conn: psycopg.Connection, oid: int) -> tuple[str, ...]:
    """The primary key's columns in key order (empty when there is none)."""
    return tuple(r[0] for r in conn.execute(st.PRIMARY_KEY, (oid,)).fetchall())


def table_size(
    conn: psycopg.Connection, oid: int, table: QualifiedName, columns: list[str]
) -> SourceSize:
    """What the statistics say about a table's size, and how ordered `columns` are in its heap."""
    row = conn.execute(st.RELATION_SIZE, (oid,)).fetchone()
    assert row is not None
    found = conn.execute(st.COLUMN_CORRELATION, (table.schema, table.name, columns)).fetchall()
    return SourceSize(
        rows=float(row[1]),
        heap_bytes=int(row[0]),
        correlation=tuple((name, float(c)) for name, c in found if c is not None),
    )


def query_columns(conn: psycopg.Connection, query: CheckedSql) -> list[Column]:
    """The columns a query returns, with `format_type` types, without running it."""
    cur = conn.execute(st.describe_query(query))
    result = cur.pgresult
    assert result is not None
    found: list[Column] = []
    for i, desc in enumerate(cur.description or ()):
        oid, mod = result.ftype(i), result.fmod(i)
        row = conn.execute(st.FORMAT_TYPE, (oid, mod, oid)).fetchone()
        assert row is not None
        found.append(Column(desc.name, row[0], binary_safe=bool(row[1])))
    names = [c.name for c in found]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SourceError(f"query returns column(s) {duplicates} more than once; alias them")
    return found


def check_functions(conn: psycopg.Connection, checked: CheckedSql, *, what: str) -> None:
    """Refuse user SQL that calls a volatile function (side effects, or a new answer per call)."""
    for schema, name in checked.functions:
        row = conn.execute(st.VOLATILE_FUNCTIONS, ([name], schema, schema)).fetchone()
        if row is not None:
            raise UnsafeSqlError(
                f"{what} calls {name}(), a volatile function (it may have side effects or "
                "give a different answer on each side); only immutable or stable functions "
                "are allowed"
            )


def explain(conn: psycopg.Connection, statement: sql.Composable) -> None:
    """Plan `statement` without running it: proves names and types resolve."""
    conn.execute(sql.SQL("EXPLAIN {}").format(statement))
