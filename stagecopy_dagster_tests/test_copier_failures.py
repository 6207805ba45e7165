"""Failures leave the target exactly as it was, with no staging table, and say what broke."""

from __future__ import annotations

from typing import Any

import pytest

from stagecopy_dagster.errors import (
    CopyError,
    DuplicateKeyError,
    SourceError,
    SpecError,
    StagecopyError,
    UnsafeSqlError,
    UserTypeError,
)
from stagecopy_dagster_tests.copyhelpers import checksum, run_copy, staging_leftovers, table_spec
from stagecopy_dagster_tests.pg import PgPair


def assert_fails_cleanly(
    pg: PgPair,
    entry: dict[str, Any],
    error: type[StagecopyError],
    *,
    target: str,
    says: tuple[str, ...] = (),
) -> StagecopyError:
    """Run a copy that must raise `error` naming the table and saying each of `says`.

    The target must be exactly as before (same rows, same values) and no staging table left.
    """
    label = table_spec(entry).label
    before = checksum(pg, "target", target)
    with pytest.raises(error) as info:
        run_copy(pg, entry)
    assert checksum(pg, "target", target) == before
    assert staging_leftovers(pg) == []
    message = str(info.value)
    assert info.value.table == label
    assert message.startswith(f"{label}: "), message
    for fragment in says:
        assert fragment in message, message
    return info.value


# --- duplicate and NULL keys ------------------------------------------------------------------

EVENTS = (
    "CREATE TABLE events (id int, v text)",
    "INSERT INTO events SELECT g, 'v' || g FROM generate_series(1, 1000) g",
)
QUERY_ENTRY = {
    "query": "SELECT id, v FROM events",
    "target": "public.events",
    "primary_key": "id",
}


@pytest.fixture
def copied_events(pg: PgPair) -> PgPair:
    """`events` (no key at the source) copied once by a query source keyed on id."""
    pg.source(*EVENTS)
    run_copy(pg, QUERY_ENTRY)
    return pg


def test_new_duplicate_keys_are_refused_with_the_keys_shown(copied_events: PgPair) -> None:
    pg = copied_events
    pg.source("INSERT INTO events VALUES (2000, 'a'), (2000, 'b'), (2001, 'a'), (2001, 'b')")
    assert_fails_cleanly(
        pg,
        QUERY_ENTRY,
        DuplicateKeyError,
        target="public.events",
        says=("repeat or lack the key (id)", "(2000) x2", "(2001) x2"),
    )


def test_duplicates_of_an_existing_key_are_refused(copied_events: PgPair) -> None:
    pg = copied_events
    pg.source("INSERT INTO events VALUES (5, 'x'), (5, 'y')")  # key 5 now has three rows
    assert_fails_cleanly(
        pg, QUERY_ENTRY, DuplicateKeyError, target="public.events", says=("(5) x3",)
    )


def test_a_duplicate_equal_to_the_target_row_is_still_refused(copied_events: PgPair) -> None:
    """Key 5 appears twice at the source: once as the target has it, once changed.

    MERGE only fails when it would change a target row twice. Here one copy needs no change,
    so the other silently wins unless stagecopy checks the staged keys itself.
    """
    pg = copied_events
    pg.source("INSERT INTO events VALUES (5, 'changed')")
    assert_fails_cleanly(
        pg, QUERY_ENTRY, DuplicateKeyError, target="public.events", says=("(5) x2",)
    )


def test_an_identical_duplicate_row_is_refused(copied_events: PgPair) -> None:
    pg = copied_events
    pg.source("INSERT INTO events VALUES (5, 'v5')")  # exactly the row the target holds
    assert_fails_cleanly(
        pg, QUERY_ENTRY, DuplicateKeyError, target="public.events", says=("(5) x2",)
    )


def test_a_null_key_is_refused(copied_events: PgPair) -> None:
    pg = copied_events
    pg.source("INSERT INTO events VALUES (NULL, 'no key')")
    assert_fails_cleanly(
        pg, QUERY_ENTRY, DuplicateKeyError, target="public.events", says=("(NULL) x1",)
    )


