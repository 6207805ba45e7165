"""Faults during a copy: each one fails clearly, leaves the target as it was, and heals.

For every fault the run must raise a :class:`StagecopyError` that names the table and the cause;
the target table must be byte-for-byte what it was (a fingerprint of every row, before and
after); no `_stagecopy_*` staging table may survive; and the next run must succeed with a
passing integrity report. stagecopy runs as the least-privilege roles; the superuser only sets
data up and injects the faults (terminating backends, holding locks, altering tables).

The large table (300k rows of 128-character text, ~50 MB) is built once per module in the
source; each test gives the target its own stale copy (every tenth row differs), so the staged
path (UNLOGGED staging -> MERGE) runs and a half-applied copy would show in the fingerprint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, LiteralString, cast

import psycopg
import pytest
from psycopg import errors as pg_errors

from stagecopy_dagster import runner
from stagecopy_dagster.copier import CopyOptions, Progress
from stagecopy_dagster.errors import (
    CopyError,
    DuplicateKeyError,
    LockTimeoutError,
    SchemaMismatchError,
    SourceError,
    SpecError,
    TransientCopyError,
    is_transient,
)
from stagecopy_dagster.resources import PostgresResource
from stagecopy_dagster.retry import call_with_retries
from stagecopy_dagster_tests.copyhelpers import staging_leftovers, table_spec
from stagecopy_dagster_tests.pg import PgPair, PgPairFactory

BIG_ROWS = 300_000
BIG_TABLE = (
    "CREATE TABLE {name} (id bigint PRIMARY KEY, grp int NOT NULL, payload text NOT NULL)",
    # Every tenth row of a stale target differs from the source.
    "INSERT INTO {name} SELECT g, g % 97, "
    "CASE WHEN {stale} AND g % 10 = 0 THEN 'stale ' || g ELSE repeat(md5(g::text), 4) END "
    f"FROM generate_series(1, {BIG_ROWS}) g",
    "ANALYZE {name}",
)

#: stagecopy's sessions on this database running a statement like any of %s (even if idle now).
_STAGECOPY_RUNNING = (
    "SELECT pid, state, wait_event_type, wait_event FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
    "AND application_name = 'stagecopy' AND query ILIKE ANY(%s)"
)
#: What libpq reports when the server ends a session mid-stream (the FATAL may not arrive first).
_CONNECTION_LOST = "server closed the connection unexpectedly"
_TERMINATED = "terminating connection due to administrator command"
_STAGECOPY_BACKENDS = (
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND application_name = 'stagecopy'"
)


# --- helpers -------------------------------------------------------------------------------------


def big_table(name: str, *, stale: bool) -> list[str]:
    """Statements creating the large table `name` (stale: every tenth payload differs)."""
    return [s.format(name=name, stale="TRUE" if stale else "FALSE") for s in BIG_TABLE]


def fingerprint(url: str, relation: str, key: str = "id") -> tuple[Any, ...]:
    """Row count and an md5 over the md5 of every row (text form) in key order."""
    query = (
        f"SELECT count(*), md5(coalesce(string_agg(md5(t::text), '' ORDER BY {key}), '')) "
        f"FROM {relation} t"
    )
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(cast(LiteralString, query)).fetchone()
    assert row is not None
    return tuple(row)


def copy_failed(relation: str, entry: dict[str, Any]) -> str:
    """How the error of a fault in the first stream starts.

    The first stream is the diff's key stream (step `copy_keys`), or with `diff: false` the
    stream of every row into staging (step `copy`).
    """
    return f"{relation}: {'copy_keys' if entry['diff'] else 'copy'} failed: "


def relation_exists(url: str, relation: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (relation,)).fetchone()
    assert row is not None
    return bool(row[0])


def wait_until_held(
    admin: psycopg.Connection,
    patterns: list[str],
    *,
    wait_event_type: str,
    wait_event: str | None = None,
    held: bool = True,
    alive: Callable[[], bool] = lambda: True,
    timeout: float = 60.0,
) -> int:
    """The pid of the stagecopy backend running a statement like `patterns`, once it waits.

    Call this only while the test holds the backend still: from a progress callback (the client
    is inside the stream and neither reads nor writes, so the source's COPY TO blocks in
    `ClientWrite` once the socket buffers fill, and the target's COPY FROM waits in `ClientRead`
    for data or the end of the copy), or while a session of the test holds a lock the statement
    needs (`Lock`). Such a wait, once reached, lasts until the test lets go: polling for it
    cannot miss it. With `held`, the statement is already running when this is called, so a
    statement that has ended is a failure at once (e.g. a stream small enough to fit into the
    socket buffers finished before the fault): the fault would hit another step.
    """
    deadline = time.monotonic() + timeout
    while True:
        rows = admin.execute(_STAGECOPY_RUNNING, (patterns,)).fetchall()
        for pid, state, event_type, event in rows:
            held = state == "active" and event_type == wait_event_type
            if held and (wait_event is None or event == wait_event):
                return int(pid)
        running = [r for r in rows if r[1] == "active"]
        assert running or not held, (
            f"the held statement {patterns} has ended: {rows} (a COPY out fits into the socket "
            "buffers when its size is below about net.ipv4.tcp_wmem's maximum)"
        )
        assert alive(), f"the run ended before a statement {patterns} waited: {rows}"
        assert time.monotonic() < deadline, (
            f"no stagecopy backend running {patterns} waited on {wait_event_type} "
            f"{wait_event or ''} within {timeout} s: {rows}"
        )
        time.sleep(0.005)


def terminate(admin: psycopg.Connection, pid: int) -> None:
    """Terminate backend `pid` and return once it is gone (its transaction rolled back)."""
    # With a timeout, pg_terminate_backend waits until the backend has exited.
    row = admin.execute("SELECT pg_terminate_backend(%s, 60000)", (pid,)).fetchone()
    assert row is not None and row[0], f"backend {pid} did not terminate within 60 s"
    left = admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    assert left is None, f"backend {pid} is still in pg_stat_activity"


#: Where the client holds each side of a stream still: the source COPY TO blocks writing to it,
#: the target COPY FROM waits for its data.
HELD_ON = {"source": "ClientWrite", "target": "ClientRead"}


class OnFirstReport:
    """A progress callback that runs `fault` on the first report, then only counts reports.

    With `CopyOptions(progress_interval=0)` the copier reports after every write of ~64 KiB,
    from inside the stream, while the source's COPY TO and the target's COPY FROM are both
    open: a fault injected from the first report lands mid-stream by construction. (The large
    table's first stream is far longer than one write, so the first report is never the one
    a finished stream sends.)
    """

    def __init__(self, fault: Callable[[], None]) -> None:
        self.fault = fault
        self.reports = 0

    def __call__(self, progress: Progress) -> None:
        self.reports += 1
        if self.reports == 1:
            self.fault()


def terminate_mid_stream(admin_url: str, side: str) -> Callable[[], None]:
    """A fault: terminate the `side` ("source" or "target") backend of the stream now held."""

    def fault() -> None:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            pid = wait_until_held(
                admin, ["COPY%"], wait_event_type="Client", wait_event=HELD_ON[side]
            )
            terminate(admin, pid)

    return fault


def every_write(target: PostgresResource) -> CopyOptions:
    """The target resource's copy options, reporting progress after every write."""
    return dataclasses.replace(target.copy_options(), progress_interval=0)


