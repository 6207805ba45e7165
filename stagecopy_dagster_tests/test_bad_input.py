"""Bad input: every mistake a user can make in a spec or a connection fails clearly and early.

Each case runs the whole path a run takes (load the one-entry spec, then `runner.replicate` as the
least-privilege roles) and asserts three things: the error's type; that its message names the
table or spec entry and the problem; and that the target database is exactly as before (every
table's rows fingerprinted, the list of schemas and tables compared). The cases share one pair of
databases built once for the module: a case that wrote anything would break the next one's
"before", and is caught by its own "after".

Loading a spec raises :class:`SpecError` for problems found without a database (the entry is
named as ``tables[0] (public.items)``); the copier raises for problems that need the database
(the table is named as ``public.items: ...``) before it writes anything.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, LiteralString, cast

import psycopg
import pytest
from psycopg import sql

from stagecopy_dagster import catalog, runner
from stagecopy_dagster.errors import (
    ConnectError,
    DuplicateKeyError,
    SchemaMismatchError,
    SourceError,
    SpecError,
    StagecopyError,
    UnsafeSqlError,
    is_transient,
)
from stagecopy_dagster.resources import PostgresResource
from stagecopy_dagster.spec import load_spec
from stagecopy_dagster_tests.copyhelpers import staging_leftovers, table_spec
from stagecopy_dagster_tests.pg import PgPair, PgPairFactory

WEIRD = 'we"ird. name; DROP TABLE x'
WEIRD_SQL = '"we""ird. name; DROP TABLE x"'

SOURCE_SETUP = (
    "CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL, region text, n int)",
    "INSERT INTO items SELECT g, 'v' || g, CASE WHEN g % 2 = 0 THEN 'KR' ELSE 'US' END, g "
    "FROM generate_series(1, 100) g",
    "CREATE TABLE regions (code text PRIMARY KEY)",
    "INSERT INTO regions VALUES ('KR')",
    "CREATE TABLE nokey (id int, v text)",
    "INSERT INTO nokey VALUES (1, 'a'), (1, 'b'), (2, 'c'), (3, 'd'), (3, 'e')",
    "CREATE TABLE nullkey (id int, v text)",
    "INSERT INTO nullkey VALUES (NULL, 'a'), (1, 'b')",
    "CREATE TABLE typed (id int PRIMARY KEY, amount numeric(10,2))",
    "INSERT INTO typed VALUES (1, 1.50), (2, 2.25)",
    f"CREATE TABLE {WEIRD_SQL} (id int PRIMARY KEY, v text)",
    f"INSERT INTO {WEIRD_SQL} VALUES (1, 'a'), (2, 'b')",
    "CREATE TABLE x (id int)",
    "CREATE SEQUENCE s",
)
# The target already holds stale copies: a run that wrongly went through would change them.
TARGET_SETUP = (
    "CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL, region text, n int)",
    "INSERT INTO items SELECT g, 'stale', 'KR', g FROM generate_series(1, 50) g",
    "CREATE TABLE typed (id int PRIMARY KEY, amount text)",
    "INSERT INTO typed VALUES (1, 'one')",
    "CREATE TABLE nokey_staged (id int, v text)",
    "INSERT INTO nokey_staged VALUES (1, 'stale')",
    "CREATE TABLE x (id int)",
)

_TARGET_TABLES = (
    "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg\\_toast%' ORDER BY 1"
)


def target_state(pg: PgPair) -> dict[str, Any]:
    """Schemas, tables and a fingerprint of every table's rows in the target database."""
    with psycopg.connect(pg.target_admin_url, autocommit=True) as conn:
        schemas = [
            r[0]
            for r in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' ORDER BY 1"
            )
        ]
        state: dict[str, Any] = {"schemas": schemas}
        for (relation,) in conn.execute(_TARGET_TABLES).fetchall():
            # `relation` is regclass text: already a quoted, qualified name.
            state[relation] = conn.execute(
                sql.SQL(
                    "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
                    " FROM {} t"
                ).format(sql.SQL(cast(LiteralString, relation)))
            ).fetchone()
    return state


