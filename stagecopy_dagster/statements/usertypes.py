"""User-defined types: the catalog queries that describe them and the DDL that recreates them.

Enums, domains (base type, collation, default, NOT NULL, CHECKs), composites and ranges are
recreated in the target with the definition the source catalog gives
(:class:`~stagecopy_dagster.engine.types.UserType`); a label the source added to an enum is added
with `ALTER TYPE ... ADD VALUE ... BEFORE/AFTER`, so the labels keep their order.

The type, expression, collation and function texts are the catalog's own renderings
(`format_type`, `pg_get_constraintdef`, `quote_ident`), passed through like
:func:`~stagecopy_dagster.statements.compose.type_sql`: catalog text, never user text.
"""

from __future__ import annotations

from typing import LiteralString, cast

from psycopg import sql

from stagecopy_dagster.engine.types import UserType
from stagecopy_dagster.identifiers import QualifiedName
from stagecopy_dagster.statements.compose import type_sql


def _collation_name(oid_expr: LiteralString) -> LiteralString:
    """A sub-select rendering the collation `oid_expr` as a quoted, schema-qualified name."""
    return (
        "(SELECT pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname) "
        "FROM pg_catalog.pg_collation co JOIN pg_catalog.pg_namespace cn "
        f"ON cn.oid = co.collnamespace WHERE co.oid = {oid_expr})"
    )


#: The user types (OID 16384 and up: built in below) among `format_type` texts, in order.
USER_TYPE_OIDS = sql.SQL(
    "SELECT o FROM (SELECT pg_catalog.to_regtype(n)::oid AS o, min(i) AS i "
    "FROM unnest(%s::text[]) WITH ORDINALITY AS u(n, i) GROUP BY 1) AS t "
    "WHERE o >= 16384 ORDER BY i"
)

#: A type's OID from its schema and name (None: no such type).
TYPE_BY_NAME = sql.SQL(
    "SELECT t.oid FROM pg_catalog.pg_type t "
    "JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace "
    "WHERE n.nspname = %s AND t.typname = %s"
)

#: What kind of type an OID is and what it is made of (one row; `%s` is the OID).
TYPE_FACTS = sql.SQL(
    "SELECT n.nspname, t.typname, t.typtype, t.typelem <> 0 AND t.typlen = -1, t.typelem, "
    "t.typbasetype, pg_catalog.format_type(t.typbasetype, t.typtypmod), t.typnotnull, "
    "t.typdefault, t.typrelid, c.relkind, "
    "n.nspname IN ('pg_catalog', 'information_schema') OR EXISTS (SELECT FROM "
    "pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_type'::regclass "
    "AND d.objid = t.oid AND d.deptype = 'e'), "
    "CASE WHEN t.typtype = 'd' AND t.typcollation <> b.typcollation THEN "
    + _collation_name("t.typcollation")
    + " END "
    "FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace "
    "LEFT JOIN pg_catalog.pg_class c ON c.oid = t.typrelid "
    "LEFT JOIN pg_catalog.pg_type b ON b.oid = t.typbasetype "
    "WHERE t.oid = %s"
)

#: An enum's labels in sort order.
ENUM_LABELS = sql.SQL(
    "SELECT enumlabel FROM pg_catalog.pg_enum WHERE enumtypid = %s ORDER BY enumsortorder"
)

#: A domain's CHECK constraints (name, definition) in name order.
DOMAIN_CHECKS = sql.SQL(
    "SELECT conname, pg_catalog.pg_get_constraintdef(oid) FROM pg_catalog.pg_constraint "
    "WHERE contypid = %s AND contype = 'c' ORDER BY conname"
)

#: A composite's attributes (name, type OID, type, non-default collation) by its `typrelid`.
COMPOSITE_ATTRIBUTES = sql.SQL(
    "SELECT a.attname, a.atttypid, pg_catalog.format_type(a.atttypid, a.atttypmod), "
    "CASE WHEN a.attcollation <> t.typcollation THEN " + _collation_name("a.attcollation") + " END "
    "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
    "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
)

_RANGE_FACTS: LiteralString = (
    "SELECT r.rngsubtype, pg_catalog.format_type(r.rngsubtype, NULL), "
    "CASE WHEN r.rngcollation <> 0 AND r.rngcollation <> s.typcollation THEN "
    + _collation_name("r.rngcollation")
    + " END, "
    "CASE WHEN NOT o.opcdefault THEN pg_catalog.quote_ident(opn.nspname) || '.' || "
    "pg_catalog.quote_ident(o.opcname) END, "
    "CASE WHEN r.rngsubdiff <> 0 THEN pg_catalog.quote_ident(pn.nspname) || '.' || "
    "pg_catalog.quote_ident(p.proname) END, "
    "r.rngcanonical <> 0, {multirange} "
    "FROM pg_catalog.pg_range r JOIN pg_catalog.pg_type s ON s.oid = r.rngsubtype "
    "JOIN pg_catalog.pg_opclass o ON o.oid = r.rngsubopc "
    "JOIN pg_catalog.pg_namespace opn ON opn.oid = o.opcnamespace "
    "LEFT JOIN pg_catalog.pg_proc p ON p.oid = r.rngsubdiff "
    "LEFT JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace{join} "
    "WHERE r.rngtypid = %s"
)