def wait_until_no_backends(*admin_urls: str, timeout: float = 30.0) -> None:
    """Wait until no stagecopy session is left on any of the databases."""
    deadline = time.monotonic() + timeout
    for url in admin_urls:
        with psycopg.connect(url, autocommit=True) as conn:
            while True:
                row = conn.execute(_STAGECOPY_BACKENDS).fetchone()
                if row is not None and row[0] == 0:
                    break
                assert time.monotonic() < deadline, "stagecopy backends still connected"
                time.sleep(0.02)


def resources(
    pg: PgPair, *, retries: int = 3, lock_timeout: str = "2s", statement_timeout: str = "0"
) -> tuple[PostgresResource, PostgresResource]:
    """The least-privilege source and target resources."""
    return (
        PostgresResource(url=pg.source_url, statement_timeout=statement_timeout),
        PostgresResource(url=pg.target_url, lock_timeout=lock_timeout, retries=retries),
    )


def in_thread(fn: Callable[[], Any]) -> tuple[ThreadPoolExecutor, Future[Any]]:
    pool = ThreadPoolExecutor(max_workers=1)
    return pool, pool.submit(fn)


def assert_heals(
    pg: PgPair, entry: dict[str, Any], *, source: str | tuple[Any, ...], target: str
) -> None:
    """The next run succeeds, passes its integrity check, and the target equals the source.

    `source` is the source relation, or its fingerprint when already known.
    """
    done = runner.replicate(table_spec(entry), *resources(pg))
    assert done.report is not None and done.report.passed, done.report
    expected = source if isinstance(source, tuple) else fingerprint(pg.source_admin_url, source)
    assert fingerprint(pg.target_admin_url, target) == expected
    assert staging_leftovers(pg) == []


