"""The stagecopy paths under test, each one copy (or one integrity check), timed alone.

Each runs through the same function production runs (`runner.replicate` without the check, or
`runner.verify`); the clock covers opening both sessions, describe, lock, create or reconcile,
COPY, MERGE, count and commit (or the whole check).
"""

from __future__ import annotations

import time

from stagecopy_dagster import runner
from stagecopy_dagster.connection import Endpoint
from stagecopy_dagster.copier import CopyOptions, CopyResult
from stagecopy_dagster.identifiers import QualifiedName
from stagecopy_dagster.integrity import IntegrityReport
from stagecopy_dagster.spec import TableSpec, load_spec


def table_spec(
    source: QualifiedName,
    target: QualifiedName,
    *,
    mode: str,
    incremental: bool = False,
    parallel: int = 1,
    diff: bool = True,
) -> TableSpec:
    """One table entry as a user would write it in replication.yaml."""
    entry: dict[str, object] = {
        "source": f"{source.schema}.{source.name}",
        "target": f"{target.schema}.{target.name}",
        "mode": mode,
        "parallel": parallel,
        "diff": diff,
    }
    if incremental:
        entry["incremental_field"] = "updated_at"
    return load_spec({"tables": [entry]}).tables[0]


def run_copy(
    source_url: str, target_url: str, table: TableSpec, *, options: CopyOptions | None = None
) -> tuple[CopyResult, float]:
    """Copy `table` once, as production does; return the result and the wall seconds."""
    started = time.perf_counter()
    done = runner.replicate(
        table, Endpoint(source_url), Endpoint(target_url), verify=False, options=options
    )
    return done.result, time.perf_counter() - started


def run_copy_checked(
    source_url: str, target_url: str, table: TableSpec, *, options: CopyOptions | None = None
) -> tuple[CopyResult, IntegrityReport, float]:
    """Copy `table` with the check that runs with it (as the asset does); result, report, s."""
    started = time.perf_counter()
    done = runner.replicate(
        table, Endpoint(source_url), Endpoint(target_url), verify=True, options=options
    )
    assert done.report is not None
    return done.result, done.report, time.perf_counter() - started


def run_check(source_url: str, target_url: str, table: TableSpec) -> tuple[IntegrityReport, float]:
    """Run the integrity check alone, as `stagecopy check` does; return report and seconds."""
    started = time.perf_counter()
    report = runner.verify(table, Endpoint(source_url), Endpoint(target_url))
    return report, time.perf_counter() - started
