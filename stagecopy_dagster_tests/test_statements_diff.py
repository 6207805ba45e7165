"""Exact SQL text of the diff path's hashes and keys, without a database.

:mod:`stagecopy_dagster.statements.diff`; ``as_string(None)``.
"""

from __future__ import annotations

import pytest

from stagecopy_dagster import statements as st
from stagecopy_dagster.identifiers import QualifiedName
from stagecopy_dagster.sqlguard import parse_where
from stagecopy_dagster.statements import Column
from stagecopy_dagster_tests.statementhelpers import COLUMNS, SCOPE, TARGET, T, text


@pytest.mark.parametrize(
    ("column", "hashed"),
    [
        (Column("i", "integer"), '"i"'),
        (Column("t", "text"), '"t" COLLATE "C"'),
        (Column("v", "character varying(20)"), '"v" COLLATE "C"'),
        (Column("ts", "timestamp(3) with time zone"), '"ts"'),
        (Column("n", "numeric(12,2)"), '"n", scale("n")'),  # 1.0 = 1.00, other bytes
        (Column("f", "double precision"), 'float8send("f")'),  # -0 = 0, other bytes
        (Column("r", "real"), 'float4send("r")'),
        (Column("j", "jsonb"), '"j"::text COLLATE "C"'),  # {"a": 1.0} = {"a": 1.00}
        (Column("iv", "interval"), '"iv"::text COLLATE "C"'),  # '1 day' = '24 hours'
        (Column("na", "numeric[]"), '"na"::text COLLATE "C"'),
        (Column("m", '"Mood"'), '"m"::text COLLATE "C"'),  # enum hashes are label OIDs
        (Column("c", '"char"'), '"c"'),
    ],
)
def test_row_image_hash_tells_apart_what_equality_merges(column: Column, hashed: str) -> None:
    assert text(st.row_image_hash([column], alias=None)) == (
        f"hash_record_extended(ROW({hashed}), 0)"
    )


def test_select_key_hashes_reads_key_and_hash_in_scope() -> None:
    statement = st.select_key_hashes(TARGET, ["id"], COLUMNS, SCOPE)
    assert text(statement) == (
        'SELECT "id", hash_record_extended(ROW("id", "amount", scale("amount"), '
        f'"note" COLLATE "C"), 0) FROM {T} WHERE (region = \'KR\' AND amount > 0)'
    )


def test_changed_keys_for_merge_left_join_the_target() -> None:
    keys = QualifiedName("sales", "_stagecopy_k")
    changed = QualifiedName("sales", "_stagecopy_c")
    statement = st.create_changed_keys(
        changed, keys, TARGET, key=["id"], columns=COLUMNS[:2], hash_column="h", gone_column="g"
    )
    assert text(statement) == (
        'CREATE UNLOGGED TABLE "sales"."_stagecopy_c" WITH (autovacuum_enabled = false) AS '
        'SELECT "k"."id", false AS "g" FROM "sales"."_stagecopy_k" AS k LEFT JOIN '
        f'{T} AS t ON "t"."id" = "k"."id" WHERE "t"."id" IS NULL OR "k"."h" <> '
        'hash_record_extended(ROW("t"."id", "t"."amount", scale("t"."amount")), 0)'
    )


def test_changed_keys_for_sync_full_join_and_flag_gone_keys_in_scope() -> None:
    keys = QualifiedName("sales", "_stagecopy_k")
    changed = QualifiedName("sales", "_stagecopy_c")
    statement = st.create_changed_keys(
        changed,
        keys,
        TARGET,
        key=["a", "b"],
        columns=[Column("a", "integer"), Column("b", "integer")],
        hash_column="h",
        gone_column="g",
        sync_scope=parse_where("a > 0"),
        sync=True,
    )
    assert text(statement) == (
        'CREATE UNLOGGED TABLE "sales"."_stagecopy_c" WITH (autovacuum_enabled = false) AS '
        'SELECT coalesce("k"."a", "t"."a") AS "a", coalesce("k"."b", "t"."b") AS "b", '
        '"k"."a" IS NULL AS "g" FROM "sales"."_stagecopy_k" AS k FULL JOIN '
        f'{T} AS t ON "t"."a" = "k"."a" AND "t"."b" = "k"."b" '
        'WHERE ("k"."a" IS NULL AND (t.a > 0)) OR ("t"."a" IS NULL OR "k"."h" <> '
        'hash_record_extended(ROW("t"."a", "t"."b"), 0))'
    )


def test_key_in_single_and_composite_keys_cast_their_literals() -> None:
    one = st.key_in([Column("id", "bigint")], ["{1,2,3}"])
    assert text(one) == "\"id\" = ANY(CAST('{1,2,3}' AS bigint[]))"
    two = st.key_in(
        [Column("code", "text"), Column("day", "date")], ['{"a,b","it\'s"}', "{2024-01-01}"]
    )
    assert text(two) == (
        '("code", "day") IN (SELECT * FROM unnest('
        "CAST('{\"a,b\",\"it''s\"}' AS text[]), CAST('{2024-01-01}' AS date[])))"
    )


def test_changed_key_arrays_page_through_the_keys_to_copy_in_key_order() -> None:
    changed = QualifiedName("sales", "_stagecopy_c")
    statement = st.changed_key_arrays(changed, ["a", "b"], "g", 200, 100)
    assert text(statement) == (
        'SELECT array_agg("a")::text, array_agg("b")::text FROM (SELECT "a", "b" FROM '
        '"sales"."_stagecopy_c" WHERE NOT "g" ORDER BY "a", "b" OFFSET 200 LIMIT 100) AS c'
    )


def test_gone_keys_anti_join_keeps_the_scope_outside_the_sub_select() -> None:
    keys = QualifiedName("sales", "_stagecopy_k")
    gone = QualifiedName("sales", "_stagecopy_g")
    statement = st.create_gone_keys(gone, keys, TARGET, key=["id"], where=SCOPE)
    assert text(statement) == (
        'CREATE UNLOGGED TABLE "sales"."_stagecopy_g" WITH (autovacuum_enabled = false) AS '
        f'SELECT "t"."id" FROM {T} AS t WHERE (region = \'KR\' AND amount > 0) AND '
        'NOT EXISTS (SELECT FROM "sales"."_stagecopy_k" AS k WHERE "k"."id" = "t"."id")'
    )


def test_delete_gone_from_a_flagged_or_a_plain_key_table() -> None:
    changed = QualifiedName("sales", "_stagecopy_c")
    flagged = st.delete_gone(TARGET, changed, key=["id"], gone_column="g")
    assert text(flagged) == (
        f'DELETE FROM {T} AS t USING "sales"."_stagecopy_c" AS c '
        'WHERE "c"."g" AND "t"."id" = "c"."id"'
    )
    plain = st.delete_gone(TARGET, changed, key=["a", "b"])
    assert text(plain) == (
        f'DELETE FROM {T} AS t USING "sales"."_stagecopy_c" AS c '
        'WHERE "t"."a" = "c"."a" AND "t"."b" = "c"."b"'
    )