#: A range's subtype (OID, type), collation, opclass, subtype_diff, has-canonical, multirange.
RANGE_FACTS = sql.SQL(
    _RANGE_FACTS.format(
        multirange="m.typname",
        join=" LEFT JOIN pg_catalog.pg_type m ON m.oid = r.rngmultitypid",
    )
)
#: The same before PostgreSQL 14 (no multiranges).
RANGE_FACTS_13 = sql.SQL(_RANGE_FACTS.format(multirange="NULL::name", join=""))

#: The range type of a multirange.
RANGE_OF_MULTIRANGE = sql.SQL("SELECT rngtypid FROM pg_catalog.pg_range WHERE rngmultitypid = %s")


def _catalog_text(text: str) -> sql.SQL:
    return sql.SQL(cast(LiteralString, text))


def create_type(user_type: UserType) -> sql.Composed:
    r"""The `CREATE TYPE` or `CREATE DOMAIN` that defines `user_type` as described.

    Example:
        >>> mood = UserType(QualifiedName("s", "mood"), "enum", labels=("sad", "ok"))
        >>> create_type(mood).as_string()
        'CREATE TYPE "s"."mood" AS ENUM (\'sad\', \'ok\')'
    """
    if user_type.kind == "enum":
        return create_enum(user_type)
    if user_type.kind == "domain":
        return create_domain(user_type)
    if user_type.kind == "composite":
        return create_composite(user_type)
    return create_range(user_type)


def create_enum(user_type: UserType) -> sql.Composed:
    """`CREATE TYPE name AS ENUM ('a', 'b')` with the labels in order."""
    return sql.SQL("CREATE TYPE {} AS ENUM ({})").format(
        user_type.name.identifier, sql.SQL(", ").join(sql.Literal(x) for x in user_type.labels)
    )


def create_domain(user_type: UserType) -> sql.Composed:
    """`CREATE DOMAIN name AS base [COLLATE c] [DEFAULT e] [NOT NULL] [CONSTRAINT n CHECK ...]`."""
    parts: list[sql.Composable] = [
        sql.SQL("CREATE DOMAIN {} AS {}").format(
            user_type.name.identifier, type_sql(user_type.base)
        )
    ]
    if user_type.collation is not None:
        parts.append(sql.SQL("COLLATE {}").format(_catalog_text(user_type.collation)))
    if user_type.default is not None:
        parts.append(sql.SQL("DEFAULT {}").format(_catalog_text(user_type.default)))
    if user_type.not_null:
        parts.append(sql.SQL("NOT NULL"))
    for name, definition in user_type.checks:
        parts.append(
            sql.SQL("CONSTRAINT {} {}").format(sql.Identifier(name), _catalog_text(definition))
        )
    return sql.SQL(" ").join(parts)


def create_composite(user_type: UserType) -> sql.Composed:
    """`CREATE TYPE name AS (a type [COLLATE c], ...)`."""
    attributes = [
        sql.SQL("{} {}{}").format(
            sql.Identifier(a.name),
            type_sql(a.type),
            sql.SQL("")
            if a.collation is None
            else sql.SQL(" COLLATE {}").format(_catalog_text(a.collation)),
        )
        for a in user_type.attributes
    ]
    return sql.SQL("CREATE TYPE {} AS ({})").format(
        user_type.name.identifier, sql.SQL(", ").join(attributes)
    )


def create_range(user_type: UserType) -> sql.Composed:
    """`CREATE TYPE name AS RANGE (SUBTYPE = t, ...)` with the options the source sets."""
    options: list[sql.Composable] = [sql.SQL("SUBTYPE = {}").format(type_sql(user_type.base))]
    if user_type.opclass is not None:
        options.append(sql.SQL("SUBTYPE_OPCLASS = {}").format(_catalog_text(user_type.opclass)))
    if user_type.collation is not None:
        options.append(sql.SQL("COLLATION = {}").format(_catalog_text(user_type.collation)))
    if user_type.subtype_diff is not None:
        options.append(sql.SQL("SUBTYPE_DIFF = {}").format(_catalog_text(user_type.subtype_diff)))
    if user_type.multirange is not None:
        options.append(
            sql.SQL("MULTIRANGE_TYPE_NAME = {}").format(
                sql.Identifier(user_type.name.schema, user_type.multirange)
            )
        )
    return sql.SQL("CREATE TYPE {} AS RANGE ({})").format(
        user_type.name.identifier, sql.SQL(", ").join(options)
    )


def add_enum_label(
    name: QualifiedName, label: str, *, before: str | None = None, after: str | None = None
) -> sql.Composed:
    r"""`ALTER TYPE name ADD VALUE IF NOT EXISTS 'label' [BEFORE 'x' | AFTER 'y']`.

    Example:
        >>> add_enum_label(QualifiedName("s", "mood"), "meh", after="sad").as_string()
        'ALTER TYPE "s"."mood" ADD VALUE IF NOT EXISTS \'meh\' AFTER \'sad\''
    """
    statement = sql.SQL("ALTER TYPE {} ADD VALUE IF NOT EXISTS {}").format(
        name.identifier, sql.Literal(label)
    )
    if before is not None:
        return sql.SQL("{} BEFORE {}").format(statement, sql.Literal(before))
    if after is not None:
        return sql.SQL("{} AFTER {}").format(statement, sql.Literal(after))
    return statement
