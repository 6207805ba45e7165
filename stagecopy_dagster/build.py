"""`build_definitions(spec)`: every Dagster object stagecopy makes for a replication spec."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from stagecopy_dagster.assets import build_table_asset
from stagecopy_dagster.automation import (
    build_all_tables_job,
    build_schedules,
    build_source_sensor,
    cleanup_job,
    cleanup_schedule,
)
from stagecopy_dagster.errors import SpecError
from stagecopy_dagster.local.default import SOURCE_DB, TARGET_DB
from stagecopy_dagster.resources import PostgresResource
from stagecopy_dagster.spec import ReplicationSpec, load_spec
from stagecopy_dagster.translator import StagecopyTranslator

SOURCE_URL_ENV = "STAGECOPY_SOURCE_URL"
TARGET_URL_ENV = "STAGECOPY_TARGET_URL"
SPEC_ENV = "STAGECOPY_SPEC"
DEMO_SPEC = Path(__file__).parent / "local" / "demo" / "replication.yaml"


def build_resources(
    *, source_url: str | None = None, target_url: str | None = None
) -> dict[str, PostgresResource]:
    """The `source` and `target` resources: explicit URLs, else the env vars, else embedded.

    Env vars are read by Dagster at run time (`dg.EnvVar`), so the URL never shows in the UI.
    """
    if source_url or target_url:
        if not (source_url and target_url):
            raise SpecError("give both source_url and target_url, or neither")
        return {
            "source": PostgresResource(url=source_url),
            "target": PostgresResource(url=target_url),
        }
    has_source, has_target = (
        bool(os.environ.get(SOURCE_URL_ENV)),
        bool(os.environ.get(TARGET_URL_ENV)),
    )
    if has_source != has_target:
        missing = TARGET_URL_ENV if has_source else SOURCE_URL_ENV
        raise SpecError(f"{missing} is not set: set both connection URLs, or neither (embedded)")
    if has_source:
        return {
            "source": PostgresResource(url=dg.EnvVar(SOURCE_URL_ENV)),
            "target": PostgresResource(url=dg.EnvVar(TARGET_URL_ENV)),
        }
    return {
        "source": PostgresResource(embedded_database=SOURCE_DB),
        "target": PostgresResource(embedded_database=TARGET_DB),
    }


def build_definitions(
    spec: str | os.PathLike[str] | Mapping[str, Any] | ReplicationSpec,
    *,
    source_url: str | None = None,
    target_url: str | None = None,
    translator: StagecopyTranslator | None = None,
) -> dg.Definitions:
    """Definitions for a replication spec.

    One asset and `integrity` check per table, the main job `stagecopy_all`, schedules, the
    source-change sensor and the staging clean-up job and schedule.

    Example:
        >>> defs = build_definitions("replication.yaml")  # doctest: +SKIP
        >>> defs = build_definitions(  # doctest: +SKIP
        ...     {"tables": [{"source": "public.orders", "mode": "sync"}]},
        ...     source_url="postgresql://reader@src/app", target_url="postgresql://writer@dwh/app",
        ... )
    """
    replication = spec if isinstance(spec, ReplicationSpec) else load_spec(spec)
    tables = replication.tables
    return dg.Definitions(
        assets=[build_table_asset(t, translator=translator) for t in tables],
        jobs=[build_all_tables_job(), cleanup_job],
        schedules=[*build_schedules(tables), cleanup_schedule],
        sensors=[build_source_sensor(tables)],
        resources=build_resources(source_url=source_url, target_url=target_url),
    )


def spec_path() -> str | os.PathLike[str]:
    """`$STAGECOPY_SPEC`, or the bundled demo spec."""
    return os.environ.get(SPEC_ENV) or DEMO_SPEC