# --- the large table -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big(pg18: PgPairFactory) -> Iterator[PgPair]:
    """A pair whose source holds the large table `public.big` (built once per module)."""
    pair = pg18("faults_big")
    pair.source(*big_table("big", stale=False))
    try:
        yield pair
    finally:
        pair.drop()


@pytest.fixture(scope="module")
def big_print(big: PgPair) -> tuple[Any, ...]:
    """The fingerprint of the source's `public.big` (which no test changes)."""
    return fingerprint(big.source_admin_url, "public.big")


@pytest.fixture(params=[True, False], ids=["diff", "stream-all"])
def big_target(big: PgPair, request: pytest.FixtureRequest) -> Iterator[tuple[str, dict[str, Any]]]:
    """A stale copy of `big` in a target schema of this test's own: (relation, spec entry).

    Each test runs on both re-copy paths: the diff (a stream of keys and row hashes, then the
    changed rows) and `diff: false` (every row streamed into staging).
    """
    name = request.node.name.removeprefix("test_").replace("[", "_").rstrip("]")
    schema = f"f_{name[:30]}_{request.param_index}"
    relation = f"{schema}.big"
    big.target(f"CREATE SCHEMA {schema}", *big_table(relation, stale=True))
    try:
        yield relation, {"source": "public.big", "target": relation, "diff": request.param}
    finally:
        big.target(f"DROP SCHEMA {schema} CASCADE")


# --- backends terminated -------------------------------------------------------------------------


@pytest.mark.integration
def test_source_backend_terminated_mid_copy_fails_with_one_attempt(
    big: PgPair, big_target: tuple[str, dict[str, Any]], big_print: tuple[Any, ...]
) -> None:
    relation, entry = big_target
    before = fingerprint(big.target_admin_url, relation)
    source, target = resources(big, retries=1)
    fault = OnFirstReport(terminate_mid_stream(big.source_admin_url, "source"))
    with pytest.raises(TransientCopyError) as caught:
        runner.replicate(
            table_spec(entry), source, target, options=every_write(target), progress=fault
        )
    message = str(caught.value)
    assert caught.value.table == relation
    assert message.startswith(copy_failed(relation, entry)), message
    assert _CONNECTION_LOST in message or _TERMINATED in message, message
    assert fingerprint(big.target_admin_url, relation) == before
    assert staging_leftovers(big) == []
    assert_heals(big, entry, source=big_print, target=relation)


@pytest.mark.integration
def test_source_backend_terminated_mid_copy_is_retried(
    big: PgPair, big_target: tuple[str, dict[str, Any]], big_print: tuple[Any, ...]
) -> None:
    relation, entry = big_target
    retried: list[BaseException] = []
    source, target = resources(big, retries=3)
    fault = OnFirstReport(terminate_mid_stream(big.source_admin_url, "source"))
    done = runner.replicate(
        table_spec(entry),
        source,
        target,
        options=every_write(target),
        progress=fault,
        on_retry=lambda attempt, exc, delay: retried.append(exc),
    )
    assert len(retried) == 1 and isinstance(retried[0], TransientCopyError)
    assert str(retried[0]).startswith(copy_failed(relation, entry)), retried[0]
    assert done.report is not None and done.report.passed
    copied = BIG_ROWS // 10 if entry["diff"] else BIG_ROWS  # the diff copies the stale tenth
    assert done.result.rows_copied == copied and done.result.updated == BIG_ROWS // 10
    assert fingerprint(big.target_admin_url, relation) == big_print
    assert staging_leftovers(big) == []


@pytest.mark.integration
def test_target_backend_terminated_mid_copy(
    big: PgPair, big_target: tuple[str, dict[str, Any]], big_print: tuple[Any, ...]
) -> None:
    relation, entry = big_target
    before = fingerprint(big.target_admin_url, relation)
    source, target = resources(big, retries=1)
    fault = OnFirstReport(terminate_mid_stream(big.target_admin_url, "target"))
    with pytest.raises(TransientCopyError) as caught:
        runner.replicate(
            table_spec(entry), source, target, options=every_write(target), progress=fault
        )
    assert caught.value.table == relation
    assert str(caught.value).startswith(copy_failed(relation, entry)), caught.value
    assert _CONNECTION_LOST in str(caught.value) or _TERMINATED in str(caught.value)
    wait_until_no_backends(big.target_admin_url)
    assert fingerprint(big.target_admin_url, relation) == before
    assert staging_leftovers(big) == []
    assert_heals(big, entry, source=big_print, target=relation)


