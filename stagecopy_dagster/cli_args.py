"""The `stagecopy` command line: its subcommands and options, and their help.

Parsing only: what each command does is in :mod:`stagecopy_dagster.cli`. Nothing here imports
Dagster, so `stagecopy --help` and argument errors stay fast.
"""

from __future__ import annotations

import argparse
import sys

from stagecopy_dagster import cli_help

#: Exit code of a bad command line or spec (see :mod:`stagecopy_dagster.cli`).
EXIT_USAGE = 2
#: `--progress` choices (as cli_progress.MODES, which imports rich: not needed for --help).
PROGRESS_MODES = ("auto", "live", "plain", "off")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"stagecopy: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def _positive_int(text: str) -> int:
    value = int(text) if text.isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def _with_embedded(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "--embedded",
        action="store_true",
        help="with no STAGECOPY_SOURCE_URL/STAGECOPY_TARGET_URL, use the local embedded "
        "cluster (as STAGECOPY_EMBEDDED=1 does); the demo spec uses it by default",
    )
    return p


def _with_spec(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--spec", help="replication spec YAML (default: $STAGECOPY_SPEC or demo)")
    p.add_argument(
        "--select",
        nargs="+",
        metavar="NAME",
        help="asset keys (as the translator makes them), asset names or table names (default: all)",
    )
    p.add_argument(
        "--translator",
        metavar="MODULE:CLASS",
        help="the project's StagecopyTranslator, so runs carry its asset keys "
        "(default: $STAGECOPY_TRANSLATOR, else stagecopy's)",
    )
    return _with_embedded(p)


def _with_jobs(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "--jobs",
        type=_positive_int,
        default=1,
        metavar="N",
        help="tables at once, each in its own process (Dagster's multiprocess executor); "
        "the pools still bound the sessions per database (default 1: one at a time, in "
        "this process)",
    )
    return p


def _with_summary(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "--json",
        action="store_true",
        help="print the summary as JSON on stdout (keys in docs/cli.md), for CI",
    )
    return p


def _with_progress(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "--progress",
        choices=PROGRESS_MODES,
        help="progress display on stderr: auto (live on a terminal, plain lines "
        "otherwise), live, plain or off (default: $STAGECOPY_PROGRESS or auto)",
    )
    p.add_argument(
        "--progress-interval",
        type=_seconds,
        metavar="SECONDS",
        help="seconds between plain progress lines per table "
        "(default: $STAGECOPY_PROGRESS_INTERVAL or 10; 0: every report)",
    )
    return p


def _with_partitions(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--partition", metavar="KEY", help="one partition of the partitioned tables")
    p.add_argument("--from", dest="first", metavar="KEY", help="first partition of a range")
    p.add_argument("--to", dest="last", metavar="KEY", help="last partition of a range")
    return p


def build_parser(description: str) -> argparse.ArgumentParser:
    """The `stagecopy` command line: every subcommand, its options and its help."""
    parser = _Parser(
        prog="stagecopy",
        description=description,
        epilog=cli_help.MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"stagecopy {cli_help.version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")

    def command(name: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, **cli_help.parser_kwargs(name))
        p.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            help="show Dagster's run log and the traceback of an error",
        )
        return p

    _with_jobs(_with_partitions(_with_progress(_with_summary(_with_spec(command("run"))))))
    _with_jobs(_with_partitions(_with_summary(_with_spec(command("check")))))
    _with_spec(command("plan"))
    demo = command("demo")
    demo.add_argument("--no-ui", action="store_true", help="stop after the run (no dagster dev)")
    demo.add_argument("--port", type=int, default=3000, help="dagster dev port (default 3000)")
    demo.add_argument(
        "--stop", action="store_true", help="stop the embedded PostgreSQL the demo left running"
    )
    status = _with_spec(command("status"))
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    cleanup = command("cleanup")
    cleanup.add_argument(
        "--max-age-hours",
        type=float,
        default=6.0,
        metavar="HOURS",
        help="drop staging tables older than this many hours (default 6); younger ones may "
        "belong to a copy still running",
    )
    _with_embedded(cleanup)
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (>= 0)")
    return value