def test_a_non_unique_explicit_key_on_a_target_without_index(pg: PgPair) -> None:
    """The target has no unique index on the key, so stagecopy itself finds the duplicates."""
    pg.source(
        "CREATE TABLE t (id int PRIMARY KEY, code text, v text)",
        "INSERT INTO t SELECT g, 'c' || g, 'v' FROM generate_series(1, 100) g",
    )
    pg.target(
        "CREATE TABLE t (id int, code text, v text)",
        "INSERT INTO t SELECT g, 'c' || g, 'old' FROM generate_series(1, 100) g",
    )
    pg.source(
        "UPDATE t SET code = 'c1' WHERE id IN (2, 3)", "UPDATE t SET code = NULL WHERE id = 4"
    )
    assert_fails_cleanly(
        pg,
        {"source": "public.t", "primary_key": "code"},
        DuplicateKeyError,
        target="public.t",
        says=(
            "the source rows in scope repeat or lack the key (code)",
            "('c1') x3",
            "(NULL) x1",
        ),
    )


def test_a_null_key_on_a_target_without_index(pg: PgPair) -> None:
    pg.source("CREATE TABLE s (k int, v text)", "INSERT INTO s VALUES (1, 'a'), (2, 'b')")
    pg.target("CREATE TABLE s (k int, v text)", "INSERT INTO s VALUES (1, 'old')")
    pg.source("INSERT INTO s VALUES (NULL, 'c')")
    assert_fails_cleanly(
        pg,
        {"source": "public.s", "primary_key": "k"},
        DuplicateKeyError,
        target="public.s",
        says=("(NULL) x1",),
    )


def test_duplicates_into_an_empty_target_with_a_key_are_refused(pg: PgPair) -> None:
    pg.source(*EVENTS, "INSERT INTO events VALUES (7, 'again')")
    pg.target("CREATE TABLE events (id int PRIMARY KEY, v text)")
    assert_fails_cleanly(
        pg, QUERY_ENTRY, DuplicateKeyError, target="public.events", says=("(id)=(7)",)
    )


def test_duplicates_into_an_existing_empty_target_without_index(pg: PgPair) -> None:
    """An empty target is loaded by direct COPY; with no unique index nothing checks the keys.

    The same rows into a non-empty target are refused (staging + duplicate check), so an
    empty target must not silently take duplicate or NULL keys either.
    """
    pg.source(*EVENTS, "INSERT INTO events VALUES (7, 'again'), (NULL, 'no key')")
    pg.target("CREATE TABLE events (id int, v text)")
    assert_fails_cleanly(
        pg, QUERY_ENTRY, DuplicateKeyError, target="public.events", says=("(7) x2",)
    )


# --- failures in the middle of the COPY -------------------------------------------------------

# About 2 MB of COPY data, so several write blocks reach the target before the error.
BIG = (
    "CREATE TABLE big (id int PRIMARY KEY, pad text)",
    "INSERT INTO big SELECT g, repeat('x', 80) FROM generate_series(1, 20000) g",
)
FAILING_QUERY = "SELECT id, CASE WHEN id = 18000 THEN 1 / 0 ELSE 1 END AS x, pad FROM big"


@pytest.mark.parametrize(
    ("mode", "target_rows"),
    [("merge", 0), ("merge", 100), ("sync", 100), ("replace", 100), ("append", 100)],
)
def test_an_error_at_the_source_mid_stream(pg: PgPair, mode: str, target_rows: int) -> None:
    pg.source(*BIG)
    pg.target(
        "CREATE TABLE big_copy (id int PRIMARY KEY, x int, pad text)",
        f"INSERT INTO big_copy SELECT g, 1, 'old' FROM generate_series(1, {target_rows}) g",
    )
    entry = {"query": FAILING_QUERY, "target": "public.big_copy", "mode": mode, "primary_key": "id"}
    error = assert_fails_cleanly(
        pg, entry, CopyError, target="public.big_copy", says=("division by zero",)
    )
    assert not error.transient
    assert pg.target_rows("SELECT count(*) FROM big_copy") == [(target_rows,)]


@pytest.mark.parametrize("target_rows", [0, 100])
def test_a_value_the_target_refuses(pg: PgPair, target_rows: int) -> None:
    """A CHECK constraint only the target has fails the COPY (direct) or the MERGE (staged)."""
    pg.source(*BIG, "UPDATE big SET pad = 'bad' WHERE id = 15000")
    pg.target(
        "CREATE TABLE big (id int PRIMARY KEY, pad text CHECK (pad <> 'bad'))",
        f"INSERT INTO big SELECT g, 'old' FROM generate_series(1, {target_rows}) g",
    )
    assert_fails_cleanly(
        pg, {"source": "public.big"}, CopyError, target="public.big", says=("check constraint",)
    )


