"""Two PostgreSQL clusters on loopback, one source and one target, with durable settings.

The clusters run with the server defaults that matter for a fair measurement (`fsync`,
`synchronous_commit` on: `fast=False`); only the port, the listen address and
`shared_buffers = 128MB` come from :class:`~stagecopy_dagster.local.LocalCluster`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from stagecopy_dagster.local import (
    LocalCluster,
    PostgresInstall,
    embedded_install,
    system_install,
)

SOURCE_DB = "bench_source"
TARGET_DB = "bench_target"


@dataclass(frozen=True)
class Endpoint:
    """One database: how psycopg and psql reach it (the password stays out of argv)."""

    cluster: LocalCluster
    dbname: str

    @property
    def url(self) -> str:
        """A libpq URL with the superuser's password (for psycopg in this process)."""
        return self.cluster.url(self.dbname)

    @property
    def psql_env(self) -> Mapping[str, str]:
        """Environment for a `psql` child: host, port, user, database and PGPASSWORD."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(
            PGHOST=self.cluster.host,
            PGPORT=str(self.cluster.port),
            PGUSER=self.cluster.superuser,
            PGDATABASE=self.dbname,
            PGPASSWORD=self.cluster.password,
            PGAPPNAME="stagecopy-bench",
        )
        return env


@dataclass(frozen=True)
class BenchClusters:
    """The running source and target."""

    install: PostgresInstall
    source: Endpoint
    target: Endpoint

    def psql(self) -> Path:
        """The install's own psql (the same major version as the servers)."""
        found = self.install.tool("psql")
        if found.is_file():
            return found
        fallback = shutil.which("psql")
        if fallback is None:
            raise FileNotFoundError(f"no psql in {self.install.bin_dir} nor on PATH")
        return Path(fallback)


def pick_install(version: int) -> PostgresInstall:
    """The embedded PostgreSQL 18, or the system install for `--pg 15`."""
    if version == embedded_install().version:
        return embedded_install()
    system = system_install()
    if system is None or system.version != version:
        raise SystemExit(
            f"PostgreSQL {version} is not installed here (embedded: 18, system: "
            f"{system.version if system else 'none'})"
        )
    return system


@contextmanager
def running_clusters(
    version: int, workdir: Path | None, *, keep: bool = False
) -> Iterator[BenchClusters]:
    """Start a source and a target cluster in `workdir` (a fresh temp dir by default)."""
    install = pick_install(version)
    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="stagecopy-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)  # the server runs as another OS user when we are root
    clusters = [
        LocalCluster(base / f"{side}-pg{install.version}", install=install, fast=False)
        for side in ("source", "target")
    ]
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            for future in [pool.submit(c.start) for c in clusters]:
                future.result()
        source, target = clusters
        source.create_database(SOURCE_DB)
        target.create_database(TARGET_DB)
        yield BenchClusters(install, Endpoint(source, SOURCE_DB), Endpoint(target, TARGET_DB))
    finally:
        for cluster in clusters:
            try:
                cluster.stop(mode="fast")
            except Exception as exc:  # keep stopping the other one
                print(f"warning: could not stop {cluster.data_dir}: {exc}")
        if not keep and workdir is None:
            shutil.rmtree(base, ignore_errors=True)


def server_settings(endpoint: Endpoint) -> dict[str, str]:
    """The settings that shape the numbers, as the server reports them."""
    names = [
        "server_version",
        "fsync",
        "synchronous_commit",
        "wal_level",
        "shared_buffers",
        "max_wal_size",
        "work_mem",
        "maintenance_work_mem",
    ]
    with psycopg.connect(endpoint.url) as conn:
        rows = conn.execute(
            "SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name = ANY(%s)",
            (names,),
        ).fetchall()
    return dict(rows)


def run_psql(psql: Path, endpoint: Endpoint, command: str) -> subprocess.CompletedProcess[bytes]:
    """Run one command with psql against `endpoint` (stop on error)."""
    return subprocess.run(
        [str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", command],
        env=dict(endpoint.psql_env),
        capture_output=True,
        check=True,
    )
