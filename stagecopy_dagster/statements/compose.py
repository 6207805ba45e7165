"""The small pieces every builder composes from: identifiers, column lists, types, conditions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import LiteralString, cast

from psycopg import sql


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


def all_of(parts: Sequence[sql.Composable]) -> sql.Composable:
    """`a AND b AND ...`, or `TRUE` when there are no parts."""
    return sql.SQL(" AND ").join(parts) if parts else sql.SQL("TRUE")


def join_on(key: Sequence[str], left: str, right: str) -> sql.Composable:
    """`left."k" = right."k" AND ...` over the key columns."""
    return all_of(
        [sql.SQL("{} = {}").format(sql.Identifier(left, k), sql.Identifier(right, k)) for k in key]
    )