def test_a_target_domain_that_refuses_a_text_value(pg: PgPair) -> None:
    """A target domain with a CHECK the source's lacks: refused before any write.

    (Before user-defined types were compared, the text COPY failed on the row the CHECK
    refused; now the differing definitions are found first, naming the domain.)
    """
    pg.source(
        "CREATE DOMAIN code AS text",
        "CREATE TABLE t (id int PRIMARY KEY, c code)",
        "INSERT INTO t SELECT g, 'ok' FROM generate_series(1, 1000) g",
        "UPDATE t SET c = 'not ok' WHERE id = 900",
    )
    pg.target(
        "CREATE DOMAIN code AS text CHECK (VALUE = 'ok')",
        "CREATE TABLE t (id int PRIMARY KEY, c code)",
        "INSERT INTO t VALUES (1, 'ok')",
    )
    assert_fails_cleanly(
        pg,
        {"source": "public.t"},
        UserTypeError,
        target="public.t",
        says=("user-defined types differ", "code"),
    )


# --- problems found before anything is written ------------------------------------------------


@pytest.fixture
def simple(pg: PgPair) -> PgPair:
    pg.source(
        "CREATE TABLE t (id int PRIMARY KEY, v text, region text)",
        "INSERT INTO t VALUES (1, 'a', 'KR')",
    )
    pg.target("CREATE TABLE t (id int PRIMARY KEY, v text, region text)")
    return pg


def test_missing_source_table(simple: PgPair) -> None:
    assert_fails_cleanly(
        simple,
        {"source": "public.nope"},
        SourceError,
        target="t",
        says=("source table public.nope does not exist (or the source role cannot see it)",),
    )


def test_key_that_is_not_a_column(simple: PgPair) -> None:
    assert_fails_cleanly(
        simple,
        {"source": "public.t", "primary_key": "nope"},
        SpecError,
        target="t",
        says=("primary_key column 'nope' is not a column of the source (columns: id, v, region)",),
    )


def test_incremental_field_that_is_not_a_column(simple: PgPair) -> None:
    assert_fails_cleanly(
        simple,
        {"source": "public.t", "incremental_field": "nope"},
        SpecError,
        target="t",
        says=("incremental_field 'nope' is not a column of the source",),
    )


def test_keyed_mode_on_a_source_without_key(pg: PgPair) -> None:
    pg.source("CREATE TABLE nokey (a int)")
    with pytest.raises(SpecError, match="mode sync needs a primary key"):
        run_copy(pg, {"source": "public.nokey", "mode": "sync"})
    assert pg.target_rows("SELECT to_regclass('public.nokey')") == [(None,)]


def test_where_that_does_not_work_on_the_source(simple: PgPair) -> None:
    assert_fails_cleanly(
        simple,
        {"source": "public.t", "where": "nope = 1"},
        SpecError,
        target="t",
        says=("`where` does not work on the source", "nope"),
    )


def test_where_that_does_not_work_on_the_target(pg: PgPair) -> None:
    pg.source(
        "CREATE TABLE t (id int PRIMARY KEY, region text)",
        "INSERT INTO t VALUES (1, 'KR')",
        "CREATE TABLE regions (code text)",
        "INSERT INTO regions VALUES ('KR')",
    )
    pg.target("CREATE TABLE t (id int PRIMARY KEY, region text)", "INSERT INTO t VALUES (2, 'KR')")
    assert_fails_cleanly(
        pg,
        {"source": "public.t", "mode": "sync", "where": "region IN (SELECT code FROM regions)"},
        SpecError,
        target="t",
        says=("`where` does not work on the target", "regions"),
    )


@pytest.mark.parametrize(
    ("entry", "function"),
    [
        ({"source": "public.t", "where": "random() < 0.5"}, "random"),
        ({"source": "public.t", "where": "pg_catalog.pg_sleep(0) IS NOT NULL"}, "pg_sleep"),
        (
            {
                "query": "SELECT id, v, nextval('s') AS n FROM t",
                "target": "public.t2",
                "mode": "append",
            },
            "nextval",
        ),
    ],
    ids=["random", "pg_sleep", "nextval"],
)
def test_volatile_functions_are_refused(
    simple: PgPair, entry: dict[str, Any], function: str
) -> None:
    simple.source("CREATE SEQUENCE s")
    assert_fails_cleanly(
        simple, entry, UnsafeSqlError, target="t", says=(f"{function}(), a volatile function",)
    )
    assert simple.source_rows("SELECT last_value, is_called FROM s") == [(1, False)]


def test_query_returning_a_column_twice(simple: PgPair) -> None:
    assert_fails_cleanly(
        simple,
        {"query": "SELECT id, v, v FROM t", "target": "public.t3", "mode": "append"},
        SourceError,
        target="t",
        says=("query returns column(s) ['v'] more than once; alias them",),
    )
