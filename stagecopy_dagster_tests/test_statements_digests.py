"""Exact SQL text of the integrity check's digests, without a database.

:mod:`stagecopy_dagster.statements.digests`; ``as_string(None)``.
"""

from __future__ import annotations

import pytest

from stagecopy_dagster import statements as st
from stagecopy_dagster.identifiers import QualifiedName


@pytest.mark.parametrize(
    ("type_name", "portable"),
    [
        ("integer", True),
        ("numeric(12,2)", True),
        ("character varying(20)", True),
        ("timestamp(3) with time zone", True),
        ("jsonb", True),
        ("json", False),  # no hash function
        ('"Mood"', False),  # an enum hashes its label's OID, which differs between databases
        ("integer[]", False),
        ("point", False),
    ],
)
def test_portable_hash_types(type_name: str, portable: bool) -> None:
    assert st.has_portable_hash(type_name) is portable


def test_bucket_digests_hash_portable_columns_in_binary_and_the_rest_as_text() -> None:
    stmt = st.bucket_digests(
        QualifiedName("s", "t"), ["id", "m"], key=["id"], where=None, hashable={"id"}
    )
    assert stmt.as_string(None) == (
        'SELECT b, count(*), sum(h) FROM (SELECT (hash_record_extended(ROW("id"), 0) & 1023)::int'
        ' AS b, hash_record_extended(ROW("id"), 1) # hashtextextended(ROW("m")::text, 1) AS h '
        'FROM "s"."t" OFFSET 0) AS d GROUP BY 1'
    )


def test_an_incremental_window_limits_the_digests_and_the_scope_is_counted_apart() -> None:
    window = st.window_condition("at", 7)
    stmt = st.bucket_digests(
        QualifiedName("s", "t"), ["id"], key=["id"], where=None, hashable={"id"}, window=window
    )
    assert stmt.as_string(None) == (
        'SELECT b, count(*), sum(h) FROM (SELECT (hash_record_extended(ROW("id"), 0) & 1023)::int'
        ' AS b, hash_record_extended(ROW("id"), 1) AS h '
        'FROM "s"."t" WHERE "at" >= 7 OFFSET 0) AS d GROUP BY 1'
    )
    rows = st.row_digests(
        QualifiedName("s", "t"), ["id"], key=["id"], where=None, buckets=[3], window=window
    )
    assert rows.as_string(None).endswith(
        'WHERE "at" >= 7 AND (hashtextextended(ROW("id")::text, 0) & 1023)::int'
        " = ANY('{3}'::int[])"
    )
    assert st.count_scope(QualifiedName("s", "t"), None).as_string(None) == (
        'SELECT count(*) FROM "s"."t"'
    )
    assert st.window_condition("at", 7, inclusive=False).as_string(None) == '"at" > 7'
