"""`build_definitions(spec)`: every Dagster object stagecopy makes for a replication spec."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from stagecopy_dagster.assets import build_table_asset
from stagecopy_dagster.automation import (
    build_all_tables_job,
    build_check_schedules,
    build_cleanup_job,
    build_cleanup_schedule,
    build_schedules,
    build_source_sensor,
)
from stagecopy_dagster.comments import load_source_docs
from stagecopy_dagster.errors import ConnectionConfigError, SpecError
from stagecopy_dagster.naming import PLAIN, Names
from stagecopy_dagster.partition_automation import (
    build_partition_jobs,
    build_partition_schedules,
    main_job_tables,
    unpartitioned,
)
from stagecopy_dagster.resources import PostgresResource
from stagecopy_dagster.sources import build_source_assets
from stagecopy_dagster.spec import ReplicationSpec, TableSpec, load_spec
from stagecopy_dagster.translator import StagecopyTranslator

SOURCE_URL_ENV = "STAGECOPY_SOURCE_URL"
TARGET_URL_ENV = "STAGECOPY_TARGET_URL"
SPEC_ENV = "STAGECOPY_SPEC"
EMBEDDED_ENV = "STAGECOPY_EMBEDDED"
"""`1` (or `true`/`yes`/`on`): with no URLs set, use the local embedded cluster for any spec."""
DEMO_SPEC = Path(__file__).parent / "local" / "demo" / "replication.yaml"

MISSING_URLS = (
    f"no source and target database: set {SOURCE_URL_ENV} and {TARGET_URL_ENV} "
    f"(or {EMBEDDED_ENV}=1 for the local embedded cluster)"
)


def embedded_opted_in() -> bool:
    """Whether `$STAGECOPY_EMBEDDED` asks for the local embedded cluster when no URL is set."""
    return os.environ.get(EMBEDDED_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def is_demo_spec(spec: object) -> bool:
    """Whether `spec` is the path of the bundled demo spec (which runs on the embedded cluster)."""
    if not isinstance(spec, str | os.PathLike):
        return False
    return Path(spec).resolve() == DEMO_SPEC.resolve()


def build_resources(
    *,
    source_url: str | None = None,
    target_url: str | None = None,
    embedded: bool = False,
    names: Names = PLAIN,
) -> dict[str, PostgresResource]:
    """The `source` and `target` resources (keys from `names`): explicit URLs, else the env vars.

    Env vars are read by Dagster at run time (`dg.EnvVar`), so the URL never shows in the UI.
    With no URL anywhere, the local embedded cluster is used only when `embedded` is true or
    `$STAGECOPY_EMBEDDED` is set; otherwise there is no database to use, which is an error.

    Raises:
        SpecError: One URL is given without the other.
        ConnectionConfigError: No URL is set and the embedded cluster was not asked for.
    """
    if source_url or target_url:
        if not (source_url and target_url):
            raise SpecError("give both source_url and target_url, or neither")
        return {
            names.source: PostgresResource(url=source_url),
            names.target: PostgresResource(url=target_url),
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
            names.source: PostgresResource(url=dg.EnvVar(SOURCE_URL_ENV)),
            names.target: PostgresResource(url=dg.EnvVar(TARGET_URL_ENV)),
        }
    if not (embedded or embedded_opted_in()):
        raise ConnectionConfigError(MISSING_URLS)
    from stagecopy_dagster.local.default import SOURCE_DB, TARGET_DB  # noqa: PLC0415 (only when asked for)

    return {
        names.source: PostgresResource(embedded_database=SOURCE_DB),
        names.target: PostgresResource(embedded_database=TARGET_DB),
    }


def build_definitions(
    spec: str | os.PathLike[str] | Mapping[str, Any] | ReplicationSpec,
    *,
    source_url: str | None = None,
    target_url: str | None = None,
    translator: StagecopyTranslator | None = None,
    embedded: bool | None = None,
    name: str | None = None,
) -> dg.Definitions:
    """Definitions for a replication spec.

    `name` (e.g. `"crm"`) prefixes the resource keys, jobs, schedules, sensor and ops it makes
    (`crm_source`, `crm_stagecopy_all`, ...), so several replications merge into one project
    (`dg.Definitions.merge`); asset keys come from the `translator` alone.

    One asset and `integrity` check per table, the main job `stagecopy_all`, schedules, the
    source-change sensor and the staging clean-up job and schedule.

    Connections: `source_url` and `target_url`, else `$STAGECOPY_SOURCE_URL` and
    `$STAGECOPY_TARGET_URL` (read at run time). With none of them, the local embedded cluster
    is used only for the bundled demo spec, with `embedded=True` or with
    `$STAGECOPY_EMBEDDED=1`; otherwise loading fails with a `ConnectionConfigError` naming the
    variables, rather than quietly pointing a user's spec at a demo database.

    Example:
        >>> defs = build_definitions("replication.yaml")  # doctest: +SKIP
        >>> defs = build_definitions(  # doctest: +SKIP
        ...     {"tables": [{"source": "public.orders", "mode": "sync"}]},
        ...     source_url="postgresql://reader@src/app", target_url="postgresql://writer@dwh/app",
        ... )
    """
    replication = spec if isinstance(spec, ReplicationSpec) else load_spec(spec)
    tables = replication.tables
    names = Names(name or "")
    translator = _bound_translator(translator, tables, names, source_url)

    def key_of(table: TableSpec) -> dg.AssetKey:
        # The translator's key is the only key: jobs, schedules and the sensor ask it too.
        return translator.get_asset_spec(table).key

    runs = _runs(tables, key_of=key_of, names=names)
    return dg.Definitions(
        assets=[
            *build_source_assets(tables, translator=translator, names=names),
            *(build_table_asset(t, translator=translator, names=names) for t in tables),
        ],
        jobs=runs.jobs,
        schedules=runs.schedules,
        sensors=runs.sensors,
        resources=build_resources(
            source_url=source_url,
            target_url=target_url,
            embedded=is_demo_spec(spec) if embedded is None else embedded,
            names=names,
        ),
    )


def _bound_translator(
    translator: StagecopyTranslator | None,
    tables: Sequence[TableSpec],
    names: Names,
    source_url: str | None,
) -> StagecopyTranslator:
    """The translator, told the replication's prefix and the source tables' comments."""
    return (translator or StagecopyTranslator()).bound(
        replication=names.prefix,
        source_docs=load_source_docs(
            _url_now(source_url) or os.environ.get(SOURCE_URL_ENV),
            [t.source for t in tables if t.source is not None],
        ),
    )


@dataclass(frozen=True)
class _Runs:
    """What starts runs of a replication's tables."""

    jobs: list[dg.JobDefinition | dg.UnresolvedAssetJobDefinition]
    schedules: list[dg.ScheduleDefinition]
    sensors: list[dg.SensorDefinition]


