"""A local PostgreSQL cluster for the demo, the tests and the benchmark.

:class:`LocalCluster` creates a cluster in a data directory, starts it on ``127.0.0.1`` with
password (SCRAM) authentication, and attaches to it instead when a server for that data
directory is already running. As root, the server runs as another OS user
(:mod:`stagecopy_dagster.local.osuser`), from a copy of the binaries that user can reach
(:mod:`stagecopy_dagster.local.runtime`) when the originals are out of its reach.

Example:
    >>> with LocalCluster(Path("/tmp/demo/pgdata")) as cluster:  # doctest: +SKIP
    ...     url = cluster.create_database("source")
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path
from types import TracebackType
from typing import Any, LiteralString, cast
from urllib.parse import quote

import psycopg
from psycopg import sql

from stagecopy_dagster.local import conf
from stagecopy_dagster.local.conf import HOST
from stagecopy_dagster.local.errors import ClusterError, ClusterStartError, PortInUseError
from stagecopy_dagster.local.installs import PostgresInstall, available_installs, embedded_install
from stagecopy_dagster.local.pidfile import PidFile, read_pid_file
from stagecopy_dagster.local.server import ServerControl

__all__ = ["LocalCluster"]

logger = logging.getLogger(__name__)

_START_ATTEMPTS = 3  # only when the port was picked by us and someone else took it meanwhile


class LocalCluster:
    """A PostgreSQL cluster in ``data_dir``.

    The server listens on ``127.0.0.1:<port>`` (TCP, ``scram-sha-256`` password authentication)
    and on a unix socket in ``data_dir/run``; it logs to ``data_dir/log/postgres.log``. Settings
    are rewritten at every :meth:`start` into ``data_dir/stagecopy.conf``, which
    ``postgresql.conf`` includes, so ``ALTER SYSTEM`` still overrides them.

    A generated superuser password is kept in ``<data_dir>.pw`` beside the data directory (mode
    0600, owned by this process' user) so that a later :class:`LocalCluster` on the same
    directory can attach. An explicit ``password`` is used as given and not stored.

    Used as a context manager, the cluster is started on entry and stopped on exit, unless it
    only attached to a server someone else started: that one is left running.

    Example:
        >>> cluster = LocalCluster(Path("/tmp/pg"), fast=True).start()  # doctest: +SKIP
        >>> cluster.execute("CREATE ROLE reader LOGIN")  # doctest: +SKIP
        >>> cluster.stop()  # doctest: +SKIP
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        install: PostgresInstall | None = None,
        port: int | None = None,
        superuser: str = "postgres",
        password: str | None = None,
        fast: bool = False,
        start_timeout: float = 60.0,
    ) -> None:
        """Describe a cluster; nothing happens until :meth:`start`.

        Args:
            data_dir: The data directory; created (and initialised) when missing or empty.
            install: The binaries to use. Default: the install matching an existing data
                directory's version, else the embedded PostgreSQL.
            port: TCP port; default a free one (or the running server's, when attaching).
            superuser: Name of the bootstrap superuser created by ``initdb``.
            password: The superuser's password. Default: read from, or generated into,
                ``<data_dir>.pw``.
            fast: Turn off ``fsync`` and ``synchronous_commit`` (and sync in ``initdb``).
                For tests only: a crash can lose or corrupt data.
            start_timeout: Seconds to wait for the server to accept connections.
        """
        # Resolved: `$STAGECOPY_HOME/pg` may be a symlink into the runtime folder.
        self.data_dir = Path(data_dir).resolve()
        self.fast = fast
        self.start_timeout = start_timeout
        self._install = install
        self._requested_port = port
        self._superuser = superuser
        self._password = password
        self._port: int | None = None
        self._started_here = False
        self._server_control: ServerControl | None = None

    # ----------------------------------------------------------------- properties

    @property
    def install(self) -> PostgresInstall:
        """The binaries this cluster runs with."""
        if self._install is None:
            self._install = self._pick_install()
        return self._install

    @property
    def host(self) -> str:
        """The TCP address the server listens on."""
        return HOST

    @property
    def port(self) -> int:
        """The TCP port; only known once started or attached."""
        if self._port is None:
            raise ClusterError(f"cluster {self.data_dir} is not started")
        return self._port

    @property
    def version(self) -> int:
        """The major version of the data directory (or of the install, before ``initdb``)."""
        version_file = self.data_dir / "PG_VERSION"
        if version_file.is_file():
            return int(version_file.read_text().strip().split(".")[0])
        return self.install.version

    @property
    def superuser(self) -> str:
        """The bootstrap superuser's name."""
        return self._superuser

    @property
    def password(self) -> str:
        """The superuser's password (never logged)."""
        if self._password is None:
            self._password = self._load_or_create_password()
        return self._password

    @property
    def password_file(self) -> Path:
        """Where a generated superuser password is kept."""
        return self.data_dir.parent / f"{self.data_dir.name}.pw"

    @property
    def log_file(self) -> Path:
        """The server log."""
        return self._server.log_file

    @property
    def socket_dir(self) -> Path:
        """The directory of the server's unix socket."""
        return self._server.socket_dir

    @property
    def _server(self) -> ServerControl:
        """The processes and files of this cluster (binaries picked on first use)."""
        if self._server_control is None:
            self._server_control = ServerControl(
                self.data_dir, self.install, fast=self.fast, start_timeout=self.start_timeout
            )
        return self._server_control

    @property
    def is_running(self) -> bool:
        """Tell whether a server for ``data_dir`` is running now."""
        return read_pid_file(self.data_dir) is not None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> LocalCluster:
        """Initialise the data directory if needed and start the server, or attach to it.

        Idempotent: a second call, or a call on a directory whose server is already running
        (live ``postmaster.pid``), attaches and reads the port from ``postmaster.pid``.

        Returns:
            This cluster, started.

        Raises:
            ClusterStartError: ``initdb`` or ``pg_ctl start`` failed; the server log tail is
                in the message.
            ClusterError: The data directory belongs to another PostgreSQL version, or it is
                not usable (not empty and not a data directory, not traversable, ...).
        """
        running = read_pid_file(self.data_dir)
        if running is not None:
            self._check_version()
            self._attach(running)
            return self
        self._server.prepare_data_dir()
        if not (self.data_dir / "PG_VERSION").is_file():
            self._server.initdb(superuser=self.superuser, password=self.password)
        self._check_version()
        self._server.prepare_runtime_dirs()
        attempts = 1 if self._requested_port is not None else _START_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port = self._requested_port or (attempt == 1 and conf.previous_port(self.data_dir))
            port = port or conf.free_port()
            try:
                self._server.start(port)
            except PortInUseError:
                if attempt == attempts:
                    raise
                logger.info("port %d was taken meanwhile, retrying with another", port)
                continue
            self._port = port
            self._started_here = True
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (whoever started it); a no-op when it is not running.

        Args:
            mode: ``pg_ctl`` shutdown mode: ``"smart"``, ``"fast"`` or ``"immediate"``.
        """
        if read_pid_file(self.data_dir) is None:
            self._port = None
            self._started_here = False
            return
        self._server.stop(mode)
        self._port = None
        self._started_here = False

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # A server this object only attached to belongs to whoever started it.
        if self._started_here:
            self.stop()

    # ----------------------------------------------------------------- SQL helpers

    def url(
        self, dbname: str = "postgres", *, user: str | None = None, password: str | None = None
    ) -> str:
        """Return a libpq URI ``postgresql://user:pw@127.0.0.1:port/dbname``.

        Args:
            dbname: The database.
            user: The role; default the superuser.
            password: The role's password; default the superuser's when ``user`` is the
                superuser, else none.
        """
        role = user or self.superuser
        if password is None and role == self.superuser:
            password = self.password
        credentials = quote(role, safe="")
        if password is not None:
            credentials += ":" + quote(password, safe="")
        return f"postgresql://{credentials}@{HOST}:{self.port}/{quote(dbname, safe='')}"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[Any]:
        """Open an autocommit connection as the superuser; close it with ``with``."""
        return psycopg.connect(self.url(dbname), autocommit=True, connect_timeout=10)

    def execute(self, statement: str | sql.SQL | sql.Composed, dbname: str = "postgres") -> None:
        """Run one trusted statement as the superuser, in autocommit mode.

        This is an administration helper: ``statement`` is trusted SQL written by the caller
        (compose it with :mod:`psycopg.sql` when it carries names or values).
        """
        query = (
            statement
            if isinstance(statement, sql.SQL | sql.Composed)
            else sql.SQL(cast(LiteralString, statement))
        )
        with self.connect(dbname) as conn:
            conn.execute(query)

    def create_database(
        self, name: str, *, owner: str | None = None, exists_ok: bool = True
    ) -> str:
        """Create the database ``name`` from ``template0`` and return its superuser URL.

        Args:
            name: The database name.
            owner: Its owner role; default the superuser.
            exists_ok: Return quietly when it exists already (its owner is left as it is).

        Raises:
            psycopg.errors.DuplicateDatabase: It exists and ``exists_ok`` is false.
        """
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
        if owner is not None:
            statement = sql.SQL("{} OWNER {}").format(statement, sql.Identifier(owner))
        try:
            self.execute(statement)
        except psycopg.errors.DuplicateDatabase:
            if not exists_ok:
                raise
        return self.url(name)

    # ----------------------------------------------------------------- internals

    def _pick_install(self) -> PostgresInstall:
        """Choose binaries matching an existing data directory, else the embedded ones."""
        version_file = self.data_dir / "PG_VERSION"
        if version_file.is_file():
            wanted = int(version_file.read_text().strip().split(".")[0])
            for candidate in available_installs():
                if candidate.version == wanted:
                    return candidate
        return embedded_install()

    def _check_version(self) -> None:
        """Refuse binaries of another major version than the data directory's."""
        if self.version != self.install.version:
            raise ClusterError(
                f"{self.data_dir} holds a PostgreSQL {self.version} cluster; "
                f"{self.install.bin_dir} is PostgreSQL {self.install.version}"
            )

    def _attach(self, running: PidFile) -> None:
        """Use the server already running for ``data_dir``."""
        deadline = time.monotonic() + self.start_timeout
        while running.status not in ("ready", "standby") and time.monotonic() < deadline:
            time.sleep(0.1)
            refreshed = read_pid_file(self.data_dir)
            if refreshed is None:
                raise ClusterStartError(
                    self._server.with_log_tail("the running server went away"),
                    log_file=self.log_file,
                )
            running = refreshed
        if running.status not in ("ready", "standby"):
            raise ClusterStartError(
                self._server.with_log_tail(f"server pid {running.pid} is still {running.status!r}"),
                log_file=self.log_file,
            )
        if self._requested_port is not None and self._requested_port != running.port:
            raise ClusterError(
                f"{self.data_dir} is served on port {running.port}, "
                f"not the requested {self._requested_port}"
            )
        if self._port is None:
            logger.info("attached to PostgreSQL in %s on port %d", self.data_dir, running.port)
        self._port = running.port

    def _load_or_create_password(self) -> str:
        """Read the stored password, or generate and store one (mode 0600)."""
        if self.password_file.is_file():
            return self.password_file.read_text().strip()
        if (self.data_dir / "PG_VERSION").is_file():
            raise ClusterError(
                f"{self.data_dir} exists but its password file {self.password_file} does not; "
                "pass password="
            )
        password = secrets.token_urlsafe(24)
        self.password_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
        return password
