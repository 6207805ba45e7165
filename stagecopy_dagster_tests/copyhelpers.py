"""Helpers shared by the copier integration tests: run one copy, checksum a relation.

Copies run with the least-privilege URLs (``pg.source_url`` / ``pg.target_url``) and the
session settings the product needs, exactly as the resource would run them.
"""

from __future__ import annotations

from typing import Any, LiteralString, cast

import psycopg

from stagecopy_dagster import runner
from stagecopy_dagster import statements as st
from stagecopy_dagster.connection import Endpoint
from stagecopy_dagster.copier import CopyOptions, CopyResult
from stagecopy_dagster.integrity import IntegrityReport
from stagecopy_dagster.spec import TableSpec, load_spec
from stagecopy_dagster_tests.pg import PgPair


def table_spec(entry: dict[str, Any]) -> TableSpec:
    """One table entry validated as a spec."""
    return load_spec({"tables": [entry]}).tables[0]


def endpoints(pg: PgPair) -> tuple[Endpoint, Endpoint]:
    """The least-privilege source and target, as the product connects to them."""
    return Endpoint(pg.source_url), Endpoint(pg.target_url)


def run_copy(
    pg: PgPair, entry: dict[str, Any] | TableSpec, *, options: CopyOptions | None = None
) -> CopyResult:
    """Run one copy of `entry` from pg's source to its target as the least-privilege roles."""
    table = entry if isinstance(entry, TableSpec) else table_spec(entry)
    return runner.replicate(table, *endpoints(pg), verify=False, options=options).result


def run_and_check(pg: PgPair, entry: dict[str, Any]) -> tuple[CopyResult, IntegrityReport]:
    """Run one copy, then the integrity comparison in the copy's source snapshot."""
    done = runner.replicate(table_spec(entry), *endpoints(pg))
    assert done.report is not None
    return done.result, done.report


def checksum_sql(relation: str, *, where: str | None = None, columns: str = "*") -> str:
    """A statement that fingerprints every row of `relation` in scope (text form, ordered)."""
    scope = f" WHERE {where}" if where else ""
    return (
        "SELECT count(*), md5(coalesce(string_agg(r::text, '|' ORDER BY r::text), '')) "
        f"FROM (SELECT {columns} FROM {relation}{scope}) AS r"
    )


def checksum(
    pg: PgPair, side: str, relation: str, *, where: str | None = None, columns: str = "*"
) -> tuple[Any, ...]:
    """(row count, md5 of all rows) of a relation on `side` ("source" or "target").

    Runs as the superuser with the product's session settings, so both sides render values
    the same way.
    """
    url = pg.source_admin_url if side == "source" else pg.target_admin_url
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(st.set_session())
        query = checksum_sql(relation, where=where, columns=columns)
        row = conn.execute(cast(LiteralString, query)).fetchone()
    assert row is not None
    return tuple(row)


def assert_same_rows(
    pg: PgPair,
    relation: str,
    *,
    target_relation: str | None = None,
    where: str | None = None,
    columns: str = "*",
) -> None:
    """The source and target hold exactly the same rows (in scope), value for value."""
    source = checksum(pg, "source", relation, where=where, columns=columns)
    target = checksum(pg, "target", target_relation or relation, where=where, columns=columns)
    assert source == target


def staging_leftovers(pg: PgPair) -> list[tuple[Any, ...]]:
    """Every relation in the target whose name starts with `_stagecopy_`."""
    return pg.target_rows(
        "SELECT n.nspname, c.relname FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname LIKE '\\_stagecopy\\_%'"
    )


def column_types(pg: PgPair, side: str, relation: str) -> list[tuple[Any, ...]]:
    """(name, format_type, not null) of a relation's live columns, in order."""
    rows = pg.source_rows if side == "source" else pg.target_rows
    return rows(
        "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (relation,),
    )


def primary_key_of(pg: PgPair, side: str, relation: str) -> list[str]:
    """The primary-key columns of a relation, in key order."""
    rows = pg.source_rows if side == "source" else pg.target_rows
    return [
        r[0]
        for r in rows(
            "SELECT a.attname FROM pg_index i "
            "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indrelid = %s::regclass AND i.indisprimary ORDER BY k.ord",
            (relation,),
        )
    ]


def xmins(pg: PgPair, relation: str, key: str = "id") -> dict[Any, str]:
    """key -> xmin of every target row (rewritten rows get a new xmin)."""
    return {
        k: x
        for k, x in pg.target_rows(cast(LiteralString, f"SELECT {key}, xmin::text FROM {relation}"))
    }
