"""Masked reads: the source seen through a SELECT list that masks columns, on the source itself.

A :class:`Projection` stands wherever a source relation does (:func:`~.scope.source_relation`
renders it as a sub-select), so the copy's stream, the diff's row hashes and the integrity
check all read the masked values, and plaintext never leaves the source server.

`hash` is HMAC-SHA256 (RFC 2104) built from the `sha256()` every PostgreSQL 11+ has, so the
source needs no pgcrypto:

    HMAC(K, m) = sha256((K' xor opad) || sha256((K' xor ipad) || m))

The two padded keys are computed by the client (:mod:`stagecopy_dagster.masking`) and reach the
source session as transaction-local settings set with bind parameters; the statement text
only names the settings, so no logged or recorded statement holds the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from psycopg import sql

from stagecopy_dagster.statements.compose import type_sql

if TYPE_CHECKING:
    from stagecopy_dagster.identifiers import QualifiedName
    from stagecopy_dagster.sqlguard import CheckedSql

#: The transaction-local settings that hold the padded HMAC keys, hex-encoded.
INNER_KEY_SETTING = "stagecopy.mask_inner"
OUTER_KEY_SETTING = "stagecopy.mask_outer"

#: Sets both padded keys for the rest of the transaction; the keys are bind parameters.
SET_MASK_KEYS = sql.SQL(
    "SELECT pg_catalog.set_config(%s, %s, true), pg_catalog.set_config(%s, %s, true)"
)

MaskName = Literal["hash", "null"]


@dataclass(frozen=True)
class Projected:
    """One column of a masked read."""

    name: str
    mask: MaskName | None = None
    type: str = "text"
    """The source column's `format_type()` (a `null` mask keeps it: `NULL::type`)."""


@dataclass(frozen=True)
class Projection:
    """A source table or query read through a SELECT list that masks some columns."""

    base: QualifiedName | CheckedSql
    columns: tuple[Projected, ...]

    def __str__(self) -> str:
        return f"{self.base} (masked)"


def _padded_key(setting: str) -> sql.Composed:
    # A scalar sub-select: evaluated once per statement, not once per row. A setting that is
    # unset (or emptied when an earlier transaction ended) is not 128 hex digits: decoding the
    # text in its place fails the read, instead of hashing with an empty, guessable key.
    return sql.SQL(
        "(SELECT pg_catalog.decode(CASE WHEN pg_catalog.length(k) = 128 THEN k "
        "ELSE 'stagecopy mask key not set' END, 'hex') "
        "FROM pg_catalog.current_setting({}, true) AS k)"
    ).format(sql.Literal(setting))


def hmac_sha256(value: sql.Composable) -> sql.Composed:
    """Lowercase hex HMAC-SHA256 of `value`'s text (UTF-8), keyed by the session's mask keys.

    Example:
        >>> hmac_sha256(sql.Identifier("v")).as_string()[:36]
        'pg_catalog.encode(pg_catalog.sha256('

    """
    message = sql.SQL("pg_catalog.convert_to(({})::text, 'UTF8')").format(value)
    inner = sql.SQL("pg_catalog.sha256({} || {})").format(_padded_key(INNER_KEY_SETTING), message)
    return sql.SQL("pg_catalog.encode(pg_catalog.sha256({} || {}), 'hex')").format(
        _padded_key(OUTER_KEY_SETTING), inner
    )


def projected_column(column: Projected) -> sql.Composed:
    """One item of the masked SELECT list: the column, its hash, or a typed NULL."""
    name = sql.Identifier(column.name)
    if column.mask == "hash":
        return sql.SQL("{} AS {}").format(hmac_sha256(name), name)
    if column.mask == "null":
        return sql.SQL("NULL::{} AS {}").format(type_sql(column.type), name)
    return sql.SQL("{}").format(name)


def projection_relation(projection: Projection, base: sql.Composable) -> sql.Composed:
    """`(SELECT <masked list> FROM base) AS q`: `base` is the base relation's FROM item."""
    return sql.SQL("(SELECT {} FROM {}) AS q").format(
        sql.SQL(", ").join(projected_column(c) for c in projection.columns), base
    )
