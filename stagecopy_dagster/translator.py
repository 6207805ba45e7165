"""Translate one table of the spec into Dagster specs: the asset and its `integrity` check."""

from __future__ import annotations

import dagster as dg

from stagecopy_dagster.spec import TableSpec

#: The name of every table's asset check.
INTEGRITY_CHECK = "integrity"


class StagecopyTranslator:
    """Turns a :class:`TableSpec` into an `AssetSpec` and an `AssetCheckSpec`.

    Subclass it to change keys, groups or descriptions:

    Example:
        >>> class Prefixed(StagecopyTranslator):
        ...     def get_asset_spec(self, table):
        ...         spec = super().get_asset_spec(table)
        ...         return spec.replace_attributes(key=spec.key.with_prefix("replica"))
    """

    def get_asset_spec(self, table: TableSpec) -> dg.AssetSpec:
        """The asset for `table`: key from `name` (or derived), group, description, kinds."""
        target = table.target_table
        scope = table.where.text if table.where is not None else "all rows"
        description = table.description or (
            f"Replica of {table.source_label} in {target} (mode {table.mode.value}, "
            f"scope: {scope})."
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
        return dg.AssetSpec(
            key=dg.AssetKey(table.asset_name),
            group_name=table.group_name,
            description=description,
            kinds={"postgres"},
            metadata=metadata,
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
