"""The `stagecopy` command: run, check, plan, demo, cleanup.

Exit codes: 0 success; 1 a copy or an integrity check failed; 2 a bad spec or bad usage
(including no database: neither URL set for a spec other than the demo's, without --embedded).
Help texts live in :mod:`~stagecopy_dagster.cli_help`, the progress display in
:mod:`~stagecopy_dagster.cli_progress`, the end-of-run summary in
:mod:`~stagecopy_dagster.cli_summary`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import traceback
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, cast

from stagecopy_dagster.cli_args import EXIT_USAGE, build_parser
from stagecopy_dagster.errors import ConnectionConfigError, SpecError, StagecopyError

if TYPE_CHECKING:  # Dagster is imported by the commands that run it, not by `--help`
    import dagster as dg

    from stagecopy_dagster.cli_summary import RunSummary
    from stagecopy_dagster.engine.types import ProgressCallback
    from stagecopy_dagster.partitions import PartitionRun
    from stagecopy_dagster.resources import PostgresResource
    from stagecopy_dagster.spec import TableSpec

EXIT_OK, EXIT_FAILED = 0, 1
EXIT_INTERRUPTED = 130  # as a shell reports a process ended by Ctrl-C (SIGINT)


def _spec_arg(args: argparse.Namespace) -> str | os.PathLike[str]:
    from stagecopy_dagster.build import spec_path

    return args.spec or spec_path()


def _instance() -> dg.DagsterInstance:
    import dagster as dg

    # With DAGSTER_HOME set, runs land in the real instance (and show up in the UI).
    return (
        dg.DagsterInstance.get()
        if os.environ.get("DAGSTER_HOME")
        else dg.DagsterInstance.ephemeral()
    )


def _quiet_dagster(verbose: bool) -> dict[str, object]:
    """Run config that keeps Dagster's console log (and its tracebacks) for -v."""
    level = "DEBUG" if verbose else "CRITICAL"
    return {"loggers": {"console": {"config": {"log_level": level}}}}


