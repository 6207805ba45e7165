"""The words of `stagecopy --help`: what each command does, what it reads, an example.

Kept apart from the parser in :mod:`stagecopy_dagster.cli` so the flags read as code there and
the prose reads as prose here. Each command's epilog names every environment variable it reads
and shows one example; `stagecopy_dagster_tests/test_cli_view.py` holds every subcommand to that.
"""

from __future__ import annotations

import argparse
from importlib import metadata
from typing import Any

DISTRIBUTION = "stagecopy-dagster"

_EXIT_CODES = "exit codes: 0 ok; 1 a table failed to copy or its check failed; 2 bad spec or usage"

_CONNECT_ENV = """\
  STAGECOPY_SOURCE_URL   source database (libpq URL); set with STAGECOPY_TARGET_URL
  STAGECOPY_TARGET_URL   target database (libpq URL)
  STAGECOPY_EMBEDDED     1: with no URL, use the local embedded cluster (as --embedded does)
  STAGECOPY_HOME         where the embedded cluster lives (default ./.stagecopy)"""

_SPEC_ENV = """\
  STAGECOPY_SPEC         replication spec YAML when --spec is not given (default: the demo)"""

_TRANSLATOR_ENV = """\
  STAGECOPY_TRANSLATOR   package.module:Class, the project's translator (as --translator)"""

_DAGSTER_ENV = """\
  DAGSTER_HOME           with it set, the run is recorded in that Dagster instance (the UI
                         shows it); without it, in a throwaway one"""

_PROGRESS_ENV = """\
  STAGECOPY_PROGRESS     auto (default: live on a terminal, plain lines otherwise), live,
                         plain or off; --progress wins
  STAGECOPY_PROGRESS_INTERVAL
                         seconds between plain progress lines per table (default 10)"""

COMMANDS: dict[str, dict[str, str]] = {
    "run": {
        "help": "copy tables through Dagster, then check each one",
        "description": (
            "Materialize the selected tables (one Dagster asset each): stream the source rows "
            "with COPY into the target, MERGE them by key, and run each table's `integrity` "
            "check in the copy's own snapshot. While rows stream, a line per running table "
            "shows rows and MB against the expected total, percent, rate and ETA. At the end "
            "a summary has a row per table, failures first, each with its one-line reason."
        ),
        "env": "\n".join([_SPEC_ENV, _TRANSLATOR_ENV, _CONNECT_ENV, _DAGSTER_ENV, _PROGRESS_ENV]),
        "example": (
            "  STAGECOPY_SOURCE_URL=postgresql://reader@prod/shop \\\n"
            "  STAGECOPY_TARGET_URL=postgresql://writer@dwh/shop \\\n"
            "  stagecopy run --spec replication.yaml --select orders customers"
        ),
    },
    "check": {
        "help": "run the integrity checks only (the CI gate)",
        "description": (
            "Compare each selected table's source scope with its target scope now (row counts "
            "and row digests, the `where` scope applied on both sides), without copying. Exit "
            "1 when any check fails; --json prints the summary for CI."
        ),
        "env": "\n".join([_SPEC_ENV, _TRANSLATOR_ENV, _CONNECT_ENV, _DAGSTER_ENV]),
        "example": "  stagecopy check --spec replication.yaml --json > integrity.json",
    },
    "plan": {
        "help": "print the SQL each table would run; write nothing",
        "description": (
            "Describe the source and the target and print, per table, every statement a copy "
            "would send (staging DDL, COPY, MERGE, deletes), in order. Nothing is written."
        ),
        "env": "\n".join([_SPEC_ENV, _TRANSLATOR_ENV, _CONNECT_ENV]),
        "example": "  stagecopy plan --spec replication.yaml --select public.orders",
    },
    "demo": {
        "help": "embedded PostgreSQL + demo data + run + dagster dev",
        "description": (
            "Start the local embedded PostgreSQL, load the demo data, run every demo table "
            "and its check, then open the Dagster UI (dagster dev) on the demo's instance."
        ),
        "env": "  STAGECOPY_HOME         where the embedded cluster and Dagster home live "
        "(default ./.stagecopy)",
        "example": "  stagecopy demo --port 3001",
    },
    "cleanup": {
        "help": "drop leftover staging tables in the target",
        "description": (
            "Drop stagecopy staging tables (`_stagecopy_*`) that a killed run left in the "
            "target, once older than --max-age-hours; tables another session holds are kept."
        ),
        "env": "\n".join([_SPEC_ENV, _CONNECT_ENV]),
        "example": "  STAGECOPY_TARGET_URL=... STAGECOPY_SOURCE_URL=... stagecopy cleanup "
        "--max-age-hours 1",
    },
    "status": {
        "help": "how fresh every table is and whether its last check passed",
        "description": (
            "Per table: the last materialization and its rows, the last `integrity` result and "
            "when, and how far the target is behind the source. Exit 1 when a check failed or "
            "a table is older than its `freshness`."
        ),
        "env": "\n".join([_SPEC_ENV, _CONNECT_ENV, _DAGSTER_ENV]),
        "example": "  DAGSTER_HOME=~/dagster stagecopy status --spec replication.yaml",
    },
}


def version() -> str:
    """The installed package's version (`0+unknown` when it is not installed)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "0+unknown"


def epilog(command: str) -> str:
    """The text under a command's options: its environment variables, an example, exit codes."""
    text = COMMANDS[command]
    return f"environment variables:\n{text['env']}\n\nexample:\n{text['example']}\n\n{_EXIT_CODES}"


def parser_kwargs(command: str) -> dict[str, Any]:
    """`add_parser` keywords for `command`: help, description, epilog and its formatter."""
    text = COMMANDS[command]
    return {
        "help": text["help"],
        "description": text["description"],
        "epilog": epilog(command),
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }


MAIN_EPILOG = f"""\
Run `stagecopy <command> --help` for a command's options, environment variables and example.

example:
  stagecopy demo                      # try it: embedded PostgreSQL, demo data, the UI
  stagecopy run --spec replication.yaml --json

{_EXIT_CODES}"""
