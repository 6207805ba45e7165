"""Exact SQL text of the statement builders (no database: ``as_string(None)``)."""

from __future__ import annotations

import pytest
from psycopg import sql

from stagecopy_dagster import statements as st
from stagecopy_dagster.identifiers import QualifiedName
from stagecopy_dagster.sqlguard import parse_query, parse_where
from stagecopy_dagster.statements import Column

TARGET = QualifiedName("sales", "orders")
STAGING = QualifiedName("sales", "_stagecopy_1700000000_0123456789ab")
COLUMNS = [
    Column("id", "integer", not_null=True),
    Column("amount", "numeric(12,2)"),
    Column("note", "text"),
]
SCOPE = parse_where("region = 'KR' AND amount > 0")

T = '"sales"."orders"'
S = '"sales"."_stagecopy_1700000000_0123456789ab"'
MERGE_BODY = (
    f"MERGE INTO {T} AS t USING {S} AS s ON "
    '"t"."id" = "s"."id" '
    'WHEN MATCHED AND record_image_ne(ROW("t"."amount", "t"."note"), '
    'ROW("s"."amount", "s"."note")) '
    'THEN UPDATE SET "amount" = "s"."amount", "note" = "s"."note" '
    'WHEN NOT MATCHED THEN INSERT ("id", "amount", "note") '
    'VALUES ("s"."id", "s"."amount", "s"."note")'
)
RETURNING_TAIL = (
    " RETURNING merge_action() AS action) "
    "SELECT count(*) FILTER (WHERE action = 'INSERT'), "
    "count(*) FILTER (WHERE action = 'UPDATE'), "
    "count(*) FILTER (WHERE action = 'DELETE') FROM m"
)


def text(statement: sql.Composable) -> str:
    return statement.as_string(None)


# --- MERGE ------------------------------------------------------------------------------------


def test_merge_plain() -> None:
    assert text(st.merge(TARGET, STAGING, columns=COLUMNS, key=["id"])) == MERGE_BODY


def test_merge_returning_counts_each_action() -> None:
    statement = st.merge(TARGET, STAGING, columns=COLUMNS, key=["id"], returning=True)
    assert text(statement) == "WITH m AS (" + MERGE_BODY + RETURNING_TAIL


def test_merge_delete_missing_without_scope_deletes_every_unmatched_row() -> None:
    statement = st.merge(TARGET, STAGING, columns=COLUMNS, key=["id"], delete_missing=True)
    assert text(statement) == MERGE_BODY + " WHEN NOT MATCHED BY SOURCE THEN DELETE"


def test_merge_delete_missing_qualifies_the_scope_with_the_target_alias() -> None:
    statement = st.merge(
        TARGET,
        STAGING,
        columns=COLUMNS,
        key=["id"],
        delete_scope=SCOPE,
        delete_missing=True,
        returning=True,
    )
    assert text(statement) == (
        "WITH m AS ("
        + MERGE_BODY
        + " WHEN NOT MATCHED BY SOURCE AND t.region = 'KR' AND t.amount > 0 THEN DELETE"
        + RETURNING_TAIL
    )


def test_merge_scope_is_ignored_without_delete_missing() -> None:
    statement = st.merge(TARGET, STAGING, columns=COLUMNS, key=["id"], delete_scope=SCOPE)
    assert text(statement) == MERGE_BODY


def test_merge_with_composite_key_and_no_other_columns_only_inserts() -> None:
    statement = st.merge(
        TARGET, STAGING, columns=[Column("a", "integer"), Column("b", "integer")], key=["a", "b"]
    )
    assert text(statement) == (
        f"MERGE INTO {T} AS t USING {S} AS s ON "
        '"t"."a" = "s"."a" AND "t"."b" = "s"."b" '
        'WHEN NOT MATCHED THEN INSERT ("a", "b") VALUES ("s"."a", "s"."b")'
    )