def resources(pg: PgPair, **target: Any) -> tuple[PostgresResource, PostgresResource]:
    return PostgresResource(url=pg.source_url), PostgresResource(url=pg.target_url, **target)


@pytest.fixture(scope="module")
def shared(pg18: PgPairFactory) -> Iterator[PgPair]:
    pair = pg18("bad_input")
    pair.source(*SOURCE_SETUP)
    pair.target(*TARGET_SETUP)
    try:
        yield pair
    finally:
        pair.drop()


@dataclass(frozen=True)
class Case:
    """One bad entry: the error type it must raise and fragments its message must hold."""

    id: str
    entry: dict[str, Any]
    error: type[StagecopyError]
    says: tuple[str, ...]


def _entry(label: str) -> str:
    return f"tables[0] ({label})"


CASES = [
    # --- tables and columns that do not exist -----------------------------------------------------
    Case(
        "unknown source table",
        {"source": "public.nope"},
        SourceError,
        ("public.nope: ", "source table public.nope does not exist"),
    ),
    Case(
        "unknown primary_key column",
        {"source": "public.items", "primary_key": "nope"},
        SpecError,
        ("public.items: ", "primary_key column 'nope' is not a column of the source"),
    ),
    Case(
        "unknown incremental_field",
        {"source": "public.items", "incremental_field": "nope"},
        SpecError,
        ("public.items: ", "incremental_field 'nope' is not a column of the source"),
    ),
    Case(
        "unknown column in where",
        {"source": "public.items", "where": "nope = 1"},
        SpecError,
        ("public.items: ", "`where` does not work on the source", 'column "nope" does not exist'),
    ),
    Case(
        "where that is not boolean",
        {"source": "public.items", "where": "n + 1"},
        SpecError,
        ("public.items: ", "`where` does not work on the source", "must be type boolean"),
    ),
    Case(
        "where naming a table only the source has",
        {"source": "public.items", "where": "region IN (SELECT code FROM regions)"},
        SpecError,
        ("public.items: ", "`where` does not work on the target", '"regions" does not exist'),
    ),
    Case(
        "non-existent weird table name",
        {"source": 'public."we""ird. name; DROP TABLE y"'},
        SourceError,
        ('public."we""ird. name; DROP TABLE y"', "does not exist"),
    ),
    Case(
        "three-part table name",
        {"source": "db.public.items"},
        SpecError,
        ("tables[0] (db.public.items)", "expected schema.table, got 3 parts"),
    ),
    Case(
        "misspelt key",
        {"source": "public.items", "primary_keys": ["id"]},
        SpecError,
        (_entry("public.items"), "unknown key 'primary_keys'"),
    ),
    Case(
        "merge without any key",
        {"source": "public.nokey"},
        SpecError,
        ("public.nokey: ", "mode merge needs a primary key", "set `primary_key`"),
    ),
    # --- where: injection attempts (refused by the parser before any database) --------------------
    Case(
        "where with a second statement",
        {"source": "public.items", "where": "1=1; DROP TABLE x"},
        SpecError,
        (_entry("public.items"), "must be a single statement, found 2"),
    ),
    Case(
        "where closing a parenthesis and commenting out the rest",
        {"source": "public.items", "where": "1=1) --"},
        SpecError,
        (_entry("public.items"), "is not valid SQL"),
    ),
    Case(
        "where breaking out of its parentheses",
        {"source": "public.items", "where": "1=1) OR (1=1"},
        SpecError,
        (_entry("public.items"), "is not valid SQL"),
    ),
    # --- where: volatile functions (refused on the source before anything is written) -------------
    Case(
        "comment trick hiding pg_terminate_backend",
        {"source": "public.items", "where": "1=1 /* */ OR pg_terminate_backend(1) IS NOT NULL"},
        UnsafeSqlError,
        ("public.items: where calls pg_terminate_backend(), a volatile function",),
    ),
    Case(
        "nextval",
        {"source": "public.items", "where": "nextval('s') > 0"},
        UnsafeSqlError,
        ("public.items: where calls nextval(), a volatile function",),
    ),
    Case(
        "terminate own backend",
        {"source": "public.items", "where": "pg_terminate_backend(pg_backend_pid())"},
        UnsafeSqlError,
        ("public.items: where calls pg_terminate_backend(), a volatile function",),
    ),
    Case(
        "set_config",
        {"source": "public.items", "where": "set_config('a.b', 'c', false) = 'c'"},
        UnsafeSqlError,
        ("public.items: where calls set_config(), a volatile function",),
    ),
    Case(
        "random",
        {"source": "public.items", "where": "random() > 0"},
        UnsafeSqlError,
        ("public.items: where calls random(), a volatile function",),
    ),
    # --- rows that break the key ------------------------------------------------------------------
    Case(
        "duplicate keys into a new table",
        {"source": "public.nokey", "primary_key": "id"},
        DuplicateKeyError,
        ("public.nokey: ", "the source rows in scope repeat or lack the key (id)", "(1) x2"),
    ),
    Case(
        "duplicate keys into an existing table without a unique index",
        {"source": "public.nokey", "target": "public.nokey_staged", "primary_key": "id"},
        DuplicateKeyError,
        ("public.nokey_staged: ", "repeat or lack the key (id)", "(1) x2", "(3) x2"),
    ),
    Case(
        "NULL keys",
        {"source": "public.nullkey", "primary_key": "id"},
        DuplicateKeyError,
        ("public.nullkey: ", "repeat or lack the key (id)", "(NULL) x1"),
    ),
    Case(
        "incompatible column types",
        {"source": "public.typed"},
        SchemaMismatchError,
        ("public.typed: ", "amount is numeric(10,2) at the source, text here"),
    ),
    # --- on_schema_change, columns and masks (issue #13) ------------------------------------------
    Case(
        "type difference with on_schema_change ignore",
        {"source": "public.typed", "on_schema_change": "ignore"},
        SchemaMismatchError,
        ("public.typed: ", "amount is numeric(10,2) at the source, text here"),
    ),
    Case(
        "a column the source lacks in columns",
        {"source": "public.items", "columns": ["id", "nope"]},
        SpecError,
        ("public.items: ", "columns names 'nope', not a column of the source"),
    ),
    Case(
        "the source's key left out by columns",
        {"source": "public.items", "columns": ["v", "n"]},
        SpecError,
        ("public.items: ", "key column 'id' must be copied (it is left out by columns)"),
    ),
    Case(
        "the source's key masked",
        {"source": "public.items", "mask": {"id": "null"}},
        SpecError,
        ("public.items: ", "key column 'id' cannot be masked"),
    ),
    Case(
        "mask null into a NOT NULL target column",
        {"source": "public.items", "mask": {"v": "null"}},
        SchemaMismatchError,
        ("public.items: ", "column v is masked with null but NOT NULL in the target"),
    ),
    # --- query sources that are not a plain SELECT ------------------------------------------------
    Case(
        "query that is a DELETE",
        {"query": "DELETE FROM items RETURNING *", "target": "public.q", "primary_key": "id"},
        SpecError,
        (_entry("public.q"), "query must be a SELECT, got DELETE"),
    ),
    Case(
        "query with INSERT ... RETURNING in a CTE",
        {
            "query": "WITH i AS (INSERT INTO x VALUES (1) RETURNING id) SELECT id FROM i",
            "target": "public.q",
            "primary_key": "id",
        },
        SpecError,
        (_entry("public.q"), "data-modifying statements are not allowed"),
    ),
    Case(
        "query with SELECT INTO",
        {"query": "SELECT * INTO newtab FROM items", "target": "public.q", "primary_key": "id"},
        SpecError,
        (_entry("public.q"), "SELECT INTO is not allowed"),
    ),
    Case(
        "query with two statements",
        {"query": "SELECT 1 AS id; SELECT 2 AS id", "target": "public.q", "primary_key": "id"},
        SpecError,
        (_entry("public.q"), "must be a single statement, found 2"),
    ),
    Case(
        "query locking rows",
        {"query": "SELECT id FROM items FOR UPDATE", "target": "public.q", "primary_key": "id"},
        SpecError,
        (_entry("public.q"), "row locks (FOR UPDATE/SHARE) are not allowed"),
    ),
    Case(
        "query that is VALUES",
        {"query": "VALUES (1)", "target": "public.q", "primary_key": "column1"},
        SpecError,
        (_entry("public.q"), "query must be a SELECT, got VALUES"),
    ),
    Case(
        "query returning a column twice",
        {"query": "SELECT id, id FROM items", "target": "public.q", "primary_key": "id"},
        SourceError,
        ("public.q: query returns column(s) ['id'] more than once",),
    ),
]


