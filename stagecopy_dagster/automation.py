"""Jobs, schedules and sensors built from the spec, and the staging clean-up."""

import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Callable, Sequence

import dagster as dg
import psycopg
from pydantic import Field

from stagecopy_dagster import statements as st
from stagecopy_dagster.identifiers import QualifiedName, staging_created_at
from stagecopy_dagster.naming import PLAIN, Names
from stagecopy_dagster.resources import PostgresResource
from stagecopy_dagster.runner import leftover_staging
from stagecopy_dagster.spec import TableSpec

#: The job that materializes every table (and runs every check).
ALL_TABLES_JOB = PLAIN.all_tables_job
SOURCE_SENSOR = PLAIN.source_sensor
CLEANUP_JOB = PLAIN.cleanup_job


#: The asset key of a table, as the translator makes it (the one source of keys).
KeyOf = Callable[[TableSpec], dg.AssetKey]


def default_key(table: TableSpec) -> dg.AssetKey:
    """The key the default translator gives `table`."""
    return dg.AssetKey(table.asset_name)


def build_all_tables_job(  # untyped: an unresolved asset job
    tables: Sequence[TableSpec] | None = None,
    *,
    key_of: KeyOf = default_key,
    names: Names = PLAIN,
):
    """The main job: exactly the spec's assets, each with its integrity check.

    Merged beside other assets (a dbt model), it runs only stagecopy's. Without `tables`, as
    before: every asset of the definitions.
    """
    selection = (
        dg.AssetSelection.all()
        if tables is None
        else dg.AssetSelection.assets(*[key_of(t) for t in tables])
    )
    return dg.define_asset_job(
        names.all_tables_job,
        selection=selection,
        description="Replicate every table of the spec and verify each one.",
    )


def _schedule_name(group: str, cron: str, taken: set[str], names: Names, kind: str) -> str:
    name = names.of(f"{group}_{kind}")
    if name in taken:
        name = names.of(f"{group}_{kind}_{hashlib.sha1(cron.encode()).hexdigest()[:6]}")
    taken.add(name)
    return name


def _by_group_and_cron(
    tables: Sequence[TableSpec], cron_of: Callable[[TableSpec], str | None]
) -> list[tuple[tuple[str, str], list[TableSpec]]]:
    by_slot: dict[tuple[str, str], list[TableSpec]] = defaultdict(list)
    for table in tables:
        cron = cron_of(table)
        if cron:
            by_slot[(table.group_name, cron)].append(table)
    return sorted(by_slot.items())


def _cron_schedules(
    tables: Sequence[TableSpec],
    *,
    cron_of: Callable[[TableSpec], str | None],
    kind: str,
    selection_of: Callable[[list[dg.AssetKey]], dg.AssetSelection],
    names: Names,
    key_of: KeyOf,
    job_description: str | None,
    what: str,
) -> list[dg.ScheduleDefinition]:
    """One running schedule per (group, cron) whose job selects `selection_of(keys)`."""
    schedules: list[dg.ScheduleDefinition] = []
    taken: set[str] = set()
    for (group, cron), members in _by_group_and_cron(tables, cron_of):
        name = _schedule_name(group, cron, taken, names, kind)
        job = dg.define_asset_job(
            f"{name}_job",
            selection=selection_of([key_of(t) for t in members]),
            description=job_description,
        )
        schedules.append(
            dg.ScheduleDefinition(
                name=name,
                job=job,
                cron_schedule=cron,
                default_status=dg.DefaultScheduleStatus.RUNNING,
                description=f"{what} {len(members)} table(s) of group {group} at '{cron}'.",
            )
        )
    return schedules


def build_schedules(
    tables: Sequence[TableSpec], *, key_of: KeyOf = default_key, names: Names = PLAIN
) -> list[dg.ScheduleDefinition]:
    """One schedule per (group, cron): tables of a group that share a cron run together."""
    return _cron_schedules(
        tables,
        cron_of=lambda t: t.schedule,
        kind="schedule",
        selection_of=lambda keys: dg.AssetSelection.assets(*keys),
        names=names,
        key_of=key_of,
        job_description=None,
        what="Copy and check",
    )


def build_check_schedules(
    tables: Sequence[TableSpec], *, key_of: KeyOf = default_key, names: Names = PLAIN
) -> list[dg.ScheduleDefinition]:
    """One schedule per (group, `check_schedule` cron) that runs only the tables' checks.

    Its job selects the `integrity` checks alone (no asset), so nothing is copied: each check
    compares the whole scope of the current source with the target, which catches what a
    copy's own check may not look at (a row changed without moving its watermark).

    Example:
        >>> spec = load_spec({"tables": [{"source": "public.orders",  # doctest: +SKIP
        ...     "check_schedule": "0 3 * * *"}]})
        >>> build_check_schedules(spec.tables)[0].name  # doctest: +SKIP
        'public_check_schedule'
    """
    return _cron_schedules(
        tables,
        cron_of=lambda t: t.check_schedule,
        kind="check_schedule",
        selection_of=lambda keys: dg.AssetSelection.checks_for_assets(*keys),
        names=names,
        key_of=key_of,
        job_description="Run the full-scope integrity checks only; copy nothing.",
        what="Integrity checks (no copy) of",
    )


