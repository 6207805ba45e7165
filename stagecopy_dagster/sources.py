"""The source tables as observable external assets: lineage, and automation on change.

Each table the spec reads becomes an upstream asset (kind `postgres`) that every replica reading
it depends on, so the lineage graph shows source -> replica. Observing them is cheap: the same
signals the source-change sensor uses (PostgreSQL's insert/update/delete counters and file node,
and the scope's max watermark and count for tables with an `incremental_field`) become a
`DataVersion`. With `automation: on_source_change`, Dagster observes the source on
`observe_schedule` and materializes the replica only when that version moved.
"""

import hashlib
import json
import warnings
from collections import defaultdict
from collections.abc import Iterator, Sequence

import dagster as dg
import psycopg

from stagecopy_dagster import statements as st
from stagecopy_dagster.automation import change_signature
from stagecopy_dagster.identifiers import QualifiedName
from stagecopy_dagster.naming import PLAIN, Names
from stagecopy_dagster.resources import PostgresResource
from stagecopy_dagster.spec import TableSpec
from stagecopy_dagster.translator import StagecopyTranslator, source_tables


def source_version(
    conn: psycopg.Connection, source: QualifiedName, readers: Sequence[TableSpec]
) -> tuple[dg.DataVersion, dict[str, object]]:
    """The data version of one source table, and the signals it is made of.

    `readers` are the spec's tables that read `source`; those copying it incrementally add
    their scope's watermark signature, so a change outside every scope still counts (the
    counters see it) but the version is the same on every server and run for the same data.
    """
    row = conn.execute(st.TABLE_CHANGE_COUNTERS, (source.schema, source.name)).fetchone()
    signals: dict[str, object] = {
        "inserted": row[0] if row else None,
        "updated": row[1] if row else None,
        "deleted": row[2] if row else None,
        "filenode": row[3] if row else None,
    }
    for table in readers:
        if table.incremental_field and table.source == source:
            signals[f"watermark {table.label}"] = change_signature(conn, table)
    digest = hashlib.sha256(json.dumps(signals, sort_keys=True, default=str).encode())
    return dg.DataVersion(digest.hexdigest()[:32]), signals


def build_source_assets(
    tables: Sequence[TableSpec],
    *,
    translator: StagecopyTranslator | None = None,
    names: Names = PLAIN,
) -> list[dg.AssetsDefinition]:
    """One observable multi-asset over every source table the spec reads (none if none)."""
    translator = translator or StagecopyTranslator()
    specs: dict[dg.AssetKey, dg.AssetSpec] = {}
    readers: dict[dg.AssetKey, list[TableSpec]] = defaultdict(list)
    relation: dict[dg.AssetKey, QualifiedName] = {}
    for table in tables:
        for source, spec in zip(
            source_tables(table), translator.get_source_specs(table), strict=True
        ):
            if spec.key not in specs or spec.automation_condition is not None:
                specs[spec.key] = spec
            readers[spec.key].append(table)
            relation[spec.key] = source
    if not specs:
        return []

    def _observe(context: dg.AssetExecutionContext) -> Iterator[dg.ObserveResult]:
        source: PostgresResource = getattr(context.resources, names.source)
        with source.connect(autocommit=True) as conn:
            for key in sorted(context.selected_asset_keys, key=lambda k: k.to_user_string()):
                version, signals = source_version(conn, relation[key], readers[key])
                yield dg.ObserveResult(
                    asset_key=key,
                    data_version=version,
                    metadata={
                        name: dg.MetadataValue.text(str(value)) for name, value in signals.items()
                    },
                )

    with warnings.catch_warnings():
        # Beta in Dagster 1.13; the one public way to observe many tables over one connection.
        warnings.simplefilter("ignore", dg.BetaWarning)
        observer = dg.multi_observable_source_asset(
            name=names.of("stagecopy_sources"),
            specs=list(specs.values()),
            can_subset=True,
            required_resource_keys={names.source},
            description="Observe the source tables (change counters and watermarks).",
        )(_observe)
    return [observer]
