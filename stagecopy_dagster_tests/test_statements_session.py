"""Exact SQL text of session settings, snapshots and locks, without a database.

:mod:`stagecopy_dagster.statements.session`; ``as_string(None)``.
"""

from __future__ import annotations

from stagecopy_dagster import statements as st
from stagecopy_dagster.identifiers import QualifiedName
from stagecopy_dagster_tests.statementhelpers import TARGET, T, text


def test_set_session_sets_every_shared_setting() -> None:
    assert text(st.set_session()) == (
        "SET \"DateStyle\" = 'ISO, YMD'; SET \"IntervalStyle\" = 'postgres'; "
        "SET \"TimeZone\" = 'UTC'; SET \"extra_float_digits\" = '3'; "
        "SET \"bytea_output\" = 'hex'; SET \"client_encoding\" = 'UTF8'; "
        "SET \"lc_monetary\" = 'C'"
    )
    assert text(st.set_session({"work_mem": "64MB"})) == "SET \"work_mem\" = '64MB'"


def test_advisory_lock_key_names_the_target() -> None:
    assert text(st.advisory_lock(TARGET)) == (
        "SELECT pg_catalog.pg_advisory_xact_lock(hashtextextended('stagecopy:sales.orders', 0))"
    )
    # Quotes in names stay inside the literal.
    assert text(st.advisory_lock(QualifiedName("a'b", "c"))) == (
        "SELECT pg_catalog.pg_advisory_xact_lock(hashtextextended('stagecopy:a''b.c', 0))"
    )


def test_small_session_statements() -> None:
    assert text(st.lock_table(TARGET)) == f"LOCK TABLE {T} IN SHARE ROW EXCLUSIVE MODE"
    assert text(st.set_local("lock_timeout", "30s")) == "SET LOCAL \"lock_timeout\" = '30s'"
    assert text(st.set_snapshot("00000003-1")) == "SET TRANSACTION SNAPSHOT '00000003-1'"


def test_schema_lock_key_names_the_schema() -> None:
    assert text(st.schema_lock("raw_data")) == (
        "SELECT pg_catalog.pg_advisory_xact_lock(hashtextextended('stagecopy-schema:raw_data', 0))"
    )
