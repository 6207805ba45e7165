"""Security: stagecopy cannot write to the source, and never shows a password or a DSN.

* The source is read inside a READ ONLY transaction: even a superuser connection cannot write
  through a :class:`SourceSnapshot`; and the reader role the tests use cannot write at all.
* A Dagster run with a passing and failing tables, through roles with a distinctive password,
  leaves neither the password nor a connection URL in any event of the run (messages, metadata,
  errors, stack traces), in the run record, or on stdout/stderr.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dagster as dg
import psycopg
import pytest
from dagster._serdes import serialize_value
from psycopg import errors as pg_errors
from psycopg import sql

from stagecopy_dagster import build_definitions, runner
from stagecopy_dagster.copier import SourceSnapshot
from stagecopy_dagster.errors import ConnectError
from stagecopy_dagster.resources import PostgresResource
from stagecopy_dagster_tests.copyhelpers import table_spec
from stagecopy_dagster_tests.pg import PgPair

PASSWORD = "S3cr3t-pw-XYZ"
READER = "sc_secret_reader"
WRITER = "sc_secret_writer"


# --- the source is read-only ---------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize(
    "write",
    [
        "INSERT INTO items VALUES (3, 'c')",
        "UPDATE items SET v = 'x'",
        "DELETE FROM items",
        "CREATE TABLE sneaky (id int)",
        "SELECT nextval('s')",
        "SELECT set_config('default_transaction_read_only', 'off', false)",
    ],
    ids=["insert", "update", "delete", "create", "nextval", "set_config"],
)
def test_source_snapshot_refuses_writes_even_as_superuser(any_pg: PgPair, write: str) -> None:
    any_pg.source(
        "CREATE TABLE items (id int PRIMARY KEY, v text)",
        "INSERT INTO items VALUES (1, 'a'), (2, 'b')",
        "CREATE SEQUENCE s",
    )
    superuser = PostgresResource(url=any_pg.source_admin_url)
    with superuser.connect() as conn, SourceSnapshot.begin(conn) as snap:
        if write.startswith("SELECT set_config"):
            # Turning the setting off inside the transaction does not make the transaction
            # writable: it stays READ ONLY until it ends.
            snap.conn.execute(write)  # type: ignore[arg-type]
            write = "INSERT INTO items VALUES (3, 'c')"
        with pytest.raises(pg_errors.ReadOnlySqlTransaction):
            snap.conn.execute(write)  # type: ignore[arg-type]
    assert any_pg.source_rows("SELECT count(*) FROM items") == [(2,)]
    assert any_pg.source_rows("SELECT to_regclass('sneaky') IS NULL") == [(True,)]


@pytest.mark.integration
def test_source_snapshot_is_one_repeatable_read_read_only_transaction(any_pg: PgPair) -> None:
    with (
        PostgresResource(url=any_pg.source_url).connect() as conn,
        SourceSnapshot.begin(conn) as snap,
    ):
        row = snap.conn.execute(
            "SELECT current_setting('transaction_isolation'), "
            "current_setting('transaction_read_only')"
        ).fetchone()
    assert row == ("repeatable read", "on")


@pytest.mark.integration
def test_source_snapshot_begins_without_a_warning(any_pg: PgPair) -> None:
    notices: list[str] = []
    with PostgresResource(url=any_pg.source_url).connect() as conn:
        conn.add_notice_handler(lambda diag: notices.append(str(diag.message_primary)))
        with SourceSnapshot.begin(conn) as snap:
            snap.conn.execute("SELECT 1")
    assert notices == []


@pytest.mark.integration
def test_reader_role_cannot_write_the_source_anyway(any_pg: PgPair) -> None:
    any_pg.source(
        "CREATE TABLE items (id int PRIMARY KEY, v text)", "INSERT INTO items VALUES (1, 'a')"
    )
    with psycopg.connect(any_pg.source_url, autocommit=True) as conn:
        for write in (
            "INSERT INTO items VALUES (2, 'b')",
            "UPDATE items SET v = 'x'",
            "DELETE FROM items",
            "TRUNCATE items",
            "CREATE TABLE public.sneaky (id int)",
            "CREATE SCHEMA sneaky",
        ):
            with pytest.raises(pg_errors.InsufficientPrivilege):
                conn.execute(write)  # type: ignore[arg-type]
    assert any_pg.source_rows("SELECT count(*) FROM items") == [(1,)]


# --- no password, no DSN -------------------------------------------------------------------------


@pytest.fixture
def secret_roles(any_pg: PgPair) -> Iterator[tuple[str, str]]:
    """Source and target URLs for two roles whose password is `PASSWORD`."""
    cluster = any_pg.cluster
    with cluster.connect() as conn:
        for role in (READER, WRITER):
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(PASSWORD)
                )
            )
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(any_pg.source_db), sql.Identifier(READER)
            )
        )
        # CREATE on the database: the product runs `CREATE SCHEMA IF NOT EXISTS` for new
        # tables, which needs it even when the schema exists (see docs/reliability.md).
        conn.execute(
            sql.SQL("GRANT CONNECT, CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(any_pg.target_db), sql.Identifier(WRITER)
            )
        )
    any_pg.source(
        f"GRANT USAGE ON SCHEMA public TO {READER}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {READER}",
    )
    any_pg.target(f"GRANT USAGE, CREATE ON SCHEMA public TO {WRITER}")
    try:
        yield (
            cluster.url(any_pg.source_db, user=READER, password=PASSWORD),
            cluster.url(any_pg.target_db, user=WRITER, password=PASSWORD),
        )
    finally:
        any_pg.drop()
        with cluster.connect() as conn:
            for role in (READER, WRITER):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _run_everything(defs: dg.Definitions) -> tuple[dg.ExecuteInProcessResult, str]:
    """Materialize every asset (and check) of `defs`; return the result and every trace of it."""
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)],
        resources=defs.resources,
        instance=instance,
        raise_on_error=False,
    )
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    traces = [serialize_value(entry) for entry in instance.all_logs(result.run_id)]
    traces.append(serialize_value(run))
    return result, "\n".join(traces)


def _assert_no_secret(text: str, *urls: str) -> None:
    assert PASSWORD not in text
    for url in urls:
        assert url not in text
    assert "postgresql://" not in text


@pytest.mark.integration
def test_no_password_or_dsn_in_a_dagster_run(
    any_pg: PgPair, secret_roles: tuple[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    source_url, target_url = secret_roles
    any_pg.source(
        "CREATE TABLE items (id int PRIMARY KEY, v text)",
        "INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 100) g",
        "CREATE TABLE dup (id int, v text)",
        "INSERT INTO dup VALUES (1, 'a'), (1, 'b')",
    )
    spec: dict[str, Any] = {
        "tables": [
            {"source": "public.items"},
            {"source": "public.missing"},
            {"source": "public.dup", "primary_key": "id"},
        ]
    }
    defs = build_definitions(spec, source_url=source_url, target_url=target_url)
    result, traces = _run_everything(defs)
    out, err = capfd.readouterr()

    # One table passed, two failed, each failure naming its table and its problem.
    assert not result.success
    assert len(result.get_asset_materialization_events()) == 1
    failures = [e for e in result.all_events if e.is_step_failure]
    messages = sorted(str(e.step_failure_data.error) for e in failures)  # type: ignore[union-attr]
    assert len(messages) == 2
    assert any("public.missing: source table public.missing does not exist" in m for m in messages)
    assert any("public.dup: " in m and "repeat or lack the key" in m for m in messages)
    # The run did log where it copied from (without the password), and the captured console
    # output holds the run's log too: the searches below looked at real text.
    assert f"{READER}@127.0.0.1:{any_pg.cluster.port}/{any_pg.source_db}" in traces
    assert "public.missing: source table public.missing does not exist" in err
    _assert_no_secret(traces + out + err, source_url, target_url)


@pytest.mark.integration
def test_no_password_when_the_credentials_are_wrong(
    any_pg: PgPair, secret_roles: tuple[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    source_url, target_url = secret_roles
    wrong = "S3cr3t-pw-WRONG"
    bad_source = source_url.replace(PASSWORD, wrong)
    any_pg.source("CREATE TABLE items (id int PRIMARY KEY)")
    # The error itself.
    with pytest.raises(ConnectError) as caught, PostgresResource(url=bad_source).connect():
        pass
    assert "password authentication failed" in str(caught.value)
    assert wrong not in str(caught.value) and "postgresql://" not in str(caught.value)
    # And a whole run with it.
    defs = build_definitions(
        {"tables": [{"source": "public.items"}]}, source_url=bad_source, target_url=target_url
    )
    result, traces = _run_everything(defs)
    out, err = capfd.readouterr()
    assert not result.success
    assert "password authentication failed" in traces
    assert wrong not in traces + out + err
    _assert_no_secret(traces + out + err, bad_source, source_url, target_url)


# --- least privileges ----------------------------------------------------------------------------

MIN_READER = "sc_min_reader"
MIN_WRITER = "sc_min_writer"


@pytest.fixture
def minimal_roles(any_pg: PgPair) -> Iterator[tuple[str, str]]:
    """A source role with CONNECT + USAGE + SELECT on one table, and a target role with
    CONNECT, USAGE + CREATE on schema public and DML on one existing table it does not own
    (no CREATE on the database, no ownership)."""
    cluster = any_pg.cluster
    any_pg.source(
        "CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL)",
        "INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 100) g",
    )
    any_pg.target(
        "CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL)",
        "INSERT INTO items SELECT g, 'stale' FROM generate_series(1, 50) g",
        "INSERT INTO items VALUES (1000, 'gone from the source')",
    )
    with cluster.connect() as conn:
        for role in (MIN_READER, MIN_WRITER):
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(PASSWORD)
                )
            )
        for db, role in ((any_pg.source_db, MIN_READER), (any_pg.target_db, MIN_WRITER)):
            conn.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                    sql.Identifier(db), sql.Identifier(role)
                )
            )
    any_pg.source(
        f"GRANT USAGE ON SCHEMA public TO {MIN_READER}",
        f"GRANT SELECT ON items TO {MIN_READER}",
    )
    any_pg.target(
        f"GRANT USAGE, CREATE ON SCHEMA public TO {MIN_WRITER}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON items TO {MIN_WRITER}",
    )
    try:
        yield (
            cluster.url(any_pg.source_db, user=MIN_READER, password=PASSWORD),
            cluster.url(any_pg.target_db, user=MIN_WRITER, password=PASSWORD),
        )
    finally:
        any_pg.drop()
        with cluster.connect() as conn:
            for role in (MIN_READER, MIN_WRITER):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.mark.integration
def test_least_privileges_suffice_for_an_existing_table(
    any_pg: PgPair, minimal_roles: tuple[str, str]
) -> None:
    source_url, target_url = minimal_roles
    source, target = PostgresResource(url=source_url), PostgresResource(url=target_url)
    for mode, diff in (("merge", True), ("sync", True), ("merge", False), ("sync", False)):
        done = runner.replicate(
            table_spec({"source": "public.items", "mode": mode, "diff": diff}), source, target
        )
        assert done.result.path == ("diff" if diff else "staged")
        assert done.report is not None and done.report.passed, done.report
    assert any_pg.target_rows(
        "SELECT count(*), count(*) FILTER (WHERE v = 'stale') FROM items"
    ) == [(100, 0)]


@pytest.mark.integration
def test_least_privileges_suffice_for_a_new_table_in_an_existing_schema(
    any_pg: PgPair, minimal_roles: tuple[str, str]
) -> None:
    source_url, target_url = minimal_roles
    done = runner.replicate(
        table_spec({"source": "public.items", "target": "public.items_copy"}),
        PostgresResource(url=source_url),
        PostgresResource(url=target_url),
    )
    assert done.result.created_table and done.report is not None and done.report.passed
