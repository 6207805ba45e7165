"""The demo cleans up after itself: it says its PostgreSQL keeps running; `--stop` stops it.

`stagecopy demo` runs `dagster dev` as a child in its own process group and forwards SIGINT and
SIGTERM to it once; the browser test (test_ui_e2e.py) stops a real `dagster dev` that way. Here
the forwarding is tested with a stand-in child, and the cluster's end with the real demo.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from stagecopy_dagster.build import DEMO_SPEC
from stagecopy_dagster.local import LocalCluster
from stagecopy_dagster.local.demo.lifecycle import KEEPS_RUNNING
from stagecopy_dagster.local.pidfile import read_pid_file
from stagecopy_dagster.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
STAGECOPY = Path(sys.executable).with_name("stagecopy")

#: A stand-in for `dagster dev`: says where it runs, then exits 0 on the first SIGINT/SIGTERM
#: after noting it (a second signal would note a second line).
_CHILD = """
import os, signal, sys, time
def note(signum, frame):
    print(f"got {signum}", flush=True)
    if signum == signal.SIGTERM or signum == signal.SIGINT:
        time.sleep(0.5)  # a signal forwarded twice would arrive meanwhile
        sys.exit(0)
signal.signal(signal.SIGINT, note)
signal.signal(signal.SIGTERM, note)
print(f"child {os.getpid()} {os.getpgrp()}", flush=True)
while True:
    time.sleep(60)
"""

_PARENT = """
import os, sys
from stagecopy_dagster.local.demo.lifecycle import run_dagster_dev
print(f"parent {os.getpid()} {os.getpgrp()}", flush=True)
code = run_dagster_dev([sys.executable, "-c", os.environ["CHILD"]])
print(f"exit {code}", flush=True)
"""


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STAGECOPY_", "DAGSTER_"))}
    return {**env, **extra}


def _read_line(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "no output in time"
    return proc.stdout.readline().strip()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_demo_reaches_dagster_dev_once(signum: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _PARENT],
        env=_clean_env(CHILD=_CHILD, PYTHONPATH=str(REPO)),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        _, parent_pid, parent_group = _read_line(proc).split()
        _, child_pid, child_group = _read_line(proc).split()
        # Its own process group: a terminal's Ctrl-C reaches it through the demo only.
        assert child_group == child_pid != parent_group
        os.kill(int(parent_pid), signum)
        assert proc.wait(timeout=60) == 0
        assert proc.stdout is not None
        rest = proc.stdout.read().split("\n")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [line for line in rest if line] == [f"got {int(signum)}", "exit 0"]


@pytest.mark.slow
def test_the_demo_says_its_cluster_keeps_running_and_stop_stops_it(
    cluster_tmp_path: Path,
) -> None:
    home = cluster_tmp_path / "stagecopy"
    env = _clean_env(STAGECOPY_HOME=str(home))

    def stagecopy(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(STAGECOPY), *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    try:
        demo = stagecopy("demo", "--no-ui")
        assert demo.returncode == 0, demo.stdout + demo.stderr
        data_dir = Path(os.path.realpath(home / "pg"))
        running = read_pid_file(data_dir)
        assert running is not None
        assert demo.stdout.strip().splitlines()[-1] == KEEPS_RUNNING.format(data_dir=data_dir)

        # `stagecopy status` finds the demo's instance without DAGSTER_HOME.
        status = stagecopy("status")
        assert status.returncode == 0, status.stdout + status.stderr
        lines = status.stdout.strip().splitlines()
        tables = load_spec(DEMO_SPEC).tables
        assert len(lines) == len(tables) + 2 and lines[-1].endswith("tables: ok")
        assert all(" passed " in line for line in lines[1:-1]), status.stdout

        stopped = stagecopy("demo", "--stop")
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.strip() == (
            f"stagecopy demo: stopped the embedded PostgreSQL in {data_dir} "
            f"(pid {running.pid}, port {running.port})"
        )
        assert read_pid_file(data_dir) is None

        again = stagecopy("demo", "--stop")
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip() == (
            f"stagecopy demo: no embedded PostgreSQL is running in {data_dir}"
        )
    finally:
        LocalCluster(home / "pg").stop()