@pytest.mark.integration
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_entry(shared: PgPair, case: Case) -> None:
    before = target_state(shared)
    with pytest.raises(StagecopyError) as caught:
        runner.replicate(table_spec(case.entry), *resources(shared))
    assert isinstance(caught.value, case.error), repr(caught.value)
    message = str(caught.value)
    for fragment in case.says:
        assert fragment in message, message
    assert not is_transient(caught.value)
    assert target_state(shared) == before
    assert staging_leftovers(shared) == []
    # The `DROP TABLE x` and `INSERT INTO x` attempts did nothing on either side.
    assert shared.source_rows("SELECT count(*) FROM x") == [(0,)]
    # nextval() was never called: the sequence was not advanced.
    assert shared.source_rows("SELECT is_called FROM s") == [(False,)]


@pytest.mark.integration
def test_mask_hash_without_the_key_variable(
    shared: PgPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STAGECOPY_MASK_KEY", raising=False)
    before = target_state(shared)
    entry = {"source": "public.items", "target": "public.items_masked", "mask": {"v": "hash"}}
    with pytest.raises(SpecError) as caught:
        runner.replicate(table_spec(entry), *resources(shared))
    assert str(caught.value) == (
        "public.items_masked: `mask: hash` needs the key in the environment variable "
        "STAGECOPY_MASK_KEY (it is not set, or empty); nothing was written"
    )
    assert target_state(shared) == before


# --- bugs found: each is a failing test until the product is fixed -------------------------------


def test_unsafe_where_in_a_spec_is_an_unsafe_sql_error() -> None:
    with pytest.raises(UnsafeSqlError):
        load_spec({"tables": [{"source": "public.items", "where": "1=1; DROP TABLE x"}]})


@pytest.mark.integration
def test_where_that_fails_on_the_target_leaves_a_new_target_untouched(shared: PgPair) -> None:
    entry = {
        "source": "public.items",
        "target": "public.items_first_run",
        "where": "region IN (SELECT code FROM regions)",
    }
    before = target_state(shared)
    try:
        with pytest.raises(SpecError) as caught:
            runner.replicate(table_spec(entry), *resources(shared))
        assert "`where` does not work on the target" in str(caught.value)
        assert target_state(shared) == before
    finally:
        shared.target("DROP TABLE IF EXISTS public.items_first_run")


# --- succeeding on strange but valid input -------------------------------------------------------


@pytest.mark.integration
def test_weird_table_name_is_a_name_and_copies(any_pg: PgPair) -> None:
    any_pg.source(
        f"CREATE TABLE {WEIRD_SQL} (id int PRIMARY KEY, v text)",
        f"INSERT INTO {WEIRD_SQL} VALUES (1, 'a'), (2, 'b')",
        "CREATE TABLE x (id int)",
    )
    any_pg.target("CREATE TABLE x (id int)")
    entry = {"source": f"public.{WEIRD_SQL}", "target": f"new_schema.{WEIRD_SQL}"}
    spec = table_spec(entry)
    assert spec.source is not None and spec.source.name == WEIRD
    done = runner.replicate(spec, *resources(any_pg))
    assert done.report is not None and done.report.passed
    assert done.result.created_table and done.result.rows_copied == 2
    # The unknown target schema was created; the name was quoted, not executed.
    assert any_pg.target_rows(f"SELECT id, v FROM new_schema.{WEIRD_SQL} ORDER BY id") == [
        (1, "a"),
        (2, "b"),
    ]
    assert any_pg.target_rows("SELECT to_regclass('public.x') IS NOT NULL") == [(True,)]
    assert any_pg.source_rows("SELECT to_regclass('public.x') IS NOT NULL") == [(True,)]


@pytest.mark.integration
@pytest.mark.parametrize("setup", ["with a unique key", "with a primary key"])
def test_duplicate_keys_into_an_existing_keyed_table(pg: PgPair, setup: str) -> None:
    """The MERGE itself meets the duplicates (15/16: plain MERGE; 17+: MERGE ... RETURNING)."""
    pg.source("CREATE TABLE dup (id int, v text)", "INSERT INTO dup VALUES (1, 'a'), (1, 'b')")
    constraint = "UNIQUE" if setup == "with a unique key" else "PRIMARY KEY"
    pg.target(f"CREATE TABLE dup (id int {constraint}, v text)", "INSERT INTO dup VALUES (1, 'x')")
    before = target_state(pg)
    with pytest.raises(DuplicateKeyError) as caught:
        runner.replicate(table_spec({"source": "public.dup", "primary_key": "id"}), *resources(pg))
    assert str(caught.value).startswith("public.dup: "), caught.value
    assert "(1) x2" in str(caught.value)
    assert target_state(pg) == before
    assert staging_leftovers(pg) == []


# --- specs that are wrong as a whole -------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({}, "the spec is empty"),
        ({"tables": []}, "`tables` must be a non-empty list"),
        ({"tables": [{}]}, "give exactly one of `source` (a table) or `query` (a SELECT)"),
        (
            {"tables": [{"source": "public.items", "columns": ["id"], "exclude_columns": ["v"]}]},
            "give `columns` (copy only these) or `exclude_columns`, not both",
        ),
        (
            {"tables": [{"source": "public.items"}, {"source": "other.items", "target": "items"}]},
            "tables[1] and tables[0] both write public.items",
        ),
        (
            {"tables": [{"source": "a.items", "name": "t"}, {"source": "b.items", "name": "t"}]},
            "tables[1] and tables[0] would both be asset 't'",
        ),
    ],
    ids=[
        "empty",
        "no tables",
        "empty entry",
        "columns and exclude_columns",
        "same target twice",
        "same asset twice",
    ],
)
def test_bad_spec(spec: dict[str, Any], says: str) -> None:
    """Refused when definitions load: no run starts, nothing connects to either database."""
    with pytest.raises(SpecError) as caught:
        load_spec(spec)
    assert says in str(caught.value)


