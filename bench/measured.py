"""Run a whole program as a child and read its wall time and peak RSS (`bench/peak.py`).

Used for what the benchmark does not run in its own worker: the `stagecopy run` CLI and the
other tools. The figure is the child's `ru_maxrss` as `wait4` reports it: the peak RSS
(`VmHWM`) of the child, or of the largest of the processes it started and waited for, if one
of them grew larger (Linux reports the maximum, not the sum).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_PEAK = Path(__file__).with_name("peak.py")


class ChildFailed(RuntimeError):
    """The child exited with a non-zero status; the message ends with its output's tail."""


@dataclass(frozen=True)
class Measured:
    """One child run: wall seconds (launch to exit), peak RSS in KB, and its output's tail."""

    seconds: float
    maxrss_kb: int
    output: str


def clean_env(**extra: str) -> dict[str, str]:
    """This process' environment without libpq's `PG*` variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(extra)
    return env


def measured(
    args: Sequence[str],
    env: Mapping[str, str],
    *,
    timeout: float,
    cwd: Path | None = None,
    tail: int = 8000,
) -> Measured:
    """Run `args` through `peak.py` (stdout and stderr together); raise ChildFailed on failure.

    The launcher is a small `python -S` process, so the child does not inherit this process'
    peak (Linux carries `ru_maxrss` across `exec`).
    """
    with tempfile.TemporaryDirectory(prefix="bench-peak-") as tmp:
        peak_file = Path(tmp) / "peak.json"
        log_file = Path(tmp) / "out.log"
        started = time.perf_counter()
        with log_file.open("wb") as log:
            proc = subprocess.run(
                [sys.executable, "-S", str(_PEAK), str(peak_file), "--", *args],
                env=dict(env),
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        seconds = time.perf_counter() - started
        output = log_file.read_bytes()[-tail:].decode(errors="replace")
        peak = json.loads(peak_file.read_text()) if peak_file.exists() else {}
    if proc.returncode:
        raise ChildFailed(f"exit {proc.returncode}: {output.strip()}")
    return Measured(seconds, int(peak.get("maxrss_kb", 0)), output)
