"""Build one Dagster asset (with its `integrity` check) per table of the spec.

The asset and its check live in one op so that the check, when it runs with the copy, compares
against the very snapshot the copy read: a source that keeps changing during the copy cannot
raise a false alarm. Selected alone, the check compares the current source with the target.
"""

import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import dagster as dg

from stagecopy_dagster.comments import NO_DOCS, TableDocs
from stagecopy_dagster.copier import CopyResult, Progress, ProgressCallback
from stagecopy_dagster.integrity import IntegrityReport
from stagecopy_dagster.naming import PLAIN, Names
from stagecopy_dagster.partitions import partitions_definition, range_label
from stagecopy_dagster.progress import describe_progress
from stagecopy_dagster.resources import PostgresResource
from stagecopy_dagster.runner import (
    PartitionOutcome,
    Replication,
    replicate,
    verify,
    verify_partitions,
)
from stagecopy_dagster.spec import TableSpec
from stagecopy_dagster.step_retries import attempts_for, fail_or_retry, retry_policy
from stagecopy_dagster.translator import INTEGRITY_CHECK, StagecopyTranslator

# Metadata keys (public interface: users and tests read them).
ROW_COUNT = "dagster/row_count"
COLUMN_SCHEMA = "dagster/column_schema"
TABLE_NAME = "dagster/table_name"
ROWS_COPIED = "stagecopy/rows_copied"
ROWS_COMPARED = "stagecopy/rows_compared"
INSERTED = "stagecopy/inserted"
UPDATED = "stagecopy/updated"
DELETED = "stagecopy/deleted"
BYTES = "stagecopy/bytes"
SECONDS = "stagecopy/seconds"
ROWS_PER_SECOND = "stagecopy/rows_per_second"
SCOPE = "stagecopy/scope"
MODE = "stagecopy/mode"
SCHEMA_CHANGES = "stagecopy/schema_changes"
PARTITION_ROW_COUNT = "dagster/partition_row_count"
PARTITIONS = "stagecopy/partitions"

#: An extra progress sink (the CLI's progress bar) for copies run in this process.
progress_sink: ContextVar[ProgressCallback | None] = ContextVar("progress_sink", default=None)


def materialize_metadata(
    table: TableSpec, result: CopyResult, docs: TableDocs = NO_DOCS
) -> dict[str, Any]:
    """Metadata of one materialization: Dagster's standard keys and stagecopy's own.

    Column descriptions in `dagster/column_schema` are the source's column comments.
    """
    target = table.target_table
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=c.name,
                type=c.type,
                description=docs.column(c.name),
                constraints=dg.TableColumnConstraints(nullable=not c.not_null),
            )
            for c in result.columns
        ]
    )
    return {
        ROW_COUNT: dg.MetadataValue.int(result.target_rows),
        COLUMN_SCHEMA: dg.MetadataValue.table_schema(schema),
        TABLE_NAME: f"{target.schema}.{target.name}",
        ROWS_COPIED: dg.MetadataValue.int(result.rows_copied),
        ROWS_COMPARED: dg.MetadataValue.int(result.rows_compared),
        INSERTED: dg.MetadataValue.int(result.inserted),
        UPDATED: dg.MetadataValue.int(result.updated),
        DELETED: dg.MetadataValue.int(result.deleted),
        BYTES: dg.MetadataValue.int(result.bytes),
        SECONDS: dg.MetadataValue.float(round(result.seconds, 4)),
        ROWS_PER_SECOND: dg.MetadataValue.float(round(result.rows_per_second, 1)),
        SCOPE: table.where.text if table.where is not None else "all rows",
        MODE: table.mode.value,
        "stagecopy/path": result.path,
        "stagecopy/copy_format": result.copy_format,
        "stagecopy/watermark": result.watermark or "",
        "stagecopy/primary_key": ", ".join(result.key),
        "stagecopy/steps": dg.MetadataValue.json({k: round(v, 4) for k, v in result.steps.items()}),
        "stagecopy/created_table": result.created_table,
        "stagecopy/added_columns": ", ".join(result.added_columns),
        SCHEMA_CHANGES: dg.MetadataValue.json([c.as_dict() for c in result.schema_changes]),
    }