# --- connections ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.integration
def test_unreachable_database_fails_fast(any_pg: PgPair) -> None:
    port = _free_port()  # nothing listens there
    dead = f"postgresql://stagecopy_reader:pw-unused@127.0.0.1:{port}/nowhere"
    spec = table_spec({"source": "public.items"})
    retried: list[BaseException] = []
    started = time.monotonic()
    with pytest.raises(ConnectError) as caught:
        runner.replicate(
            spec,
            PostgresResource(url=dead),
            PostgresResource(url=any_pg.target_url),
            on_retry=lambda attempt, exc, delay: retried.append(exc),
        )
    elapsed = time.monotonic() - started
    message = str(caught.value)
    prefix = f"public.items: cannot connect to stagecopy_reader@127.0.0.1:{port}/nowhere"
    assert message.startswith(prefix)
    assert "Connection refused" in message and "pw-unused" not in message
    # A refused connection may be a restart: it is retried (3 attempts, backoff 0.5-1 s, 1-2 s).
    assert is_transient(caught.value) and len(retried) == 2
    assert elapsed < 6, elapsed
    assert any_pg.target_rows(_TARGET_TABLES) == []


@pytest.mark.integration
def test_silent_server_fails_after_connect_timeout(any_pg: PgPair) -> None:
    """A port that accepts TCP but never speaks: connect_timeout bounds the wait."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        url = f"postgresql://stagecopy_reader@127.0.0.1:{port}/silent"
        started = time.monotonic()
        with pytest.raises(ConnectError) as caught:
            runner.replicate(
                table_spec({"source": "public.items"}),
                PostgresResource(url=url, connect_timeout=2),
                PostgresResource(url=any_pg.target_url, retries=1),
            )
        elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 6, elapsed
    prefix = f"public.items: cannot connect to stagecopy_reader@127.0.0.1:{port}"
    assert str(caught.value).startswith(prefix)
    assert "timeout" in str(caught.value)


@pytest.mark.integration
def test_wrong_credentials(any_pg: PgPair) -> None:
    password = "S3cr3t-wrong-XYZ"
    port = any_pg.cluster.port
    url = f"postgresql://stagecopy_reader:{password}@127.0.0.1:{port}/{any_pg.source_db}"
    retried: list[BaseException] = []
    with pytest.raises(ConnectError) as caught:
        runner.replicate(
            table_spec({"source": "public.items"}),
            PostgresResource(url=url),
            PostgresResource(url=any_pg.target_url),
            on_retry=lambda attempt, exc, delay: retried.append(exc),
        )
    message = str(caught.value)
    assert message.startswith(f"public.items: cannot connect to stagecopy_reader@127.0.0.1:{port}/")
    assert 'password authentication failed for user "stagecopy_reader"' in message
    assert password not in message and url not in message
    # Raised `from None`: tracebacks show no chained libpq error (which has no password either).
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert password not in str(caught.value.__context__)
    # Wrong credentials are not retried.
    assert not is_transient(caught.value) and retried == []
    assert any_pg.target_rows(_TARGET_TABLES) == []


@pytest.mark.integration
def test_connect_error_names_the_table(any_pg: PgPair) -> None:
    url = f"postgresql://stagecopy_reader:wrong@127.0.0.1:{any_pg.cluster.port}/{any_pg.source_db}"
    with pytest.raises(ConnectError) as caught:
        runner.replicate(
            table_spec({"source": "public.items"}),
            PostgresResource(url=url),
            PostgresResource(url=any_pg.target_url),
        )
    assert caught.value.table == "public.items"


# --- a target older than PostgreSQL 15 -----------------------------------------------------------


@pytest.mark.integration
def test_target_older_than_postgresql_15_is_refused(
    pg: PgPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No PostgreSQL 14 server can run here: the target's reported version is faked.

    `catalog.server_version` is the one place the copier reads a server's version; it is
    patched to answer 14.11 for the target connection only, the source keeps its real one.
    """
    pg.source("CREATE TABLE items (id int PRIMARY KEY)", "INSERT INTO items VALUES (1)")
    real = catalog.server_version
    target_db = pg.target_db
    asked: list[str] = []

    def fake(conn: psycopg.Connection) -> int:
        asked.append(conn.info.dbname)
        return 140011 if conn.info.dbname == target_db else real(conn)

    monkeypatch.setattr(catalog, "server_version", fake)
    before = target_state(pg)
    with pytest.raises(StagecopyError) as caught:
        runner.replicate(table_spec({"source": "public.items"}), *resources(pg))
    assert target_db in asked
    assert str(caught.value) == (
        "public.items: the target runs PostgreSQL 14; stagecopy needs 15 or newer (MERGE)"
    )
    assert not is_transient(caught.value)
    assert target_state(pg) == before