def _materialize(args: argparse.Namespace, *, checks_only: bool) -> int:
    import dagster as dg

    from stagecopy_dagster import cli_progress
    from stagecopy_dagster.build import build_definitions, is_demo_spec
    from stagecopy_dagster.partitions import partition_runs, partitioned_tables
    from stagecopy_dagster.selection import load_translator, select_tables
    from stagecopy_dagster.spec import load_spec

    verbose = getattr(args, "verbose", False)
    try:
        mode = cli_progress.progress_mode(getattr(args, "progress", None))
        interval = cli_progress.progress_interval(getattr(args, "progress_interval", None))
    except ValueError as exc:
        print(f"stagecopy: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if checks_only:
        mode = "off"  # a check streams no rows
    elif verbose and mode == "auto":
        mode = "plain"  # Dagster's log lines would trample a live display
    spec_arg = _spec_arg(args)
    spec = load_spec(spec_arg)
    translator = load_translator(getattr(args, "translator", None))

    def key_of(table: TableSpec) -> dg.AssetKey:
        return translator.get_asset_spec(table).key

    tables = select_tables(spec, args.select, key_of)
    if not args.select and any(getattr(args, f, None) for f in ("partition", "first", "last")):
        tables = partitioned_tables(tables)  # `run --partition K`: K of every partitioned table
    # No flags: every partition of a partitioned table.
    runs = partition_runs(
        tables,
        partition=getattr(args, "partition", None),
        first=getattr(args, "first", None),
        last=getattr(args, "last", None),
    )
    defs = build_definitions(spec, embedded=is_demo_spec(spec_arg), translator=translator)
    assets = cast(list[dg.AssetsDefinition], list(defs.assets or []))
    jobs = getattr(args, "jobs", 1)
    if jobs > 1:
        return _run_in_processes(
            args, tables, runs, assets, key_of=key_of, checks_only=checks_only, jobs=jobs
        )
    summary, succeeded = _run_in_process(
        runs,
        defs,
        key_of=key_of,
        checks_only=checks_only,
        display=cli_progress.open_display(mode, interval=interval, stream=sys.stderr),
        verbose=verbose,
    )
    return _print_summary(args, summary, succeeded=succeeded)


def _run_in_processes(
    args: argparse.Namespace,
    tables: Sequence[TableSpec],
    runs: Sequence[PartitionRun],
    assets: list[dg.AssetsDefinition],
    *,
    key_of: Callable[[TableSpec], dg.AssetKey],
    checks_only: bool,
    jobs: int,
) -> int:
    """`--jobs N > 1`: the tables' steps `jobs` at a time, each in its own process."""
    from stagecopy_dagster import cli_summary
    from stagecopy_dagster.build import is_demo_spec
    from stagecopy_dagster.executors import (
        persistent_instance,
        run_in_processes,
        start_forkserver,
    )
    from stagecopy_dagster.partitions import PartitionSelectionError, partitioned_tables

    if any(run.tags for run in runs):
        raise PartitionSelectionError(
            "--jobs > 1 runs unpartitioned tables only; run the partitioned tables "
            f"({', '.join(t.label for t in partitioned_tables(tables))}) with --jobs 1"
        )
    start_forkserver()
    spec_arg = _spec_arg(args)
    with (
        persistent_instance() as instance,
        run_in_processes(
            spec_arg,
            embedded=is_demo_spec(spec_arg),
            translator=getattr(args, "translator", None),
            keys=[key_of(t) for t in tables],
            checks_only=checks_only,
            jobs=jobs,
            instance=instance,
        ) as result,
    ):
        command = "check" if checks_only else "run"
        summary = cli_summary.summarize(result, tables, assets, key_of=key_of, command=command)
        return _print_summary(args, summary, succeeded=result.success)


def _run_in_process(
    runs: Sequence[PartitionRun],
    defs: dg.Definitions,
    *,
    key_of: Callable[[TableSpec], dg.AssetKey],
    checks_only: bool,
    display: tuple[ProgressCallback | None, AbstractContextManager[object] | None],
    verbose: bool,
) -> tuple[RunSummary, bool]:
    """Run each of `runs` in this process, one after the other; their summary and success.

    One run per partitioning (Dagster runs one partition range at a time); the unpartitioned
    tables together in one run.
    """
    import dagster as dg

    from stagecopy_dagster import cli_summary
    from stagecopy_dagster.assets import progress_sink

    assets = cast(list[dg.AssetsDefinition], list(defs.assets or []))
    command = "check" if checks_only else "run"
    sink, live = display
    token = progress_sink.set(sink)
    summaries: list[cli_summary.RunSummary] = []
    succeeded = True
    try:
        with _instance() as instance, live or nullcontext():
            for run in runs:
                keys = [key_of(t) for t in run.tables]
                selection = (
                    dg.AssetSelection.checks_for_assets(*keys)
                    if checks_only
                    else dg.AssetSelection.assets(*keys)
                )
                result = dg.materialize(
                    assets,
                    selection=selection,
                    resources=defs.resources,
                    instance=instance,
                    raise_on_error=False,
                    run_config=_quiet_dagster(verbose),
                    tags=run.tags,
                )
                succeeded = succeeded and result.success
                summaries.append(
                    cli_summary.summarize(
                        result, run.tables, assets, key_of=key_of, command=command
                    )
                )
    finally:
        progress_sink.reset(token)
    return cli_summary.combine(summaries, command=command), succeeded


def _print_summary(args: argparse.Namespace, summary: RunSummary, *, succeeded: bool) -> int:
    """Print the summary (text or --json) and each failed table; the exit code."""
    from stagecopy_dagster import cli_summary

    code = EXIT_OK if summary.ok and succeeded else EXIT_FAILED
    for table in summary.tables:
        if table.status == cli_summary.FAILED:
            print(f"stagecopy: {table.asset}: {table.reason}", file=sys.stderr)
    if getattr(args, "json", False):
        sys.stdout.write(cli_summary.render_json(summary, exit_code=code))
    else:
        sys.stdout.write(cli_summary.render_text(summary))
    return code


def _plain_resources(
    spec: str | os.PathLike[str],
) -> tuple[PostgresResource, PostgresResource]:
    """Source and target resources for work outside a Dagster run (URLs read here)."""
    from stagecopy_dagster.build import (
        SOURCE_URL_ENV,
        TARGET_URL_ENV,
        build_resources,
        is_demo_spec,
    )

    src, tgt = os.environ.get(SOURCE_URL_ENV), os.environ.get(TARGET_URL_ENV)
    resources = build_resources(source_url=src, target_url=tgt, embedded=is_demo_spec(spec))
    return resources["source"], resources["target"]


def _plan(args: argparse.Namespace) -> int:
    from stagecopy_dagster.runner import plan_statements
    from stagecopy_dagster.spec import load_spec

    spec_arg = _spec_arg(args)
    spec = load_spec(spec_arg)
    tables = spec.select(args.select)
    source, target = _plain_resources(spec_arg)
    for table in tables:
        key = ", ".join(table.primary_key) if table.primary_key else "(source primary key)"
        print(f"-- {table.asset_name}: {table.source_label} -> {table.label}")
        print(f"-- mode {table.mode.value}; key {key}; scope {table.where or 'all rows'}")
        for statement in plan_statements(table, source, target):
            print(statement + ";")
        print()
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from stagecopy_dagster.local import default as ed
    from stagecopy_dagster.local.demo import lifecycle

    if args.stop:
        print(lifecycle.stop_embedded())
        return EXIT_OK
    print("stagecopy demo: starting the embedded PostgreSQL ...", flush=True)
    ed.embedded_url(ed.SOURCE_DB)
    ed.embedded_url(ed.TARGET_DB)
    lifecycle.prepare_dagster_home()
    db = ed.cluster()
    print(f"stagecopy demo: cluster {db.url('postgres', password='***')} in {db.data_dir}")
    print("stagecopy demo: running the main job (every table + its integrity check) ...")
    try:
        code = _materialize(argparse.Namespace(spec=None, select=None), checks_only=False)
        if code != EXIT_OK or args.no_ui:
            return code
        workspace = Path.cwd() / "workspace.yaml"
        target = (
            ["-w", str(workspace)]
            if workspace.exists()
            else ["-m", "stagecopy_dagster.definitions"]
        )
        exe = shutil.which("dagster") or str(Path(sys.executable).with_name("dagster"))
        print(f"stagecopy demo: open http://127.0.0.1:{args.port} (Ctrl-C to stop)", flush=True)
        return lifecycle.run_dagster_dev(
            [exe, "dev", *target, "-h", "127.0.0.1", "-p", str(args.port)]
        )
    finally:
        print(lifecycle.keeps_running_line() or "stagecopy demo: done", flush=True)


def _status(args: argparse.Namespace) -> int:
    from stagecopy_dagster import status

    spec_arg = _spec_arg(args)
    source, target = _plain_resources(spec_arg)
    text, ok = status.report(
        spec_arg,
        args.select,
        source=source,
        target=target,
        translator=getattr(args, "translator", None),
        as_json=args.json,
    )
    print(text)
    return EXIT_OK if ok else EXIT_FAILED


def _cleanup(args: argparse.Namespace) -> int:
    from stagecopy_dagster.automation import drop_staging_tables
    from stagecopy_dagster.build import spec_path

    _, target = _plain_resources(spec_path())
    dropped, kept = drop_staging_tables(target, max_age_hours=args.max_age_hours)
    for name in dropped:
        print(f"dropped {name}")
    print(f"stagecopy cleanup: dropped {len(dropped)}, kept {len(kept)}")
    return EXIT_OK


def _one_line(exc: StagecopyError) -> str:
    """An error as the CLI prints it.

    A local cluster that did not start (`ClusterStartError`, which has `log_file`) carries the
    server's output or log tail after its first line: print that line and name the log instead.
    """
    if not hasattr(exc, "log_file"):
        return str(exc)
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    log_file = getattr(exc, "log_file", None)
    return lines[0] + (f" (server log: {log_file})" if log_file and len(lines) > 1 else "")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `stagecopy` console script."""
    args = build_parser((__doc__ or "").split("\n\n")[0]).parse_args(argv)
    if getattr(args, "embedded", False):
        from stagecopy_dagster.build import EMBEDDED_ENV

        os.environ[EMBEDDED_ENV] = "1"  # also for the Dagster processes this one starts
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": lambda a: _materialize(a, checks_only=False),
        "check": lambda a: _materialize(a, checks_only=True),
        "plan": _plan,
        "demo": _demo,
        "status": _status,
        "cleanup": _cleanup,
    }
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        print("stagecopy: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # every error ends in one line (and its traceback with -v)
        verbose = getattr(args, "verbose", False)
        if verbose:
            traceback.print_exc()
        message, code = _explain(exc, verbose=verbose)
        print(f"stagecopy: {message}", file=sys.stderr)
        return code


def _explain(exc: Exception, *, verbose: bool) -> tuple[str, int]:
    """The line to print for an error that ended a command, and the exit code."""
    from stagecopy_dagster.partitions import PartitionSelectionError  # loads Dagster

    if isinstance(exc, PartitionSelectionError):
        return f"error: {exc}", EXIT_USAGE
    if isinstance(exc, SpecError):
        return f"bad spec: {exc}", EXIT_USAGE
    if isinstance(exc, ConnectionConfigError):
        return str(exc), EXIT_USAGE
    if isinstance(exc, StagecopyError):
        return _one_line(exc), EXIT_FAILED
    if isinstance(exc, OSError):  # a folder or program the command needs (DAGSTER_HOME, dagster)
        return str(exc), EXIT_FAILED
    return _unexpected(exc, verbose=verbose), EXIT_FAILED


def _unexpected(exc: BaseException, *, verbose: bool) -> str:
    """One line for an error stagecopy did not expect: its kind and first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if verbose else f"{text} (stagecopy <command> -v shows the traceback)"


if __name__ == "__main__":
    raise SystemExit(main())