def test_merge_never_updates_an_identity_always_column_and_inserts_overriding() -> None:
    columns = [
        Column("id", "integer", not_null=True, identity_always=True),
        Column("code", "text"),
        Column("v", "text"),
    ]
    statement = st.merge(TARGET, STAGING, columns=columns, key=["code"])
    assert text(statement) == (
        f"MERGE INTO {T} AS t USING {S} AS s ON "
        '"t"."code" = "s"."code" '
        'WHEN MATCHED AND record_image_ne(ROW("t"."v"), ROW("s"."v")) '
        'THEN UPDATE SET "v" = "s"."v" '
        'WHEN NOT MATCHED THEN INSERT ("id", "code", "v") OVERRIDING SYSTEM VALUE '
        'VALUES ("s"."id", "s"."code", "s"."v")'
    )


def test_merge_quotes_every_name() -> None:
    target = QualifiedName("Sales", 'Order "Items"; x')
    columns = [Column("종목코드", "text", not_null=True), Column("Amount", "integer")]
    statement = st.merge(target, STAGING, columns=columns, key=["종목코드"])
    assert text(statement) == (
        f'MERGE INTO "Sales"."Order ""Items""; x" AS t USING {S} AS s ON '
        '"t"."종목코드" = "s"."종목코드" '
        'WHEN MATCHED AND record_image_ne(ROW("t"."Amount"), ROW("s"."Amount")) '
        'THEN UPDATE SET "Amount" = "s"."Amount" '
        'WHEN NOT MATCHED THEN INSERT ("종목코드", "Amount") VALUES ("s"."종목코드", "s"."Amount")'
    )


# --- sync on PostgreSQL 15/16 -----------------------------------------------------------------


def test_delete_missing_with_scope() -> None:
    statement = st.delete_missing(TARGET, STAGING, key=["id"], where=SCOPE)
    assert text(statement) == (
        f"DELETE FROM {T} AS t WHERE (region = 'KR' AND amount > 0) AND "
        f'NOT EXISTS (SELECT FROM {S} AS s WHERE "s"."id" = "t"."id")'
    )


def test_delete_missing_without_scope_and_composite_key() -> None:
    statement = st.delete_missing(TARGET, STAGING, key=["a", "b"], where=None)
    assert text(statement) == (
        f"DELETE FROM {T} AS t WHERE NOT EXISTS (SELECT FROM {S} AS s "
        'WHERE "s"."a" = "t"."a" AND "s"."b" = "t"."b")'
    )


# --- staging, COPY ----------------------------------------------------------------------------


def test_create_staging_is_unlogged_index_free_and_typed_like_the_target() -> None:
    assert text(st.create_staging(STAGING, TARGET, ["id", "note"])) == (
        f"CREATE UNLOGGED TABLE {S} WITH (autovacuum_enabled = false) "
        f'AS SELECT "id", "note" FROM {T} WITH NO DATA'
    )


@pytest.mark.parametrize("fmt", ["binary", "text"])
def test_copy_in(fmt: st.CopyFormat) -> None:
    assert text(st.copy_in(STAGING.identifier, ["id", "종목코드"], fmt)) == (
        f'COPY {S} ("id", "종목코드") FROM STDIN (FORMAT {fmt})'
    )


@pytest.mark.parametrize("fmt", ["binary", "text"])
def test_copy_out_of_a_scoped_select(fmt: st.CopyFormat) -> None:
    select = st.select_rows(TARGET, ["id", "note"], st.scope_filter(SCOPE))
    assert text(st.copy_out(select, fmt)) == (
        f'COPY (SELECT "id", "note" FROM {T} WHERE (region = \'KR\' AND amount > 0)) '
        f"TO STDOUT (FORMAT {fmt})"
    )


def test_copy_out_of_a_query_wraps_it_as_a_subquery() -> None:
    query = parse_query("SELECT id, v FROM t -- comment")
    select = st.select_rows(query, ["id", "v"], st.scope_filter(None))
    assert text(st.copy_out(select, "text")) == (
        'COPY (SELECT "id", "v" FROM (SELECT id, v FROM t) AS q) TO STDOUT (FORMAT text)'
    )


def test_insert_from_staging() -> None:
    assert text(st.insert_from(TARGET, STAGING, COLUMNS)) == (
        f'INSERT INTO {T} ("id", "amount", "note") SELECT "id", "amount", "note" FROM {S}'
    )


