"""`stagecopy demo` as a server under test: start it, wait for Dagster, ask GraphQL, stop it.

The demo starts (or attaches to) the embedded PostgreSQL under `$STAGECOPY_HOME`, seeds it,
runs the main job and then *execs* `dagster dev`, so the process started here becomes the
Dagster webserver's parent process. It runs in its own session (process group), so that what
it leaves behind can be found, and killed if it must be.

The stop signals `dagster dev` alone, as `kill PID`, `docker stop` and Kubernetes do, and
`dagster dev` stops its webserver, daemon and code servers in order. A SIGTERM to the whole
group races with Dagster: the code server dies at once, and `dagster dev`, still waiting for its
webserver, restarts it ("Code server process has exited with code 0. Restarting"). The new code
server then outlives `dagster dev` until its 45 s heartbeat timeout.

SIGINT and SIGTERM are reset to their defaults in the child: a process that inherits SIGINT as
ignored (any job backgrounded by a non-interactive shell) makes `dagster dev` ignore SIGTERM too,
because Dagster maps SIGTERM onto the SIGINT handler.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from stagecopy_dagster.local import LocalCluster

LOCATIONS_QUERY = """
{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""

CHECK_QUERY = """
query Check($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) { ... on AssetNode {
    assetMaterializations(limit: 1) { runId metadataEntries { label
      ... on IntMetadataEntry { intValue } } }
    assetChecksOrError { ... on AssetChecks { checks { name
      executionForLatestMaterialization { runId status evaluation { success } } } } } } }
}
"""


class DemoError(AssertionError):
    """The demo did not come up, or did not go down, as it should."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _reset_signals() -> None:  # runs in the child between fork and exec
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def live_group_members(pgid: int) -> list[int]:
    """Pids in process group `pgid` that are not zombies (read from /proc)."""
    members = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat_file.read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat_file.parent.name))
    return members


def command_line(pid: int) -> str:
    """The command line of process `pid` (shortened), or "?" when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:160]


@dataclass
class DemoServer:
    """One `stagecopy demo --port N` process tree and where its pieces live."""

    home: Path
    cwd: Path
    log_path: Path
    stagecopy: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    stopped_gracefully: bool | None = None
    #: What was still running when the graceful stop ran out of time ("pid: command line").
    leftovers: list[str] = field(default_factory=list)
    _log: TextIO | None = None

    @property
    def base_url(self) -> str:
        """The Dagster UI."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, env: dict[str, str]) -> None:
        """Start `stagecopy demo` with `$STAGECOPY_HOME` = `home`; output goes to `log_path`."""
        self._log = self.log_path.open("w", encoding="utf-8")
        self.process = subprocess.Popen(
            [str(self.stagecopy), "demo", "--port", str(self.port)],
            cwd=self.cwd,
            env={**env, "STAGECOPY_HOME": str(self.home), "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # Only a preexec_fn can undo a SIG_IGN inherited from a background CI shell; the
            # child calls nothing but signal() before exec, so the threads rule does not bite.
            preexec_fn=_reset_signals,  # noqa: PLW1509
        )

    def log_tail(self, lines: int = 40) -> str:
        """The end of the demo's output, for failure messages."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST a GraphQL query to the webserver; the `data` of the answer."""
        request = urllib.request.Request(
            f"{self.base_url}/graphql",
            data=json.dumps({"query": query, "variables": variables or {}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.load(response)
        if answer.get("errors"):
            raise DemoError(f"GraphQL errors: {answer['errors']}")
        return answer["data"]

    def wait_until_loaded(self, timeout: float) -> float:
        """Wait until every code location is LOADED (not just /server_info); return seconds.

        Raises:
            DemoError: The demo exited, a location failed to load, or time ran out.
        """
        assert self.process is not None
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DemoError(
                    f"stagecopy demo exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                entries = self.graphql(LOCATIONS_QUERY)["workspaceOrError"]["locationEntries"]
            except (OSError, urllib.error.URLError, KeyError, ValueError):
                entries = []
            for entry in entries:
                error = entry["locationOrLoadError"] or {}
                if error.get("__typename") == "PythonError":
                    raise DemoError(f"code location {entry['name']}: {error['message']}")
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                return time.monotonic() - started
            time.sleep(0.5)
        raise DemoError(f"Dagster not loaded after {timeout:.0f}s:\n{self.log_tail()}")

    def latest_check(self, asset: str, check: str) -> dict[str, Any]:
        """The latest materialization and `check`'s execution for it, as GraphQL reports them."""
        node = self.graphql(CHECK_QUERY, {"key": {"path": [asset]}})["assetNodeOrError"]
        checks = {c["name"]: c for c in node["assetChecksOrError"]["checks"]}
        return {
            "materialization": node["assetMaterializations"][0],
            "execution": checks[check]["executionForLatestMaterialization"],
        }

    def stop(self, grace: float = 30.0) -> bool:
        """SIGTERM `dagster dev`, wait up to `grace` s for its whole process group to end, then
        SIGKILL the group; True if it ended gracefully.

        Idempotent. Afterwards no live process of the group is left.
        """
        if self.process is None:
            return bool(self.stopped_gracefully)
        pgid = self.process.pid  # a session leader: its pid is the group id
        if self.stopped_gracefully is None:
            graceful = self._signal_and_wait(pgid, signal.SIGTERM, grace, group=False)
            self.stopped_gracefully = graceful
            if not graceful:
                self.leftovers = [f"{pid}: {command_line(pid)}" for pid in live_group_members(pgid)]
                self._signal_and_wait(pgid, signal.SIGKILL, 10.0, group=True)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.stopped_gracefully

    def _signal_and_wait(self, pgid: int, signum: int, timeout: float, *, group: bool) -> bool:
        """Send `signum` to the group leader (or the whole group); True once the group is gone."""
        assert self.process is not None
        try:
            if group:
                os.killpg(pgid, signum)
            else:
                self.process.send_signal(signum)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.process.poll()  # reap our own child; orphans are reaped by init
            if not live_group_members(pgid):
                return True
            time.sleep(0.2)
        return False

    def stop_cluster(self) -> None:
        """Stop the embedded PostgreSQL the demo started (a no-op when it is not running)."""
        pg = self.home / "pg"
        if (pg / "PG_VERSION").is_file():
            LocalCluster(pg).stop()
