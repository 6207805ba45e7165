"""The COPY pump: `COPY ... TO STDOUT` on one connection into `COPY ... FROM STDIN` on another.

No file and no buffer beyond one write: blocks are joined into writes of about
:attr:`CopyOptions.write_block` bytes and handed on, so memory stays flat whatever the size.
"""

from __future__ import annotations

from time import perf_counter

import psycopg
from psycopg import sql
from psycopg.abc import Buffer

from stagecopy_dagster import statements as st
from stagecopy_dagster.engine.types import (
    CopyFormat,
    CopyOptions,
    Estimate,
    Progress,
    ProgressCallback,
    Streamed,
)


def pump(
    source: psycopg.Connection,
    target: psycopg.Connection,
    select: sql.Composable,
    copy_in: sql.Composed,
    fmt: CopyFormat,
    *,
    label: str,
    options: CopyOptions,
    progress: ProgressCallback | None = None,
    expected: Estimate | None = None,
    step: str = "copy",
) -> Streamed:
    """Stream the rows of `select` on `source` into `copy_in` on `target`.

    `progress` is called every `options.progress_interval` seconds while rows stream (after
    every write when that is 0), between two writes, with both COPYs open; its reports carry
    `expected` (what the stream should move in all) and the `step` streaming.
    """
    started = perf_counter()
    next_report = started + options.progress_interval
    nbytes = newlines = pending_size = 0
    pending: list[Buffer] = []
    tgt_cur = target.cursor()
    with (
        source.cursor().copy(st.copy_out(select, fmt)) as out,
        tgt_cur.copy(copy_in) as inp,
    ):
        for block in out:
            pending.append(block)
            pending_size += len(block)
            if pending_size < options.write_block:
                continue
            data = b"".join(pending)
            inp.write(data)
            nbytes += pending_size
            if fmt == "text":
                newlines += data.count(b"\n")
            pending.clear()
            pending_size = 0
            now = perf_counter()
            if progress is not None and now >= next_report:
                next_report = now + options.progress_interval
                rows = newlines if fmt == "text" else None
                progress(Progress(label, rows, nbytes, now - started, expected, step))
        if pending:
            inp.write(b"".join(pending))
            nbytes += pending_size
    return Streamed(tgt_cur.rowcount, nbytes)