def test_insert_from_with_identity_always_overrides() -> None:
    columns = [Column("id", "integer", identity_always=True), Column("v", "text")]
    assert text(st.insert_from(TARGET, STAGING, columns)) == (
        f'INSERT INTO {T} ("id", "v") OVERRIDING SYSTEM VALUE SELECT "id", "v" FROM {S}'
    )


# --- scope and watermark ----------------------------------------------------------------------


def test_scope_filter_empty() -> None:
    assert text(st.scope_filter(None)) == ""
    # A watermark of None (empty target) means a full copy.
    assert text(st.scope_filter(None, incremental_field="updated_at", watermark=None)) == ""


def test_scope_filter_where_only() -> None:
    assert text(st.scope_filter(SCOPE)) == " WHERE (region = 'KR' AND amount > 0)"


def test_scope_filter_with_inclusive_watermark() -> None:
    statement = st.scope_filter(
        SCOPE, incremental_field="updated_at", watermark="2024-01-01 00:00:00+00"
    )
    assert text(statement) == (
        " WHERE (region = 'KR' AND amount > 0) AND \"updated_at\" >= '2024-01-01 00:00:00+00'"
    )


def test_scope_filter_with_exclusive_watermark_and_extra() -> None:
    statement = st.scope_filter(
        None,
        incremental_field="버전",
        watermark=41,
        inclusive=False,
        extra=sql.SQL("ctid >= '(0,0)'::tid"),
    )
    assert text(statement) == " WHERE \"버전\" > 41 AND ctid >= '(0,0)'::tid"


def test_scope_filter_keeps_an_or_scope_together() -> None:
    # Parenthesised, so `a OR b` cannot leak out of the scope next to the watermark.
    statement = st.scope_filter(parse_where("a = 1 OR b = 2"), incremental_field="u", watermark=5)
    assert text(statement) == ' WHERE (a = 1 OR b = 2) AND "u" >= 5'


def test_max_watermark_with_lookback_and_scope() -> None:
    assert text(st.max_watermark(TARGET, "updated_at", SCOPE, "10 minutes")) == (
        "SELECT max(\"updated_at\") - '10 minutes'::interval FROM "
        f"{T} WHERE (region = 'KR' AND amount > 0)"
    )


def test_max_watermark_plain() -> None:
    assert text(st.max_watermark(TARGET, "updated_at", None, None)) == (
        f'SELECT max("updated_at") FROM {T}'
    )


def test_is_empty_and_delete_scope_use_the_scope() -> None:
    assert text(st.is_empty(TARGET, SCOPE)) == (
        f"SELECT NOT EXISTS (SELECT FROM {T} WHERE (region = 'KR' AND amount > 0))"
    )
    assert text(st.is_empty(TARGET, None)) == f"SELECT NOT EXISTS (SELECT FROM {T})"
    assert text(st.delete_scope(TARGET, SCOPE)) == (
        f"DELETE FROM {T} WHERE (region = 'KR' AND amount > 0)"
    )
    assert text(st.delete_scope(TARGET, None)) == f"DELETE FROM {T}"


# --- duplicates -------------------------------------------------------------------------------


def test_duplicate_keys_single_column() -> None:
    assert text(st.duplicate_keys(STAGING, ["id"])) == (
        f'SELECT "id", count(*) FROM {S} GROUP BY "id" '
        'HAVING count(*) > 1 OR bool_or("id" IS NULL) ORDER BY count(*) DESC LIMIT 5'
    )


def test_duplicate_keys_composite_with_limit() -> None:
    assert text(st.duplicate_keys(STAGING, ["a", "b"], limit=3)) == (
        f'SELECT "a", "b", count(*) FROM {S} GROUP BY "a", "b" '
        'HAVING count(*) > 1 OR bool_or("a" IS NULL OR "b" IS NULL) '
        "ORDER BY count(*) DESC LIMIT 3"
    )


# --- target DDL and housekeeping --------------------------------------------------------------