def _runs(
    tables: Sequence[TableSpec], *, key_of: Callable[[TableSpec], dg.AssetKey], names: Names
) -> _Runs:
    """What starts runs of the tables: the jobs, schedules and the source-change sensor.

    Partitioned tables: see partition_automation (one partitioning per job, latest-partition
    schedules, not watched by the sensor).
    """
    cleanup = build_cleanup_job(names)
    main_tables, other_partitionings = main_job_tables(tables)
    return _Runs(
        jobs=[
            build_all_tables_job(main_tables, key_of=key_of, names=names),
            *build_partition_jobs(other_partitionings, key_of=key_of, names=names),
            cleanup,
        ],
        schedules=[
            *build_schedules(unpartitioned(tables), key_of=key_of, names=names),
            *build_partition_schedules(tables, key_of=key_of, names=names),
            *build_check_schedules(unpartitioned(tables), key_of=key_of, names=names),
            build_cleanup_schedule(cleanup, names),
        ],
        sensors=[build_source_sensor(unpartitioned(tables), key_of=key_of, names=names)],
    )


def _url_now(url: str | None) -> str | None:
    """A URL's value when the definitions load (a `dg.EnvVar` is read from the environment)."""
    if isinstance(url, dg.EnvVar):
        return url.get_value()
    return url


def spec_path() -> str | os.PathLike[str]:
    """`$STAGECOPY_SPEC`, or the bundled demo spec."""
    return os.environ.get(SPEC_ENV) or DEMO_SPEC
