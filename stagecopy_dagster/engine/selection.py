"""Which source columns are copied, and which are masked: `columns`, `exclude_columns`, `mask`.

:func:`select_columns` is pure: from the spec and the source's columns it returns the columns
the copy delivers (typed as they arrive: a `hash` mask is `text`, a `null` mask nullable) and,
when anything is masked, the :class:`~stagecopy_dagster.statements.projection.Projection`
every source read goes through, so masking happens in the source's SELECT.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stagecopy_dagster.engine.types import Column
from stagecopy_dagster.errors import SpecError
from stagecopy_dagster.identifiers import QualifiedName
from stagecopy_dagster.spec import MaskKind, TableSpec
from stagecopy_dagster.sqlguard import CheckedSql
from stagecopy_dagster.statements.projection import Projected, Projection


@dataclass(frozen=True)
class Selection:
    """The columns a copy reads, and how."""

    columns: tuple[Column, ...]
    relation: QualifiedName | CheckedSql | Projection
    """The base relation, or a :class:`Projection` of it when a column is masked."""

    @property
    def hashes(self) -> bool:
        """Whether a column is `hash`-masked (the source session needs the key)."""
        return isinstance(self.relation, Projection) and any(
            c.mask == MaskKind.HASH.value for c in self.relation.columns
        )


def select_columns(
    table: TableSpec,
    base: QualifiedName | CheckedSql,
    columns: Sequence[Column],
    key: Sequence[str],
) -> Selection:
    """Apply `columns`, `exclude_columns` and `mask` to the source's `columns`.

    Raises :class:`SpecError` (naming the table) for a name the source lacks and for a key
    column that is masked, excluded or left out.
    """
    names = [c.name for c in columns]
    masks = table.masks
    for what, listed in (
        ("columns", table.columns or ()),
        ("exclude_columns", table.exclude_columns or ()),
        ("mask", tuple(masks)),
    ):
        unknown = [n for n in listed if n not in names]
        if unknown:
            raise SpecError(
                f"{what} names {', '.join(map(repr, unknown))}, not a column of the source "
                f"(columns: {', '.join(names)})",
                table=table.label,
            )
    chosen = [
        c
        for c in columns
        if (table.columns is None or c.name in table.columns)
        and c.name not in (table.exclude_columns or ())
    ]
    chosen_names = {c.name for c in chosen}
    for col in key:
        if col not in chosen_names:
            raise SpecError(
                f"key column {col!r} must be copied (it is left out by "
                f"{'columns' if table.columns is not None else 'exclude_columns'})",
                table=table.label,
            )
        if col in masks:
            raise SpecError(
                f"key column {col!r} cannot be masked (rows are matched by it)",
                table=table.label,
            )
    if not masks:
        return Selection(tuple(chosen), base)
    delivered: list[Column] = []
    projected: list[Projected] = []
    for c in chosen:
        kind = masks.get(c.name)
        if kind is MaskKind.HASH:
            delivered.append(Column(c.name, "text", not_null=c.not_null))
            projected.append(Projected(c.name, "hash"))
        elif kind is MaskKind.NULL:
            delivered.append(Column(c.name, c.type, binary_safe=c.binary_safe))
            projected.append(Projected(c.name, "null", c.type))
        else:
            delivered.append(c)
            projected.append(Projected(c.name))
    return Selection(tuple(delivered), Projection(base, tuple(projected)))