@pytest.mark.integration
def test_target_backend_terminated_mid_merge(pg: PgPair) -> None:
    """The MERGE is held on a row lock by an admin session, so it is caught for certain.

    The target is already full and one locked row differs at the source, so the staged path
    runs and its MERGE waits on that row; the MERGE (`MERGE INTO` on 15/16, `WITH m AS (MERGE`
    with RETURNING on 17+) is then terminated mid-statement.
    """
    for side in (pg.source, pg.target):
        side(
            "CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL)",
            "INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 5000) g",
        )
    pg.source("UPDATE items SET v = 'changed' WHERE id IN (1, 2500, 5000)")
    entry = {"source": "public.items"}
    before = fingerprint(pg.target_admin_url, "items")
    with psycopg.connect(pg.target_admin_url) as holder:
        holder.execute("SELECT * FROM items WHERE id = 2500 FOR UPDATE")
        pool, future = in_thread(
            lambda: runner.replicate(
                table_spec(entry), *resources(pg, retries=1, lock_timeout="30s")
            )
        )
        with pool, psycopg.connect(pg.target_admin_url, autocommit=True) as admin:
            merge = wait_until_held(
                admin,
                ["MERGE%", "WITH m AS (MERGE%"],
                wait_event_type="Lock",
                held=False,
                alive=lambda: not future.done(),
            )
            terminate(admin, merge)
            with pytest.raises(TransientCopyError) as caught:
                future.result(timeout=60)
        holder.rollback()
    assert caught.value.table == "public.items"
    assert str(caught.value).startswith("public.items: merge failed"), caught.value
    assert _TERMINATED in str(caught.value) or _CONNECTION_LOST in str(caught.value)
    wait_until_no_backends(pg.target_admin_url)
    assert fingerprint(pg.target_admin_url, "items") == before
    assert staging_leftovers(pg) == []
    assert_heals(pg, entry, source="items", target="items")


_KILLED_COPY = """
import dataclasses, json, os, time
from stagecopy_dagster import runner
from stagecopy_dagster.resources import PostgresResource
from stagecopy_dagster.spec import load_spec

def hold(progress):
    # Called from inside the stream: say so, then wait here for the SIGKILL.
    print("streaming", flush=True)
    while True:
        time.sleep(60)

target = PostgresResource(url=os.environ["TARGET_URL"])
runner.replicate(
    load_spec({"tables": [json.loads(os.environ["ENTRY"])]}).tables[0],
    PostgresResource(url=os.environ["SOURCE_URL"]),
    target,
    options=dataclasses.replace(target.copy_options(), progress_interval=0),
    progress=hold,
)
"""


@pytest.mark.integration
def test_copying_process_killed_mid_copy(
    big: PgPair, big_target: tuple[str, dict[str, Any]], big_print: tuple[Any, ...]
) -> None:
    """The child holds itself inside its first stream (see `_KILLED_COPY`) and is killed there."""
    relation, entry = big_target
    before = fingerprint(big.target_admin_url, relation)
    env = {
        **os.environ,
        "SOURCE_URL": big.source_url,
        "TARGET_URL": big.target_url,
        "ENTRY": json.dumps(entry),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_COPY],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        if not ready or proc.stdout.readline() != "streaming\n":
            proc.kill()
            pytest.fail(f"the copy never streamed (exit {proc.wait()}): {proc.stderr.read()}")
        # Held: the target's COPY is open, waiting for rows that will never come.
        with psycopg.connect(big.target_admin_url, autocommit=True) as admin:
            wait_until_held(admin, ["COPY%"], wait_event_type="Client", wait_event="ClientRead")
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    # The servers notice the dropped connections and roll the target transaction back.
    wait_until_no_backends(big.source_admin_url, big.target_admin_url)
    assert fingerprint(big.target_admin_url, relation) == before
    assert staging_leftovers(big) == []
    assert_heals(big, entry, source=big_print, target=relation)


# --- locks and timeouts --------------------------------------------------------------------------


def _small_table(pg: PgPair) -> dict[str, Any]:
    pg.source(
        "CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL)",
        "INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 100) g",
    )
    entry = {"source": "public.items"}
    runner.replicate(table_spec(entry), *resources(pg))
    pg.source("UPDATE items SET v = 'new' WHERE id <= 10")
    return entry