def change_signature(conn: psycopg.Connection, table: TableSpec) -> str | None:
    """A cheap fingerprint of the source of `table` that changes when its rows change.

    With an `incremental_field`, the scope's max watermark and count; for a source table,
    PostgreSQL's cumulative insert/update/delete counters and file node. None for a `query`
    source without watermark (no cheap signal: schedule it instead).
    """
    if table.incremental_field:
        relation = table.source if table.source is not None else table.query
        assert relation is not None
        row = conn.execute(
            st.watermark_signature(relation, table.incremental_field, table.where)
        ).fetchone()
    elif table.source is not None:
        row = conn.execute(
            st.TABLE_CHANGE_COUNTERS, (table.source.schema, table.source.name)
        ).fetchone()
    else:
        return None
    return json.dumps(list(row) if row is not None else None, default=str)


def build_source_sensor(
    tables: Sequence[TableSpec], *, key_of: KeyOf = default_key, names: Names = PLAIN
) -> dg.SensorDefinition:
    """A sensor that materializes only the tables whose source changed since its last tick.

    Its cursor holds each table's last signature; the run key is derived from the changed
    signatures, so a tick evaluated twice never launches the same run twice.
    """
    watched = {key_of(t).to_user_string(): t for t in tables}
    keys = {name: key_of(t) for name, t in watched.items()}

    @dg.sensor(
        name=names.source_sensor,
        minimum_interval_seconds=60,
        required_resource_keys={names.source},
        asset_selection=dg.AssetSelection.assets(*keys.values()),
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Launches a copy of each table whose source changed (watermark or stats).",
    )
    def _sensor(context: dg.SensorEvaluationContext, **_: object):
        # The key is `source`, or `crm_source` for a named replication: not a parameter name.
        # (A direct call also passes the required resources as keywords; the tick does not.)
        source: PostgresResource = getattr(context.resources, names.source)
        previous: dict[str, str | None] = json.loads(context.cursor) if context.cursor else {}
        current: dict[str, str | None] = {}
        with source.connect(autocommit=True) as conn:
            for name, table in watched.items():
                current[name] = change_signature(conn, table)
        changed = sorted(
            n for n, sig in current.items() if sig is not None and sig != previous.get(n)
        )
        context.update_cursor(json.dumps(current, sort_keys=True))
        if not changed:
            return dg.SkipReason("no source changed since the last tick")
        digest = hashlib.sha1(
            json.dumps({n: current[n] for n in changed}, sort_keys=True).encode()
        ).hexdigest()[:16]
        return dg.RunRequest(
            run_key=f"{names.source_sensor}:{digest}",
            asset_selection=[keys[n] for n in changed],
            tags={"stagecopy/changed": ",".join(changed)},
        )

    return _sensor


class CleanupConfig(dg.Config):
    """How old a leftover staging table must be before the clean-up drops it."""

    max_age_hours: float = Field(
        default=6.0, description="Drop staging tables older than this (no run lasts as long)."
    )


def build_cleanup_job(names: Names = PLAIN) -> dg.JobDefinition:
    """The job that drops `_stagecopy_*` tables left behind by killed processes."""

    @dg.op(name=names.of("drop_leftover_staging"), required_resource_keys={names.target})
    def drop_leftover_staging(
        context: dg.OpExecutionContext, config: CleanupConfig
    ) -> dg.Output[list[str]]:
        """Drop `_stagecopy_*` tables older than `max_age_hours` that no session holds a lock on."""
        target: PostgresResource = getattr(context.resources, names.target)
        dropped, kept = drop_staging_tables(target, max_age_hours=config.max_age_hours)
        for name in dropped:
            context.log.info(f"dropped leftover staging table {name}")
        return dg.Output(
            dropped,
            metadata={
                "dropped": dg.MetadataValue.int(len(dropped)),
                "dropped_tables": ", ".join(dropped),
                "kept": dg.MetadataValue.int(len(kept)),
            },
        )

    @dg.job(
        name=names.cleanup_job, description="Drop staging tables left behind by killed processes."
    )
    def _cleanup_job() -> None:
        drop_leftover_staging()

    return _cleanup_job


def build_cleanup_schedule(job: dg.JobDefinition, names: Names = PLAIN) -> dg.ScheduleDefinition:
    """The clean-up job, daily."""
    return dg.ScheduleDefinition(
        name=names.cleanup_schedule,
        job=job,
        cron_schedule="17 3 * * *",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Daily clean-up of leftover staging tables.",
    )


def drop_staging_tables(
    target: PostgresResource, *, max_age_hours: float, now: float | None = None
) -> tuple[list[str], list[str]]:
    """Drop old, unlocked staging tables; return (dropped, kept) names."""
    dropped: list[str] = []
    kept: list[str] = []
    limit = (time.time() if now is None else now) - max_age_hours * 3600
    with target.connect(autocommit=True) as conn:
        conn.execute(st.set_session({"lock_timeout": "2s"}))
        for schema, name, locked in leftover_staging(conn):
            created = staging_created_at(name)
            table = QualifiedName(schema, name)
            if locked or created is None or created > limit:
                kept.append(str(table))
                continue
            try:
                conn.execute(st.drop_table(table))
                dropped.append(str(table))
            except psycopg.errors.LockNotAvailable:
                kept.append(str(table))
    return dropped, kept


cleanup_job = build_cleanup_job()
cleanup_schedule = build_cleanup_schedule(cleanup_job)
