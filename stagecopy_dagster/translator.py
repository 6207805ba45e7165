"""Translate one table of the spec into Dagster specs: its source, its asset and its check."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from types import MappingProxyType

import dagster as dg

from stagecopy_dagster.comments import NO_DOCS, TableDocs
from stagecopy_dagster.identifiers import QualifiedName, asset_name_for
from stagecopy_dagster.spec import Automation, TableSpec

#: The name of every table's asset check.
INTEGRITY_CHECK = "integrity"
#: The first part of every source table's asset key: `source/<schema__table>`.
SOURCE_PREFIX = "source"


def source_tables(table: TableSpec) -> tuple[QualifiedName, ...]:
    """The source tables `table` reads: its `source`, or the tables its `query` names.

    An unqualified name in a query is read as `public.<name>` (the default search path).
    """
    if table.source is not None:
        return (table.source,)
    assert table.query is not None
    return tuple(QualifiedName(schema or "public", name) for schema, name in table.query.relations)


class StagecopyTranslator:
    """Turns a :class:`TableSpec` into Dagster specs: source tables, the asset, its check.

    Subclass it to change keys, groups or descriptions; every job, schedule, sensor and the CLI
    follow the keys it gives:

    Example:
        >>> class Prefixed(StagecopyTranslator):
        ...     def get_asset_spec(self, table):
        ...         spec = super().get_asset_spec(table)
        ...         return spec.replace_attributes(key=spec.key.with_prefix("replica"))
    """

    #: The replication's name (`build_definitions(name=...)`): prefixes source asset keys.
    replication: str = ""
    #: Source comments by table, read when the definitions load (see `stagecopy_dagster.comments`).
    source_docs: Mapping[QualifiedName, TableDocs] = MappingProxyType({})

    def bound(
        self, *, replication: str = "", source_docs: Mapping[QualifiedName, TableDocs] = {}
    ) -> StagecopyTranslator:
        """A copy of this translator for one replication (its name and its sources' comments)."""
        bound = copy.copy(self)
        bound.replication = replication
        bound.source_docs = MappingProxyType(dict(source_docs))
        return bound

    def docs(self, table: TableSpec) -> TableDocs:
        """The source comments of `table` (none for a `query` source or when not read)."""
        return self.source_docs.get(table.source, NO_DOCS) if table.source else NO_DOCS

    def get_source_key(self, source: QualifiedName) -> dg.AssetKey:
        """The key of one source table's external asset: `source/<schema__table>`."""
        key = dg.AssetKey([SOURCE_PREFIX, asset_name_for(source)])
        return key.with_prefix(self.replication) if self.replication else key

    def get_source_specs(self, table: TableSpec) -> list[dg.AssetSpec]:
        """The external assets of the source tables `table` reads (kind `postgres`)."""
        specs = []
        for source in source_tables(table):
            docs = self.source_docs.get(source, NO_DOCS)
            specs.append(
                dg.AssetSpec(
                    key=self.get_source_key(source),
                    group_name=table.group_name,
                    description=docs.comment or f"Source table {source}, read by stagecopy.",
                    kinds={"postgres"},
                    metadata={"dagster/table_name": f"{source.schema}.{source.name}"},
                    automation_condition=(
                        dg.AutomationCondition.cron_tick_passed(table.observe_schedule)
                        & ~dg.AutomationCondition.in_progress()
                        if table.automation is Automation.ON_SOURCE_CHANGE
                        else None
                    ),
                )
            )
        return specs

    def get_asset_spec(self, table: TableSpec) -> dg.AssetSpec:
        """The asset for `table`: key from `name` (or derived), lineage, docs and policies."""
        target = table.target_table
        scope = table.where.text if table.where is not None else "all rows"
        description = (
            table.description
            or self.docs(table).comment
            or (
                f"Replica of {table.source_label} in {target} (mode {table.mode.value}, "
                f"scope: {scope})."
            )
        )
        metadata = {
            "dagster/table_name": f"{target.schema}.{target.name}",
            "stagecopy/source": table.source_label,
            "stagecopy/mode": table.mode.value,
            "stagecopy/scope": scope,
        }
        if table.primary_key:
            metadata["stagecopy/primary_key"] = ", ".join(table.primary_key)
        if table.incremental_field:
            metadata["stagecopy/incremental_field"] = table.incremental_field
        freshness = table.freshness
        return dg.AssetSpec(
            key=dg.AssetKey(table.asset_name),
            deps=[self.get_source_key(s) for s in source_tables(table)],
            group_name=table.group_name,
            description=description,
            kinds={"postgres", *table.kinds},
            owners=list(table.owners) or None,
            tags=dict(table.tags) or None,
            code_version=table.code_version,
            metadata=metadata,
            freshness_policy=(
                dg.FreshnessPolicy.time_window(
                    fail_window=freshness.fail_window, warn_window=freshness.warn_window
                )
                if freshness is not None
                else None
            ),
            automation_condition=(
                dg.AutomationCondition.eager()
                if table.automation is Automation.ON_SOURCE_CHANGE
                else None
            ),
        )

    def get_check_spec(self, table: TableSpec, asset_key: dg.AssetKey) -> dg.AssetCheckSpec:
        """The `integrity` check: source scope vs target scope, same WHERE."""
        return dg.AssetCheckSpec(
            name=INTEGRITY_CHECK,
            asset=asset_key,
            blocking=table.blocking,
            description=(
                f"Compares the source scope with the target scope of {table.label} "
                f"(mode {table.mode.value}): missing, extra and changed rows."
            ),
        )
