"""The demo's life: its Dagster home, `dagster dev` as a child, and what is left running after.

`stagecopy demo` runs `dagster dev` as a child process in its own process group and forwards
SIGINT and SIGTERM to it (once each), so Ctrl-C, `kill PID`, `docker stop` stop Dagster in
order. The embedded PostgreSQL is left running on purpose (the CLI and `stagecopy status` use
it); the demo then says so in one line and names `stagecopy demo --stop`, which stops it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from stagecopy_dagster.local import default as ed
from stagecopy_dagster.local.cluster import LocalCluster
from stagecopy_dagster.local.pidfile import read_pid_file

#: The one line the demo prints when it ends and its cluster keeps running.
KEEPS_RUNNING = (
    "stagecopy demo: the embedded PostgreSQL keeps running in {data_dir} for the CLI "
    "(stagecopy run/check/status); stop it with: stagecopy demo --stop"
)


def prepare_dagster_home() -> Path:
    """The demo's `$DAGSTER_HOME` (storage in the embedded cluster), set in this environment.

    Uses `./dagster.yaml` when there is one (the repository's), else a minimal one; the
    community dialog is marked seen. Starts (or attaches to) the embedded cluster.
    """
    dagster_home = ed.home() / "dagster_home"
    (dagster_home / ".nux").mkdir(parents=True, exist_ok=True)
    (dagster_home / ".nux" / "nux.yaml").write_text("seen: 1\n")
    template = Path.cwd() / "dagster.yaml"
    if template.exists():
        shutil.copyfile(template, dagster_home / "dagster.yaml")
    else:
        (dagster_home / "dagster.yaml").write_text(
            "storage:\n  postgres:\n    postgres_url:\n      env: STAGECOPY_DAGSTER_PG_URL\n"
            "telemetry:\n  enabled: false\n"
        )
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    os.environ["STAGECOPY_DAGSTER_PG_URL"] = ed.dagster_storage_url()
    return dagster_home


def demo_data_dir() -> Path:
    """The embedded cluster's data directory under `$STAGECOPY_HOME` (the link resolved)."""
    link = ed.home() / "pg"
    return Path(os.path.realpath(link)) if link.is_symlink() else link


def keeps_running_line() -> str:
    """The demo's last line when its cluster is still running (empty when it is not)."""
    data_dir = demo_data_dir()
    return KEEPS_RUNNING.format(data_dir=data_dir) if read_pid_file(data_dir) else ""


def stop_embedded() -> str:
    """Stop the embedded cluster of `$STAGECOPY_HOME`; one line saying what was stopped.

    A no-op (saying so) when no server runs there.
    """
    data_dir = demo_data_dir()
    running = read_pid_file(data_dir)
    if running is None:
        return f"stagecopy demo: no embedded PostgreSQL is running in {data_dir}"
    LocalCluster(data_dir).stop()
    return (
        f"stagecopy demo: stopped the embedded PostgreSQL in {data_dir} "
        f"(pid {running.pid}, port {running.port})"
    )


def run_dagster_dev(command: Sequence[str]) -> int:
    """Run `command` (`dagster dev ...`) until it ends; forward SIGINT/SIGTERM to it.

    The child has its own process group, so a terminal's Ctrl-C reaches it once (through
    here), not twice (a second interrupt would cut Dagster's own shutdown short). Returns 0
    when it ended after a forwarded signal, else its exit code.
    """
    children: list[subprocess.Popen[bytes]] = []
    forwarded: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        forwarded.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    # Handlers first: a signal right after the start is forwarded, and the child (whose
    # caught signals exec resets to the default) never inherits an ignored SIGINT.
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        children.append(subprocess.Popen(list(command), process_group=0))
        if forwarded:
            children[0].send_signal(forwarded[-1])
        code = children[0].wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0 if forwarded else code
