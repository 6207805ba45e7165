"""Source/target database pairs on the session's PostgreSQL clusters.

Each :class:`PgPair` is two fresh databases on one cluster. Tests set data up as the superuser
(``pair.source(...)`` / ``pair.target(...)``) and run stagecopy with least-privilege roles:

* ``stagecopy_reader`` on the source: CONNECT, USAGE on the schemas, SELECT on tables, views
  and sequences. Nothing else (PUBLIC's default database privileges are revoked).
* ``stagecopy_writer`` on the target: CONNECT, CREATE and TEMPORARY on the database, owner of
  every non-system schema and relation there, so it may run DDL and DML as an owner would.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, LiteralString, cast

import psycopg
from psycopg import sql

from stagecopy_dagster.local import LocalCluster

READER = "stagecopy_reader"
WRITER = "stagecopy_writer"

# Raw SQL is fine in test fixtures; the role names are constants.
_REGRANT_READER = """
DO $$
DECLARE s name;
BEGIN
  FOR s IN SELECT nspname FROM pg_namespace
           WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'
  LOOP
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO stagecopy_reader', s);
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO stagecopy_reader', s);
    EXECUTE format('GRANT SELECT ON ALL SEQUENCES IN SCHEMA %I TO stagecopy_reader', s);
  END LOOP;
END $$
"""

# Tables first: their owned (serial / identity) sequences follow them and cannot be altered
# on their own.
_GIVE_TARGET_TO_WRITER = """
DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT nspname FROM pg_namespace
           WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'
             AND nspowner <> 'stagecopy_writer'::regrole
  LOOP
    EXECUTE format('ALTER SCHEMA %I OWNER TO stagecopy_writer', r.nspname);
  END LOOP;
  FOR r IN SELECT c.oid::regclass AS rel,
                  CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                 WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'S' THEN 'SEQUENCE'
                                 ELSE 'TABLE' END AS kind
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
             AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
             AND c.relowner <> 'stagecopy_writer'::regrole
             AND NOT (c.relkind = 'S' AND EXISTS (
                 SELECT 1 FROM pg_depend d
                 WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                   AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))
           ORDER BY c.relkind = 'S'
  LOOP
    EXECUTE format('ALTER %s %s OWNER TO stagecopy_writer', r.kind, r.rel);
  END LOOP;
END $$
"""


@dataclass(frozen=True)
class Roles:
    """Passwords of the two least-privilege roles on one cluster."""

    reader_password: str
    writer_password: str


def ensure_roles(cluster: LocalCluster) -> Roles:
    """Create (or reset the passwords of) ``stagecopy_reader`` and ``stagecopy_writer``."""
    roles = Roles(secrets.token_urlsafe(16), secrets.token_urlsafe(16))
    with cluster.connect() as conn:
        for name, password in ((READER, roles.reader_password), (WRITER, roles.writer_password)):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
            verb = sql.SQL("ALTER ROLE" if exists else "CREATE ROLE")
            conn.execute(
                sql.SQL("{} {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                    verb, sql.Identifier(name), sql.Literal(password)
                )
            )
    return roles


def _run(url: str, statements: Sequence[str]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(cast(LiteralString, statement))


def _rows(url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(cast(LiteralString, query), params).fetchall()


@dataclass
class PgPair:
    """A fresh source and target database on one cluster, with admin and role URLs."""

    version: int
    cluster: LocalCluster
    source_db: str
    target_db: str
    source_admin_url: str
    target_admin_url: str
    source_url: str
    target_url: str
    dropped: bool = field(default=False, repr=False)

    @property
    def label(self) -> str:
        """``"pg18"`` / ``"pg15"``."""
        return f"pg{self.version}"

    def source(self, *statements: str) -> None:
        """Run ``statements`` as superuser on the source, then re-grant the reader's SELECTs."""
        _run(self.source_admin_url, [*statements, _REGRANT_READER])

    def target(self, *statements: str) -> None:
        """Run ``statements`` as superuser on the target, then hand every object to the writer."""
        _run(self.target_admin_url, [*statements, _GIVE_TARGET_TO_WRITER])

    def source_rows(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Query the source as superuser."""
        return _rows(self.source_admin_url, query, params)

    def target_rows(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Query the target as superuser."""
        return _rows(self.target_admin_url, query, params)

    def drop(self) -> None:
        """Drop both databases, disconnecting whoever is still connected."""
        if self.dropped:
            return
        with self.cluster.connect() as conn:
            for name in (self.source_db, self.target_db):
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
        self.dropped = True


class PgPairFactory:
    """Makes :class:`PgPair` objects on one cluster; drops the leftovers on :meth:`close`."""

    def __init__(self, cluster: LocalCluster, roles: Roles) -> None:
        self.cluster = cluster
        self.roles = roles
        self.last_seconds = 0.0
        self._pairs: list[PgPair] = []
        self._lock = threading.Lock()

    @property
    def label(self) -> str:
        return f"pg{self.cluster.version}"

    def __call__(self, hint: str = "") -> PgPair:
        """Create a source and a target database named after ``hint`` (e.g. the test name)."""
        started = time.monotonic()
        stem = re.sub(r"[^a-z0-9]+", "_", hint.lower()).strip("_")[:32]
        token = secrets.token_hex(4)
        source_db = f"sc_{stem}_{token}_src" if stem else f"sc_{token}_src"
        target_db = f"sc_{stem}_{token}_tgt" if stem else f"sc_{token}_tgt"
        cluster = self.cluster
        with cluster.connect() as conn:
            for name in (source_db, target_db):
                ident = sql.Identifier(name)
                conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(ident))
                conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(ident))
            conn.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                    sql.Identifier(source_db), sql.Identifier(READER)
                )
            )
            conn.execute(
                sql.SQL("GRANT CONNECT, CREATE, TEMPORARY ON DATABASE {} TO {}").format(
                    sql.Identifier(target_db), sql.Identifier(WRITER)
                )
            )
        pair = PgPair(
            version=cluster.version,
            cluster=cluster,
            source_db=source_db,
            target_db=target_db,
            source_admin_url=cluster.url(source_db),
            target_admin_url=cluster.url(target_db),
            source_url=cluster.url(source_db, user=READER, password=self.roles.reader_password),
            target_url=cluster.url(target_db, user=WRITER, password=self.roles.writer_password),
        )
        # Objects the superuser creates later in the source are readable without a re-grant.
        superuser = sql.Identifier(cluster.superuser)
        reader = sql.Identifier(READER)
        with psycopg.connect(pair.source_admin_url, autocommit=True) as conn:
            for template in (
                "ALTER DEFAULT PRIVILEGES FOR ROLE {} GRANT USAGE ON SCHEMAS TO {}",
                "ALTER DEFAULT PRIVILEGES FOR ROLE {} GRANT SELECT ON TABLES TO {}",
                "ALTER DEFAULT PRIVILEGES FOR ROLE {} GRANT SELECT ON SEQUENCES TO {}",
            ):
                conn.execute(sql.SQL(template).format(superuser, reader))
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(reader))
        _run(pair.target_admin_url, [_GIVE_TARGET_TO_WRITER])
        with self._lock:
            self._pairs.append(pair)
        self.last_seconds = time.monotonic() - started
        return pair

    def close(self) -> None:
        """Drop every pair this factory made that is still there."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            pair.drop()
