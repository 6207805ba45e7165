"""The `stagecopy` command: run, check, plan, demo, cleanup.

Exit codes: 0 success; 1 a copy or an integrity check failed; 2 a bad spec or bad usage
(including no database: neither URL set for a spec other than the demo's, without --embedded).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import dagster as dg

from stagecopy_dagster.errors import ConnectionConfigError, SpecError, StagecopyError
from stagecopy_dagster.resources import PostgresResource

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"stagecopy: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="stagecopy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_embedded(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--embedded",
            action="store_true",
            help="with no STAGECOPY_SOURCE_URL/STAGECOPY_TARGET_URL, use the local embedded "
            "cluster (as STAGECOPY_EMBEDDED=1 does); the demo spec uses it by default",
        )
        return p

    def with_spec(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--spec", help="replication spec YAML (default: $STAGECOPY_SPEC or demo)")
        p.add_argument(
            "--select",
            nargs="+",
            metavar="NAME",
            help="asset keys (as the translator makes them), asset names or table names "
            "(default: all)",
        )
        p.add_argument(
            "--translator",
            metavar="MODULE:CLASS",
            help="the project's StagecopyTranslator, so runs carry its asset keys "
            "(default: $STAGECOPY_TRANSLATOR, else stagecopy's)",
        )
        return with_embedded(p)

    with_spec(sub.add_parser("run", help="materialize tables through Dagster, then check them"))
    with_spec(sub.add_parser("check", help="run the integrity checks only (the CI gate)"))
    with_spec(sub.add_parser("plan", help="print the SQL each table would run; write nothing"))
    demo = sub.add_parser("demo", help="embedded PostgreSQL + demo data + run + dagster dev")
    demo.add_argument("--no-ui", action="store_true", help="stop after the run (no dagster dev)")
    demo.add_argument("--port", type=int, default=3000, help="dagster dev port (default 3000)")
    demo.add_argument(
        "--stop", action="store_true", help="stop the embedded PostgreSQL the demo left running"
    )
    status = with_spec(
        sub.add_parser(
            "status",
            help="per table: last copy, rows, last integrity result, watermark and lag "
            "(exit 1: a check failed or a table is older than its freshness.max_lag)",
        )
    )
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    cleanup = sub.add_parser("cleanup", help="drop leftover staging tables in the target")
    cleanup.add_argument("--max-age-hours", type=float, default=6.0)
    with_embedded(cleanup)
    return parser


def _spec_arg(args: argparse.Namespace) -> str | os.PathLike[str]:
    from stagecopy_dagster.build import spec_path

    return args.spec or spec_path()


def _instance() -> dg.DagsterInstance:
    # With DAGSTER_HOME set, runs land in the real instance (and show up in the UI).
    return (
        dg.DagsterInstance.get()
        if os.environ.get("DAGSTER_HOME")
        else dg.DagsterInstance.ephemeral()
    )


def _progress_bar() -> object:
    from stagecopy_dagster.copier import Progress

    def show(p: Progress) -> None:
        rows = f"{p.rows:>12,} rows " if p.rows is not None else ""
        sys.stderr.write(
            f"\r  {p.table[:40]:<40} {rows}{p.bytes / 1e6:>9,.1f} MB {p.mb_per_second:>7.1f} MB/s"
        )
        sys.stderr.flush()

    return show


def _materialize(args: argparse.Namespace, *, checks_only: bool) -> int:
    from stagecopy_dagster.assets import progress_sink
    from stagecopy_dagster.build import build_definitions, is_demo_spec
    from stagecopy_dagster.selection import load_translator, select_tables
    from stagecopy_dagster.spec import TableSpec, load_spec

    spec_arg = _spec_arg(args)
    spec = load_spec(spec_arg)
    translator = load_translator(getattr(args, "translator", None))

    def key_of(table: TableSpec) -> dg.AssetKey:
        return translator.get_asset_spec(table).key

    tables = select_tables(spec, args.select, key_of)
    defs = build_definitions(spec, embedded=is_demo_spec(spec_arg), translator=translator)
    keys = [key_of(t) for t in tables]
    selection = (
        dg.AssetSelection.checks_for_assets(*keys)
        if checks_only
        else dg.AssetSelection.assets(*keys)
    )
    token = progress_sink.set(_progress_bar() if sys.stderr.isatty() else None)  # type: ignore[arg-type]
    try:
        with _instance() as instance:
            result = dg.materialize(
                cast(list[dg.AssetsDefinition], list(defs.assets or [])),
                selection=selection,
                resources=defs.resources,
                instance=instance,
                raise_on_error=False,
            )
    finally:
        progress_sink.reset(token)
    failed_checks = []
    for evaluation in result.get_asset_check_evaluations():
        status = "passed" if evaluation.passed else "FAILED"
        print(
            f"{evaluation.asset_key.to_user_string()}: integrity {status}: {evaluation.description}"
        )
        if not evaluation.passed:
            failed_checks.append(evaluation.asset_key.to_user_string())
    failed_steps = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    for event in failed_steps:
        info = event.step_failure_data.error if event.step_failure_data else None
        message = info.message.strip() if info else "step failed"
        print(f"FAILED {event.step_key}: {message}", file=sys.stderr)
    ok = result.success and not failed_checks and not failed_steps
    what = "checks" if checks_only else "tables"
    print(f"stagecopy: {len(tables)} {what}: {'ok' if ok else 'FAILED'} (run {result.run_id})")
    return EXIT_OK if ok else EXIT_FAILED


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
    args = _parser().parse_args(argv)
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
    except SpecError as exc:
        print(f"stagecopy: bad spec: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConnectionConfigError as exc:
        print(f"stagecopy: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StagecopyError as exc:
        print(f"stagecopy: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:  # a folder or program the command needs (demo: DAGSTER_HOME, dagster)
        print(f"stagecopy: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
