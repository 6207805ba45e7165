"""Exact SQL text of schema changes on the target, without a database.

:mod:`stagecopy_dagster.statements.ddl`; ``as_string(None)``.
"""

from __future__ import annotations

from stagecopy_dagster import statements as st
from stagecopy_dagster.statements import Column
from stagecopy_dagster_tests.statementhelpers import COLUMNS, STAGING, TARGET, S, T, text


def test_create_staging_is_unlogged_index_free_and_typed_like_the_target() -> None:
    assert text(st.create_staging(STAGING, TARGET, ["id", "note"])) == (
        f"CREATE UNLOGGED TABLE {S} WITH (autovacuum_enabled = false) "
        f'AS SELECT "id", "note" FROM {T} WITH NO DATA'
    )


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


def test_small_ddl_statements() -> None:
    assert text(st.create_schema("raw_data")) == 'CREATE SCHEMA IF NOT EXISTS "raw_data"'
    assert text(st.create_index(TARGET, "orders_u_idx", "u")) == (
        f'CREATE INDEX "orders_u_idx" ON {T} ("u")'
    )
    assert text(st.drop_table(STAGING)) == f"DROP TABLE IF EXISTS {S}"
    assert text(st.truncate(TARGET)) == f"TRUNCATE {T}"