@pytest.mark.integration
def test_target_table_locked_by_another_session(any_pg: PgPair) -> None:
    entry = _small_table(any_pg)
    before = fingerprint(any_pg.target_admin_url, "items")
    with psycopg.connect(any_pg.target_admin_url) as holder:
        holder.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(LockTimeoutError) as caught:
            runner.replicate(table_spec(entry), *resources(any_pg, lock_timeout="2s"))
        elapsed = time.monotonic() - started
        holder.rollback()
    # lock_timeout bounds the wait, and a lock timeout is not retried.
    assert 1.9 <= elapsed < 10, elapsed
    assert caught.value.table == "public.items" and not is_transient(caught.value)
    assert "locked by another session" in str(caught.value)
    assert "[SQLSTATE 55P03]" in str(caught.value)
    assert fingerprint(any_pg.target_admin_url, "items") == before
    assert staging_leftovers(any_pg) == []
    assert_heals(any_pg, entry, source="items", target="items")


@pytest.mark.integration
def test_another_run_holding_the_per_target_lock(any_pg: PgPair) -> None:
    """A run that cannot get the per-target advisory lock in time fails, not queue forever."""
    entry = _small_table(any_pg)
    before = fingerprint(any_pg.target_admin_url, "items")
    with psycopg.connect(any_pg.target_admin_url) as holder:
        holder.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('stagecopy:public.items', 0))"
        )
        started = time.monotonic()
        with pytest.raises(LockTimeoutError) as caught:
            runner.replicate(table_spec(entry), *resources(any_pg, lock_timeout="2s"))
        elapsed = time.monotonic() - started
        holder.rollback()
    assert 1.9 <= elapsed < 10, elapsed
    assert str(caught.value).startswith("public.items: lock: the target is locked")
    assert fingerprint(any_pg.target_admin_url, "items") == before
    assert_heals(any_pg, entry, source="items", target="items")


@pytest.mark.integration
def test_statement_timeout_on_the_source(big: PgPair) -> None:
    """The first report holds the stream until the source COPY has outlived its timeout.

    The COPY began before the report, so after the hold it has run for longer than 100 ms,
    unless it finished first by fitting its whole 50 MB into the socket buffers (checked). A
    COPY blocked writing to the client is cancelled as soon as it writes again (the server does
    not cancel in the middle of a message).
    """
    relation = "f_statement_timeout.big"
    entry = {"source": "public.big", "target": relation}
    source, target = resources(big, statement_timeout="100ms", retries=3)

    def outlive_the_timeout() -> None:
        time.sleep(0.5)
        with psycopg.connect(big.source_admin_url, autocommit=True) as admin:
            rows = admin.execute(_STAGECOPY_RUNNING, (["COPY%"],)).fetchall()
        # Still running (held), or already cancelled: not finished.
        assert [r[1] for r in rows] in (["active"], ["idle in transaction (aborted)"]), rows

    started = time.monotonic()
    with pytest.raises(CopyError) as caught:
        runner.replicate(
            table_spec(entry),
            source,
            target,
            options=every_write(target),
            progress=OnFirstReport(outlive_the_timeout),
        )
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert caught.value.table == relation and not is_transient(caught.value)
    assert message.startswith(f"{relation}: copy failed: canceling statement due to statement")
    assert "[SQLSTATE 57014]" in message
    # The target table did not exist and still does not (its CREATE was rolled back).
    assert not relation_exists(big.target_admin_url, relation)
    assert staging_leftovers(big) == []


# --- the target or the source changed by someone else --------------------------------------------


@pytest.mark.integration
def test_column_added_to_target_between_runs(any_pg: PgPair) -> None:
    entry = _small_table(any_pg)
    any_pg.target("ALTER TABLE items ADD COLUMN note text")
    any_pg.source("INSERT INTO items VALUES (101, 'v101')")
    done = runner.replicate(table_spec(entry), *resources(any_pg))
    assert done.report is not None and done.report.passed
    assert (done.result.inserted, done.result.updated) == (1, 10)
    assert any_pg.target_rows("SELECT count(*), count(note) FROM items") == [(101, 0)]
    assert fingerprint(any_pg.source_admin_url, "items") == fingerprint(
        any_pg.target_admin_url, "(SELECT id, v FROM items)"
    )
    assert staging_leftovers(any_pg) == []


