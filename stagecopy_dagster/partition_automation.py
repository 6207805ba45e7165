"""Jobs and schedules for partitioned tables (Dagster runs one partition range at a time).

* The main job may mix unpartitioned tables with partitioned tables of *one* partitioning (a
  run then covers a partition, or a range, of those). Tables of any other partitioning get a job
  of their own, `stagecopy_all_<asset>` (named after the first table of that partitioning).
* A `schedule` on a partitioned table runs its latest complete partition at each tick (a table
  partitioned by `values`: all of them, in one run).
* The source-change sensor watches unpartitioned tables only: a change at the source does not
  say which partition changed; run partitions by schedule or backfill.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Sequence

import dagster as dg

from stagecopy_dagster.naming import PLAIN, Names
from stagecopy_dagster.partitions import PartitionSpec, partitions_definition
from stagecopy_dagster.spec import TableSpec

KeyOf = Callable[[TableSpec], dg.AssetKey]


def _partitioning(table: TableSpec) -> dg.PartitionsDefinition | None:
    return partitions_definition(table.partition) if table.partition is not None else None


def main_job_tables(tables: Sequence[TableSpec]) -> tuple[list[TableSpec], list[list[TableSpec]]]:
    """The tables of the main job, and the groups of tables that need a job of their own."""
    main: list[TableSpec] = []
    others: dict[dg.PartitionsDefinition, list[TableSpec]] = {}
    first: dg.PartitionsDefinition | None = None
    for table in tables:
        definition = _partitioning(table)
        if definition is None:
            main.append(table)
        elif first is None or definition == first:
            first = definition
            main.append(table)
        else:
            others.setdefault(definition, []).append(table)
    return main, list(others.values())


def build_partition_jobs(
    groups: Sequence[Sequence[TableSpec]], *, key_of: KeyOf, names: Names = PLAIN
) -> list[dg.UnresolvedAssetJobDefinition]:
    """One job per extra partitioning: `stagecopy_all_<first asset>`."""
    return [
        dg.define_asset_job(
            names.of(f"stagecopy_all_{members[0].asset_name}"),
            selection=dg.AssetSelection.assets(*[key_of(t) for t in members]),
            description="Replicate and verify the tables of one partitioning.",
        )
        for members in groups
    ]


def unpartitioned(tables: Sequence[TableSpec]) -> list[TableSpec]:
    """The tables without `partition:`."""
    return [t for t in tables if t.partition is None]


def build_partition_schedules(
    tables: Sequence[TableSpec], *, key_of: KeyOf, names: Names = PLAIN
) -> list[dg.ScheduleDefinition]:
    """One schedule per (group, cron, partitioning): each tick runs the latest partition."""
    slots: dict[tuple[str, str, PartitionSpec], list[TableSpec]] = defaultdict(list)
    for table in tables:
        if table.partition is not None and table.schedule:
            windows = table.partition.model_copy(update={"column": ""})
            slots[(table.group_name, table.schedule, windows)].append(table)
    schedules: list[dg.ScheduleDefinition] = []
    for (group, cron, windows), members in slots.items():
        digest = hashlib.sha1(f"{cron}{windows!r}".encode()).hexdigest()[:6]
        name = names.of(f"{group}_partitions_schedule_{digest}")
        schedules.append(_latest_partition_schedule(name, cron, members, key_of=key_of))
    return schedules


def _latest_partition_schedule(
    name: str, cron: str, members: Sequence[TableSpec], *, key_of: KeyOf
) -> dg.ScheduleDefinition:
    assert members[0].partition is not None
    definition = partitions_definition(members[0].partition)
    job = dg.define_asset_job(
        f"{name}_job",
        selection=dg.AssetSelection.assets(*[key_of(t) for t in members]),
        partitions_def=definition,
    )

    @dg.schedule(
        name=name,
        job=job,
        cron_schedule=cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"The latest partition of {len(members)} table(s) at '{cron}'.",
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        keys = definition.get_partition_keys(current_time=context.scheduled_execution_time)
        if not keys:
            return dg.SkipReason("no complete partition yet")
        if isinstance(definition, dg.TimeWindowPartitionsDefinition):
            return dg.RunRequest(run_key=f"{name}:{keys[-1]}", partition_key=keys[-1])
        # Values have no "latest": every value, in one run.
        return dg.RunRequest(
            tags={
                "dagster/asset_partition_range_start": keys[0],
                "dagster/asset_partition_range_end": keys[-1],
            }
        )

    return _schedule