def check_result(asset_key: dg.AssetKey, report: IntegrityReport) -> dg.AssetCheckResult:
    """The `integrity` check result for a report (severity ERROR when it fails)."""
    return dg.AssetCheckResult(
        check_name=INTEGRITY_CHECK,
        asset_key=asset_key,
        passed=report.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=report.summary,
        metadata={
            "source_rows": dg.MetadataValue.int(report.source_rows),
            "target_rows": dg.MetadataValue.int(report.target_rows),
            "missing_rows": dg.MetadataValue.int(report.missing_rows),
            "extra_rows": dg.MetadataValue.int(report.extra_rows),
            "changed_rows": dg.MetadataValue.int(report.changed_rows),
            "sample_missing_keys": ", ".join(report.sample_missing),
            "sample_extra_keys": ", ".join(report.sample_extra),
            "sample_changed_keys": ", ".join(report.sample_changed),
            "scope": report.scope or "all rows",
            "mode": report.mode.value,
            "same_snapshot_as_copy": report.same_snapshot,
            "check_scope": report.check_scope,
            "window": report.window or "",
            "seconds": dg.MetadataValue.float(round(report.seconds, 4)),
        },
    )


#: Seconds between progress lines in Dagster's run log (a stream's end is always logged).
RUN_LOG_PROGRESS_INTERVAL = 5.0


def _progress_logger(context: dg.AssetExecutionContext) -> ProgressCallback:
    """Progress into the run log (every 5 s, and each stream's total) and the CLI's sink."""
    sink = progress_sink.get()
    last_logged: dict[str, float] = {}

    def report(p: Progress) -> None:
        now = time.monotonic()
        last = last_logged.get(p.step)
        if p.final or last is None or now - last >= RUN_LOG_PROGRESS_INTERVAL:
            last_logged[p.step] = now
            context.log.info(describe_progress(p))
        if sink is not None:
            sink(p)

    return report


def _copy_table(
    context: dg.AssetExecutionContext,
    table: TableSpec,
    *,
    source: PostgresResource,
    target: PostgresResource,
    verify_after: bool,
    partition_keys: tuple[str, ...] | None = None,
) -> Replication:
    """Replicate `table` (verifying it in the copy's snapshot when asked), logging each end."""
    which = f", partitions {range_label(partition_keys)}" if partition_keys else ""
    context.log.info(
        f"{table.label}: copying from {table.source_label} "
        f"({source.describe()} -> {target.describe()}), mode {table.mode.value}{which}"
    )
    done = replicate(
        table,
        source,
        target,
        verify=verify_after,
        progress=_progress_logger(context),
        attempts=1,  # retries are Dagster's step retries (step_retries.py)
        partition_keys=partition_keys,
    )
    r = done.result
    for change in r.schema_changes:
        context.log.info(f"{table.label}: schema change: {change.describe()}")
    context.log.info(
        f"{table.label}: {r.rows_copied:,} rows, {r.bytes / 1e6:,.1f} MB "
        f"({r.copy_format}, {r.path}) in {r.seconds:.2f} s: inserted {r.inserted}, "
        f"updated {r.updated}, deleted {r.deleted}"
    )
    return done


def _run_table(
    context: dg.AssetExecutionContext,
    table: TableSpec,
    *,
    asset_key: dg.AssetKey,
    check_key: dg.AssetCheckKey,
    source: PostgresResource,
    target: PostgresResource,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult | dg.AssetCheckEvaluation]:
    """The op body: copy (when the asset is selected), then the check (when it is selected)."""
    copy_selected = asset_key in context.selected_asset_keys
    check_selected = check_key in context.selected_asset_check_keys
    if table.partition is not None:
        yield from _run_partitions(
            context,
            table,
            asset_key=asset_key,
            copy_selected=copy_selected,
            check_selected=check_selected,
            source=source,
            target=target,
        )
        return
    try:
        if copy_selected:
            done = _copy_table(
                context,
                table,
                source=source,
                target=target,
                verify_after=check_selected,
            )
            yield dg.MaterializeResult(
                asset_key=asset_key,
                metadata=materialize_metadata(table, done.result, done.docs),
            )
            report = done.report
        else:
            report = verify(table, source, target, attempts=1) if check_selected else None
    except Exception as exc:  # each kind is sorted into a step retry or a failure
        fail_or_retry(context, table, exc, attempts=attempts_for(table, target))
    if report is not None:
        context.log.info(report.summary)
        yield check_result(asset_key, report)


