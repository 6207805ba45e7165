"""Running the server binaries of one data directory, as the right OS user.

:class:`ServerControl` owns the files and processes of a cluster: it prepares the data
directory, runs ``initdb`` and ``pg_ctl`` (as another OS user when this process is root, from
binaries that user can reach) and reads the server log for error messages.
:class:`~stagecopy_dagster.local.cluster.LocalCluster` decides when to do what.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

from stagecopy_dagster.local import conf
from stagecopy_dagster.local.conf import HOST
from stagecopy_dagster.local.errors import ClusterError, ClusterStartError, PortInUseError
from stagecopy_dagster.local.installs import PostgresInstall
from stagecopy_dagster.local.osuser import OsUser, first_unreachable, is_root, run_as, server_user
from stagecopy_dagster.local.pidfile import read_pid_file
from stagecopy_dagster.local.runtime import runnable_install

__all__ = ["ServerControl"]

logger = logging.getLogger(__name__)


class ServerControl:
    """The server processes and files of ``data_dir``, run with ``install``'s binaries."""

    def __init__(
        self, data_dir: Path, install: PostgresInstall, *, fast: bool, start_timeout: float
    ) -> None:
        """Describe the server; nothing happens until a method is called."""
        self.data_dir = data_dir
        self.install = install
        self.fast = fast
        self.start_timeout = start_timeout
        self._os_user: OsUser | None = None
        self._runnable: PostgresInstall | None = None

    @property
    def log_file(self) -> Path:
        """The server log."""
        return self.data_dir / "log" / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        """The directory of the server's unix socket."""
        return self.data_dir / "run"

    def cluster_user(self) -> OsUser | None:
        """Return the OS user to run server binaries as; ``None`` means this process' user."""
        if not is_root():
            return None
        if self._os_user is None:
            owner = self.data_dir.stat().st_uid if self.data_dir.exists() else 0
            if owner != 0 and (self.data_dir / "PG_VERSION").is_file():
                self._os_user = OsUser.from_uid(owner)
            else:
                self._os_user = server_user()
        return self._os_user

    def tool(self, name: str) -> str:
        """The path of a server binary the cluster's OS user can run."""
        if self._runnable is None:
            user = self.cluster_user()
            reachable = user is None or first_unreachable(self.install.bin_dir, user) is None
            self._runnable = self.install if reachable else runnable_install(self.install)
        return str(self._runnable.tool(name))

    def run(self, args: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
        """Run a server binary, as the cluster's OS user when this process is root."""
        return run_as(self.cluster_user(), args, timeout=timeout, home=self.data_dir)

    def chown(self, path: Path) -> None:
        """Give ``path`` to the cluster's OS user (a no-op when not root)."""
        user = self.cluster_user()
        if user is not None:
            os.chown(path, user.uid, user.gid)

    def prepare_data_dir(self) -> None:
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
        user = self.cluster_user()
        if user is None:
            return
        blocked = first_unreachable(self.data_dir.parent, user)
        if blocked is not None:
            raise ClusterError(
                f"OS user {user.name} (PostgreSQL refuses to run as root) cannot enter {blocked} "
                f"to reach {self.data_dir}; choose a data directory it can reach (e.g. under "
                "/var/tmp), or run as a non-root user"
            )
        if not initialised:
            self.chown(self.data_dir)
            self.data_dir.chmod(0o700)

    def initdb(self, *, superuser: str, password: str) -> None:
        """Create the cluster: UTF8, locale C.UTF-8 (else C), SCRAM auth, password from file."""
        fd, pwfile_name = tempfile.mkstemp(prefix=".initdb-pw-", dir=self.data_dir.parent)
        pwfile = Path(pwfile_name)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(password + "\n")
            self.chown(pwfile)
            started = time.monotonic()
            for locale_name in ("C.UTF-8", "C"):
                args = [
                    self.tool("initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    superuser,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    f"--locale={locale_name}",
                ]
                if self.fast:
                    args.append("--no-sync")
                result = self.run(args, timeout=300)
                if result.returncode == 0:
                    break
                output = result.stdout + result.stderr
                if locale_name != "C" and "locale" in output.lower():
                    logger.info("locale %s unavailable, falling back to C", locale_name)
                    continue
                lines = output.strip().splitlines() or ["no output"]
                raise ClusterStartError(
                    f"initdb failed for {self.data_dir}: {lines[-1]}\n{output.strip()}"
                )
        finally:
            pwfile.unlink(missing_ok=True)
        with (self.data_dir / "postgresql.conf").open("a") as handle:
            handle.write(
                "\n# Added by stagecopy: LocalCluster.start() rewrites this file at each start.\n"
                f"{conf.INCLUDE_LINE}\n"
            )
        logger.info(
            "initialised PostgreSQL %d cluster in %s (%.1fs)",
            self.install.version,
            self.data_dir,
            time.monotonic() - started,
        )

    def prepare_runtime_dirs(self) -> None:
        """Create ``log`` and ``run`` and make sure ``postgresql.conf`` includes our settings."""
        for path in (self.log_file.parent, self.socket_dir):
            path.mkdir(mode=0o700, exist_ok=True)
            self.chown(path)
        if not self.log_file.exists():
            self.log_file.touch(mode=0o600)
            self.chown(self.log_file)
        postgresql_conf = self.data_dir / "postgresql.conf"
        if conf.INCLUDE_LINE not in postgresql_conf.read_text():
            with postgresql_conf.open("a") as handle:
                handle.write(f"\n{conf.INCLUDE_LINE}\n")

    def write_settings(self, port: int) -> None:
        """Write ``stagecopy.conf`` for a start on ``port``."""
        path = self.data_dir / conf.CONF_FILE
        path.write_text(conf.settings_text(port=port, socket_dir=self.socket_dir, fast=self.fast))
        self.chown(path)

    def start(self, port: int) -> None:
        """Start the server on ``port`` and wait until it accepts connections."""
        self.write_settings(port)
        log_offset = self.log_file.stat().st_size
        started = time.monotonic()
        result = self.run(
            [
                self.tool("pg_ctl"),
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
            new_log = self.log_since(log_offset)
            message = self.with_log_tail(
                f"pg_ctl start failed for {self.data_dir} on port {port}: "
                f"{(result.stdout + result.stderr).strip()}"
            )
            if "could not bind" in new_log or "Address already in use" in new_log:
                raise PortInUseError(message, log_file=self.log_file)
            raise ClusterStartError(message, log_file=self.log_file)
        logger.info(
            "started PostgreSQL %d in %s on %s:%d (%.1fs)",
            self.install.version,
            self.data_dir,
            HOST,
            port,
            time.monotonic() - started,
        )

    def log_since(self, offset: int) -> str:
        """Return the server log written after byte ``offset``."""
        try:
            with self.log_file.open("rb") as handle:
                handle.seek(offset)
                return handle.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def with_log_tail(self, message: str, lines: int = 30) -> str:
        """Append the last ``lines`` lines of the server log to ``message``."""
        try:
            tail = self.log_file.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"{message}\n(no server log at {self.log_file})"
        return f"{message}\n--- last lines of {self.log_file} ---\n" + "\n".join(tail)

    def stop(self, mode: str) -> None:
        """Stop the server with ``pg_ctl stop -m mode``; a no-op when it is not running."""
        if read_pid_file(self.data_dir) is None:
            return
        logger.info("stopping PostgreSQL in %s (%s)", self.data_dir, mode)
        result = self.run(
            [
                self.tool("pg_ctl"),
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
        if result.returncode != 0 and read_pid_file(self.data_dir) is not None:
            raise ClusterError(f"pg_ctl stop failed for {self.data_dir}: {result.stderr.strip()}")
