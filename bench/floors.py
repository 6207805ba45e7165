"""The floors: what PostgreSQL's own tools do with the same rows, `psql | psql`, binary COPY.

* F2: `COPY (SELECT ...) TO STDOUT (FORMAT binary)` piped into `COPY staging FROM STDIN` of an
  UNLOGGED table without indexes: the cheapest possible transfer, the floor of a staged copy.
* Fpk: the same pipe into an empty, logged table with the primary key: the floor of an
  initial load into a real table.

Timed from the start of the first psql to the exit of both (two connections included, as the
copier's timing includes its catalog queries).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from psycopg import sql

from bench.clusters import Endpoint
from bench.dataset import NARROW, Shape
from stagecopy_dagster import statements as st
from stagecopy_dagster.identifiers import QualifiedName


def copy_out_sql(table: QualifiedName, shape: Shape = NARROW) -> str:
    """The same COPY OUT statement the copier sends for a whole table (binary)."""
    select = st.select_rows(table, shape.column_names, sql.SQL(""))
    return st.copy_out(select, "binary").as_string()


def copy_in_sql(table: QualifiedName, shape: Shape = NARROW) -> str:
    """`COPY table (cols) FROM STDIN (FORMAT binary)`."""
    return st.copy_in(table.identifier, shape.column_names, "binary").as_string()


def psql_pipe(
    psql: Path,
    source: Endpoint,
    target: Endpoint,
    out_sql: str,
    in_sql: str,
) -> tuple[float, float]:
    """Run `psql -c OUT | psql -c IN`; return wall seconds and the two psql's CPU seconds.

    Raises if either side fails.
    """
    args = [str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c"]
    with tempfile.TemporaryFile() as out_err, tempfile.TemporaryFile() as in_err:
        started = time.perf_counter()
        out = subprocess.Popen(
            [*args, out_sql], env=dict(source.psql_env), stdout=subprocess.PIPE, stderr=out_err
        )
        assert out.stdout is not None
        inp = subprocess.Popen(
            [*args, in_sql],
            env=dict(target.psql_env),
            stdin=out.stdout,
            stdout=subprocess.DEVNULL,
            stderr=in_err,
        )
        out.stdout.close()  # only the reader holds the pipe now: psql OUT sees EPIPE if it dies
        cpu = 0.0
        for proc in (inp, out):
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            cpu += usage.ru_utime + usage.ru_stime
        seconds = time.perf_counter() - started
        if out.returncode or inp.returncode:
            out_err.seek(0)
            in_err.seek(0)
            errors = (out_err.read() + b" " + in_err.read()).decode(errors="replace")
            raise RuntimeError(
                f"psql pipe failed (out rc {out.returncode}, in rc {inp.returncode}): {errors}"
            )
    return seconds, cpu
