"""The CLI's progress display: a live line per running table, or plain lines for a log.

On a terminal, :class:`RichProgress` keeps one line per running table (bar, rows and MB
against the expected total, percent, rate, ETA) and prints a finished table's line above them.
Elsewhere (a log file, CI), :class:`PlainProgress` prints a whole line per table every
`interval` seconds, and the line of every stream that ended. Both take the engine's reports
from any thread.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, TaskID, TextColumn
from rich.progress import Progress as RichBars

from stagecopy_dagster.engine.types import Progress, ProgressCallback
from stagecopy_dagster.progress import describe_progress

PROGRESS_ENV = "STAGECOPY_PROGRESS"
"""`auto` (live on a terminal, plain lines elsewhere), `live`, `plain` or `off`."""
PROGRESS_INTERVAL_ENV = "STAGECOPY_PROGRESS_INTERVAL"
"""Seconds between plain progress lines per table (default 10; 0: every report)."""
DEFAULT_INTERVAL = 10.0
MODES = ("auto", "live", "plain", "off")
_BAR_STEPS = 1000


class PlainProgress:
    """Whole lines for a log: a table's first report, one every `interval` s, every total.

    Each line ends in a newline (no carriage return), so a log file keeps every one.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.interval = interval
        self.clock = clock
        self.last: dict[str, float] = {}
        self.lock = threading.Lock()

    def __call__(self, p: Progress) -> None:
        """Print `p` if its table is due (or its stream ended)."""
        with self.lock:
            now = self.clock()
            last = self.last.get(p.table)
            if not p.final and last is not None and now - last < self.interval:
                return
            self.last[p.table] = now
            self.stream.write(describe_progress(p) + "\n")
            self.stream.flush()


class RichProgress:
    """A live line per running table on a terminal (`with RichProgress(console) as show:`)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bars = RichBars(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            TextColumn("{task.fields[detail]}"),
            console=console,
            transient=True,
        )
        self.tasks: dict[str, TaskID] = {}
        self.lock = threading.Lock()

    def __enter__(self) -> RichProgress:
        self.bars.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.bars.stop()

    def running(self) -> list[str]:
        """The tables shown as running, in the order they started."""
        with self.lock:
            return list(self.tasks)

    def __call__(self, p: Progress) -> None:
        """Move `p.table`'s line; a stream that ended prints its line for good."""
        with self.lock:
            task = self.tasks.get(p.table)
            if p.final:
                if task is not None:
                    self.bars.remove_task(task)
                    del self.tasks[p.table]
                self.bars.console.print(describe_progress(p), highlight=False, soft_wrap=True)
                return
            share = p.fraction
            detail = describe_progress(p, with_table=False)
            fields = {
                "total": None if share is None else _BAR_STEPS,
                "completed": 0 if share is None else share * _BAR_STEPS,
                "detail": detail,
            }
            if task is None:
                self.tasks[p.table] = self.bars.add_task(p.table[:40], **fields)
            else:
                self.bars.update(task, **fields)


def progress_mode(flag: str | None) -> str:
    """The display asked for by `--progress`, else `$STAGECOPY_PROGRESS`, else `auto`.

    Raises:
        ValueError: The variable names no display.
    """
    mode = (flag or os.environ.get(PROGRESS_ENV) or "auto").strip().lower()
    if mode not in MODES:
        raise ValueError(f"{PROGRESS_ENV}={mode!r} is not one of {', '.join(MODES)}")
    return mode


def progress_interval(flag: float | None) -> float:
    """`--progress-interval`, else `$STAGECOPY_PROGRESS_INTERVAL`, else 10 seconds.

    Raises:
        ValueError: The variable is not a number of seconds.
    """
    if flag is not None:
        return flag
    text = os.environ.get(PROGRESS_INTERVAL_ENV, "").strip()
    if not text:
        return DEFAULT_INTERVAL
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise ValueError(f"{PROGRESS_INTERVAL_ENV}={text!r} is not a number of seconds (>= 0)")
    return value


def open_display(
    mode: str, *, interval: float, stream: TextIO
) -> tuple[ProgressCallback | None, RichProgress | None]:
    """The progress sink for `mode` on `stream` and, for a live display, the display to start.

    `auto` is live when `stream` is a terminal, plain lines otherwise.
    """
    if mode == "off":
        return None, None
    if mode == "live" or (mode == "auto" and stream.isatty()):
        live = RichProgress(Console(file=stream, force_terminal=mode == "live" or None))
        return live, live
    return PlainProgress(stream, interval=interval), None