@pytest.mark.integration
def test_column_type_changed_in_target_between_runs(any_pg: PgPair) -> None:
    entry = _small_table(any_pg)
    # Not a widening (varchar(50) -> text would be widened back by on_schema_change: evolve).
    any_pg.target("ALTER TABLE items ALTER COLUMN v TYPE bytea USING convert_to(v, 'UTF8')")
    before = fingerprint(any_pg.target_admin_url, "items")
    with pytest.raises(SchemaMismatchError) as caught:
        runner.replicate(table_spec(entry), *resources(any_pg))
    assert caught.value.table == "public.items"
    assert "v is text at the source, bytea here" in str(caught.value)
    assert fingerprint(any_pg.target_admin_url, "items") == before
    assert staging_leftovers(any_pg) == []
    # Healing takes a human decision (change the type back); then the next run succeeds.
    any_pg.target("ALTER TABLE items ALTER COLUMN v TYPE text USING convert_from(v, 'UTF8')")
    assert_heals(any_pg, entry, source="items", target="items")


@pytest.mark.integration
@pytest.mark.parametrize(
    ("change", "restore"),
    [
        (
            "DROP TABLE items",
            "CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL); "
            "INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 100) g",
        ),
        ("ALTER TABLE items RENAME TO items_old", "ALTER TABLE items_old RENAME TO items"),
    ],
    ids=["drop", "rename"],
)
def test_source_table_dropped_or_renamed(any_pg: PgPair, change: str, restore: str) -> None:
    entry = _small_table(any_pg)
    before = fingerprint(any_pg.target_admin_url, "items")
    any_pg.source(change)
    with pytest.raises(SourceError) as caught:
        runner.replicate(table_spec(entry), *resources(any_pg))
    assert caught.value.table == "public.items" and not is_transient(caught.value)
    assert "source table public.items does not exist" in str(caught.value)
    assert fingerprint(any_pg.target_admin_url, "items") == before
    assert staging_leftovers(any_pg) == []
    any_pg.source(restore)
    assert_heals(any_pg, entry, source="items", target="items")


# --- transient or terminal -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        pg_errors.SerializationFailure("could not serialize access"),
        pg_errors.DeadlockDetected("deadlock detected"),
        pg_errors.AdminShutdown("terminating connection due to administrator command"),
        pg_errors.CannotConnectNow("the database system is starting up"),
        psycopg.OperationalError("server closed the connection unexpectedly"),
        TransientCopyError("copy failed", table="public.items"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transient_errors(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        SpecError("primary_key column 'x' is not a column", table="public.items"),
        pg_errors.UniqueViolation("duplicate key value"),
        pg_errors.QueryCanceled("canceling statement due to statement timeout"),
        pg_errors.LockNotAvailable("canceling statement due to lock timeout"),
        pg_errors.UndefinedTable('relation "x" does not exist'),
        CopyError("copy failed", table="public.items"),
        LockTimeoutError("locked", table="public.items"),
        DuplicateKeyError("duplicate", table="public.items"),
        ValueError("not a database error"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_terminal_errors(error: BaseException) -> None:
    assert not is_transient(error)


def _failing(errors: list[BaseException]) -> tuple[Callable[[], str], list[int]]:
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return "done"

    return fn, calls


@pytest.mark.parametrize(
    "error",
    [SpecError("bad spec"), pg_errors.UniqueViolation("dup"), LockTimeoutError("locked")],
    ids=lambda e: type(e).__name__,
)
def test_terminal_errors_are_not_retried(error: BaseException) -> None:
    fn, calls = _failing([error])
    sleeps: list[float] = []
    with pytest.raises(type(error)):
        call_with_retries(fn, attempts=5, sleep=sleeps.append)
    assert len(calls) == 1 and sleeps == []


def test_transient_errors_are_retried_with_backoff() -> None:
    fn, calls = _failing([pg_errors.DeadlockDetected("x"), psycopg.OperationalError("lost")])
    sleeps: list[float] = []
    retried: list[int] = []
    result = call_with_retries(
        fn,
        attempts=3,
        base_delay=1.0,
        sleep=sleeps.append,
        on_retry=lambda attempt, exc, delay: retried.append(attempt),
    )
    assert result == "done" and len(calls) == 3 and retried == [1, 2]
    # Exponential backoff with jitter in [0.5, 1.0] of 1 s, then of 2 s.
    assert 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0


def test_transient_errors_give_up_after_the_attempts() -> None:
    fn, calls = _failing([pg_errors.AdminShutdown("x") for _ in range(5)])
    with pytest.raises(pg_errors.AdminShutdown):
        call_with_retries(fn, attempts=3, sleep=lambda _: None)
    assert len(calls) == 3
