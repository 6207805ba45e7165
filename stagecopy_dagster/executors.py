"""Tables in parallel: the command's run on Dagster's multiprocess executor (`--jobs N`).

`dg.materialize` runs every step in the calling process, one at a time. With `--jobs N` the
command runs the same selection as a reconstructable job on the multiprocess executor
(`max_concurrent: N`): each table's step is a child process that rebuilds the definitions from
the spec path, so the spec must be a file and the instance must be persistent (`$DAGSTER_HOME`,
else a temporary one). The pools still bound the sessions per database: a step waits for a slot
of its table's `pool`, as limited by the instance's `concurrency.pools`.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import dagster as dg

#: The pool limit of the temporary instance (no `$DAGSTER_HOME`), as in the shipped dagster.yaml.
DEFAULT_POOL_LIMIT = 4
#: The job the command runs (a subset of the spec's tables, or only their checks).
CLI_JOB = "stagecopy_cli_run"


#: What the forkserver of the step processes imports once (see `step_preload`).
PRELOAD_MODULES = ["stagecopy_dagster.step_preload"]


def multiprocess_run_config(max_concurrent: int) -> dict[str, object]:
    """Run config that puts a run of a stagecopy job on the multiprocess executor.

    Its step processes fork from a forkserver that has loaded Dagster, stagecopy and the
    instance's storage code once (`stagecopy_dagster.step_preload`).
    """
    return {
        "execution": {
            "config": {
                "multiprocess": {
                    "max_concurrent": max_concurrent,
                    "start_method": {"forkserver": {"preload_modules": PRELOAD_MODULES}},
                }
            }
        }
    }


def start_forkserver() -> None:
    """Start the step processes' forkserver now, so it preloads while this process goes on.

    The executor would start it when it launches the first step, and that step would wait for
    the preload (about 2.5 s of CPU); started here, the preload runs beside the set-up of the
    instance and the run. The executor then finds the server running and uses it.
    """
    multiprocessing.get_context("forkserver").set_forkserver_preload(PRELOAD_MODULES)
    multiprocessing.forkserver.ensure_running()


def cli_job(
    spec: str,
    embedded: bool,
    translator: str | None,
    key_paths: Sequence[Sequence[str]],
    checks_only: bool,
) -> dg.JobDefinition:
    """The job of one `stagecopy run/check`: the tables' assets, or only their checks.

    Module-level and called with plain values (the translator as `module:Class`, each asset
    key as its path), so each step process can rebuild it.
    """
    from stagecopy_dagster.build import build_definitions  # noqa: PLC0415 (light module import)
    from stagecopy_dagster.selection import load_translator  # noqa: PLC0415

    defs = build_definitions(spec, embedded=embedded, translator=load_translator(translator))
    keys = [dg.AssetKey(list(path)) for path in key_paths]
    selection = (
        dg.AssetSelection.checks_for_assets(*keys)
        if checks_only
        else dg.AssetSelection.assets(*keys)
    )
    job = dg.define_asset_job(CLI_JOB, selection=selection)
    return dg.Definitions(assets=defs.assets, resources=defs.resources, jobs=[job]).resolve_job_def(
        CLI_JOB
    )


@contextmanager
def persistent_instance(*, pool_limit: int = DEFAULT_POOL_LIMIT) -> Iterator[dg.DagsterInstance]:
    """`$DAGSTER_HOME`'s instance, else a temporary one with `pool_limit` per pool.

    The multiprocess executor refuses an in-memory instance: its step processes report their
    events through the instance's storage.
    """
    if os.environ.get("DAGSTER_HOME"):
        with dg.DagsterInstance.get() as instance:
            yield instance
        return
    overrides = {"concurrency": {"pools": {"default_limit": pool_limit}}}
    with dg.DagsterInstance.local_temp(overrides=overrides) as instance:
        yield instance


@contextmanager
def run_in_processes(
    spec: str | os.PathLike[str],
    *,
    embedded: bool,
    translator: str | None,
    keys: Sequence[dg.AssetKey],
    checks_only: bool,
    jobs: int,
    instance: dg.DagsterInstance,
) -> Iterator[dg.JobExecutionResult]:
    """Run the assets' steps (or their checks) `jobs` at a time, each in its own process."""
    job = dg.build_reconstructable_job(
        __name__,
        cli_job.__name__,
        reconstructable_args=(
            str(Path(spec).resolve()),
            embedded,
            translator,
            [list(key.path) for key in keys],
            checks_only,
        ),  # type: ignore[arg-type]  (the signature says a 1-tuple; any tuple works)
    )
    with dg.execute_job(job, instance=instance, run_config=multiprocess_run_config(jobs)) as result:
        yield result
