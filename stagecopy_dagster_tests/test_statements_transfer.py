"""Exact SQL text of COPY out and in, and ctid ranges, without a database.

:mod:`stagecopy_dagster.statements.transfer`; ``as_string(None)``.
"""

from __future__ import annotations

import pytest

from stagecopy_dagster import statements as st
from stagecopy_dagster.sqlguard import parse_query
from stagecopy_dagster_tests.statementhelpers import SCOPE, STAGING, TARGET, S, T, text


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


def test_ctid_ranges() -> None:
    assert text(st.ctid_range(0, 10)) == "ctid >= '(0,0)'::tid AND ctid < '(10,0)'::tid"
    assert text(st.ctid_range(5, None)) == "ctid >= '(5,0)'::tid"
