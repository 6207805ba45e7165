"""The integrity check's digests: rows spread over key buckets, each bucket a count and a hash sum.

Both servers compute the same digests over the scope; only buckets whose digests differ are
then read row by row (:func:`row_digests`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

from psycopg import sql

from stagecopy_dagster.identifiers import QualifiedName
from stagecopy_dagster.sqlguard import CheckedSql
from stagecopy_dagster.statements.compose import all_of, column_list
from stagecopy_dagster.statements.projection import Projection
from stagecopy_dagster.statements.scope import scope_filter, source_relation

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
    relation: QualifiedName | CheckedSql | Projection,
    columns: Sequence[str],
    *,
    key: Sequence[str],
    where: CheckedSql | None,
    hashable: Collection[str] = (),
    window: sql.Composable | None = None,
) -> sql.Composed:
    """Per bucket of keys: row count and the sum of row hashes, for the rows in scope.

    Both sides compute this over the same columns with the same session settings, so equal
    rows give equal hashes; a bucket whose (count, sum) differ holds a difference. Columns in
    `hashable` (see :func:`has_portable_hash`) are hashed in binary, the rest as text. With
    `window` (an incremental copy's `field >= start`), only the rows in it.
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
        where=scope_filter(where, extra=window),
    )


def count_scope(
    relation: QualifiedName | CheckedSql | Projection, where: CheckedSql | None
) -> sql.Composed:
    """`SELECT count(*)` of the rows in scope (with the window check's digests of its window).

    Counting apart from hashing the window lets each use its own plan: an index on the
    watermark column for the window, a scan that reads no column for the count.
    """
    return sql.SQL("SELECT count(*) FROM {rel}{where}").format(
        rel=source_relation(relation), where=scope_filter(where)
    )


def row_digests(
    relation: QualifiedName | CheckedSql | Projection,
    columns: Sequence[str],
    *,
    key: Sequence[str],
    where: CheckedSql | None,
    buckets: Sequence[int],
    hashable: Collection[str] = (),
    window: sql.Composable | None = None,
) -> sql.Composed:
    """Key text and row hash of the rows in scope (and `window`) whose bucket is in `buckets`.

    The buckets are a literal, not a bind parameter: the statement holds the user's `where`,
    whose `%` (as in `LIKE 'a%'`) must not be read as a placeholder.
    """
    in_buckets = sql.SQL("{} = ANY({}::int[])").format(
        _bucket_of(key, hashable), sql.Literal("{" + ",".join(str(int(b)) for b in buckets) + "}")
    )
    extra = in_buckets if window is None else all_of([window, in_buckets])
    return sql.SQL("SELECT {key}, {row} FROM {rel}{where}").format(
        key=_row_text(key),
        row=_row_hash(columns, hashable, 1),
        rel=source_relation(relation),
        where=scope_filter(where, extra=extra),
    )