def _run_partitions(
    context: dg.AssetExecutionContext,
    table: TableSpec,
    *,
    asset_key: dg.AssetKey,
    copy_selected: bool,
    check_selected: bool,
    source: PostgresResource,
    target: PostgresResource,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckEvaluation]:
    """The op body of a partitioned table: one copy over the run's partitions.

    Then results per partition: the materialization with `dagster/partition_row_count`, and
    an `integrity` evaluation.
    """
    keys = tuple(context.partition_keys)
    try:
        if copy_selected:
            done = _copy_table(
                context,
                table,
                source=source,
                target=target,
                verify_after=check_selected,
                partition_keys=keys,
            )
            outcome = done.partitions
            assert outcome is not None
            for key in keys:
                context.add_asset_metadata(
                    {PARTITION_ROW_COUNT: dg.MetadataValue.int(outcome.rows.get(key, 0))},
                    asset_key=asset_key,
                    partition_key=key,
                )
            metadata = materialize_metadata(table, done.result)
            metadata[SCOPE] = outcome.scope
            metadata[PARTITIONS] = range_label(keys)
            yield dg.MaterializeResult(asset_key=asset_key, metadata=metadata)
        elif check_selected:
            outcome = verify_partitions(table, source, target, keys, attempts=1)
        else:
            return
    except Exception as exc:  # each kind is sorted into a step retry or a failure
        fail_or_retry(context, table, exc, attempts=attempts_for(table, target))
    if check_selected:
        yield from _partition_checks(context, table, asset_key, outcome)


def _partition_checks(
    context: dg.AssetExecutionContext,
    table: TableSpec,
    asset_key: dg.AssetKey,
    outcome: PartitionOutcome,
) -> Iterator[dg.AssetCheckEvaluation]:
    """One `integrity` evaluation per partition; a range that passed as a whole says so."""
    whole = range_label(outcome.keys)
    logged: set[int] = set()
    for key in outcome.keys:
        report = outcome.reports[key]
        if id(report) not in logged:
            logged.add(id(report))
            context.log.info(report.summary)
        result = check_result(asset_key, report)
        shared = len(outcome.keys) > 1 and all(outcome.reports[k] is report for k in outcome.keys)
        compared = whole if shared else key
        description = report.summary + (f" (compared as range {whole})" if shared else "")
        yield dg.AssetCheckEvaluation(
            asset_key=asset_key,
            check_name=INTEGRITY_CHECK,
            passed=report.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=description,
            blocking=table.blocking,
            partition=key,
            metadata={**result.metadata, "partitions_compared": compared},
        )


def build_table_asset(
    table: TableSpec, *, translator: StagecopyTranslator | None = None, names: Names = PLAIN
) -> dg.AssetsDefinition:
    """One asset (and its `integrity` check) that replicates `table`.

    It reads the resources `names.source` and `names.target` (`source` and `target` unless the
    replication has a name).

    Example:
        >>> spec = load_spec({"tables": [{"source": "public.orders"}]})  # doctest: +SKIP
        >>> build_table_asset(spec.tables[0]).key
        AssetKey(['orders'])
    """
    translator = translator or StagecopyTranslator()
    asset_spec = translator.get_asset_spec(table)
    check_spec = translator.get_check_spec(table, asset_spec.key)
    partitions_def = partitions_definition(table.partition) if table.partition else None
    if partitions_def is not None:
        # Each partition is a WHERE scope; a backfill of many is one run and one COPY stream.
        asset_spec = asset_spec.replace_attributes(partitions_def=partitions_def)
        check_spec = check_spec._replace(partitions_def=partitions_def)

    @dg.multi_asset(
        name=names.of(f"stagecopy_{table.asset_name}"),
        specs=[asset_spec],
        check_specs=[check_spec],
        can_subset=True,
        pool=table.pool,
        retry_policy=retry_policy(table),
        required_resource_keys={names.source, names.target},
        backfill_policy=dg.BackfillPolicy.single_run() if partitions_def is not None else None,
    )
    def _replicate(
        context: dg.AssetExecutionContext,
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult | dg.AssetCheckEvaluation]:
        yield from _run_table(
            context,
            table,
            asset_key=asset_spec.key,
            check_key=check_spec.key,
            source=getattr(context.resources, names.source),
            target=getattr(context.resources, names.target),
        )

    return _replicate
