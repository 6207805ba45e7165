"""Exact SQL text of MERGE, INSERT, scoped deletes, duplicate keys, without a database.

:mod:`stagecopy_dagster.statements.apply`; ``as_string(None)``.
"""

from __future__ import annotations

from stagecopy_dagster import statements as st
from stagecopy_dagster.identifiers import QualifiedName
from stagecopy_dagster.statements import Column
from stagecopy_dagster_tests.statementhelpers import COLUMNS, SCOPE, STAGING, TARGET, S, T, text

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


def test_count_new_keys_probes_the_target_by_key() -> None:
    statement = st.count_new_keys(STAGING, TARGET, key=["a", "b"])
    assert text(statement) == (
        f"SELECT count(*) FROM {S} AS s WHERE NOT EXISTS (SELECT FROM {T} AS t "
        'WHERE "t"."a" = "s"."a" AND "t"."b" = "s"."b")'
    )


# --- sync on PostgreSQL 15/16 ---------------------------------------------------------------------


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


# --- insert and replace ---------------------------------------------------------------------------


def test_insert_from_staging() -> None:
    assert text(st.insert_from(TARGET, STAGING, COLUMNS)) == (
        f'INSERT INTO {T} ("id", "amount", "note") SELECT "id", "amount", "note" FROM {S}'
    )


def test_insert_from_with_identity_always_overrides() -> None:
    columns = [Column("id", "integer", identity_always=True), Column("v", "text")]
    assert text(st.insert_from(TARGET, STAGING, columns)) == (
        f'INSERT INTO {T} ("id", "v") OVERRIDING SYSTEM VALUE SELECT "id", "v" FROM {S}'
    )


def test_delete_scope_uses_the_scope() -> None:
    assert text(st.delete_scope(TARGET, SCOPE)) == (
        f"DELETE FROM {T} WHERE (region = 'KR' AND amount > 0)"
    )
    assert text(st.delete_scope(TARGET, None)) == f"DELETE FROM {T}"


# --- duplicates -----------------------------------------------------------------------------------


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