def test_create_table_with_types_not_nulls_and_key() -> None:
    assert text(st.create_table(TARGET, COLUMNS, ["id"])) == (
        f'CREATE TABLE {T} ("id" integer NOT NULL, "amount" numeric(12,2), "note" text, '
        'PRIMARY KEY ("id"))'
    )
    assert text(st.create_table(TARGET, COLUMNS[1:], None)) == (
        f'CREATE TABLE {T} ("amount" numeric(12,2), "note" text)'
    )


def test_add_column_is_nullable() -> None:
    column = Column("added", "character varying(20)", not_null=True)
    assert text(st.add_column(TARGET, column)) == (
        f'ALTER TABLE {T} ADD COLUMN "added" character varying(20)'
    )


def test_small_statements() -> None:
    assert text(st.create_schema("raw_data")) == 'CREATE SCHEMA IF NOT EXISTS "raw_data"'
    assert text(st.create_index(TARGET, "orders_u_idx", "u")) == (
        f'CREATE INDEX "orders_u_idx" ON {T} ("u")'
    )
    assert text(st.drop_table(STAGING)) == f"DROP TABLE IF EXISTS {S}"
    assert text(st.truncate(TARGET)) == f"TRUNCATE {T}"
    assert text(st.count_rows(TARGET)) == f"SELECT count(*) FROM {T}"
    assert text(st.lock_table(TARGET)) == f"LOCK TABLE {T} IN SHARE ROW EXCLUSIVE MODE"
    assert text(st.set_local("lock_timeout", "30s")) == "SET LOCAL \"lock_timeout\" = '30s'"
    assert text(st.set_snapshot("00000003-1")) == "SET TRANSACTION SNAPSHOT '00000003-1'"
    assert text(st.describe_query(parse_query("SELECT 1 AS a"))) == (
        "SELECT * FROM (SELECT 1 AS a) AS q LIMIT 0"
    )


def test_advisory_lock_key_names_the_target() -> None:
    assert text(st.advisory_lock(TARGET)) == (
        "SELECT pg_catalog.pg_advisory_xact_lock(hashtextextended('stagecopy:sales.orders', 0))"
    )
    # Quotes in names stay inside the literal.
    assert text(st.advisory_lock(QualifiedName("a'b", "c"))) == (
        "SELECT pg_catalog.pg_advisory_xact_lock(hashtextextended('stagecopy:a''b.c', 0))"
    )


def test_ctid_ranges() -> None:
    assert text(st.ctid_range(0, 10)) == "ctid >= '(0,0)'::tid AND ctid < '(10,0)'::tid"
    assert text(st.ctid_range(5, None)) == "ctid >= '(5,0)'::tid"


def test_set_session_sets_every_shared_setting() -> None:
    assert text(st.set_session()) == (
        "SET \"DateStyle\" = 'ISO, YMD'; SET \"IntervalStyle\" = 'postgres'; "
        "SET \"TimeZone\" = 'UTC'; SET \"extra_float_digits\" = '3'; "
        "SET \"bytea_output\" = 'hex'; SET \"client_encoding\" = 'UTF8'"
    )
    assert text(st.set_session({"work_mem": "64MB"})) == "SET \"work_mem\" = '64MB'"


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
    stmt = st.bucket_digests(QualifiedName("s", "t"), ["id", "m"], ["id"], None, hashable={"id"})
    assert stmt.as_string(None) == (
        'SELECT b, count(*), sum(h) FROM (SELECT (hash_record_extended(ROW("id"), 0) & 1023)::int'
        ' AS b, hash_record_extended(ROW("id"), 1) # hashtextextended(ROW("m")::text, 1) AS h '
        'FROM "s"."t" OFFSET 0) AS d GROUP BY 1'
    )


# --- the diff path ----------------------------------------------------------------------------


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


def test_count_new_keys_probes_the_target_by_key() -> None:
    statement = st.count_new_keys(STAGING, TARGET, key=["a", "b"])
    assert text(statement) == (
        f"SELECT count(*) FROM {S} AS s WHERE NOT EXISTS (SELECT FROM {T} AS t "
        'WHERE "t"."a" = "s"."a" AND "t"."b" = "s"."b")'
    )
