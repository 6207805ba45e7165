"""The replication spec: frozen, validated models of the YAML users write.

A spec lists tables; each entry says where rows come from (`source` table or `query`), where they
go (`target`), how they are matched (`primary_key`), which rows are in scope (`where`), what is new
(`incremental_field`, `lookback`) and how they are applied (`mode`). Everything that can be checked
without a database is checked here, when definitions load; what needs the database (does the
table exist, is the key a column) is checked by the copier before anything is written.

This module holds the whole spec and how it is loaded; one table's entry is
:mod:`stagecopy_dagster.table_spec`, the fields' value types :mod:`stagecopy_dagster.spec_fields`
(both re-exported here).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from stagecopy_dagster.errors import SpecError, StagecopyError
from stagecopy_dagster.identifiers import QualifiedName, split_identifier_path
from stagecopy_dagster.spec_fields import (
    Automation,
    Freshness,
    MaskKind,
    Mode,
    RetrySpec,
    SchemaPolicy,
)
from stagecopy_dagster.table_spec import TableSpec

__all__ = [
    "PER_TABLE_KEYS",
    "Automation",
    "Freshness",
    "MaskKind",
    "Mode",
    "ReplicationSpec",
    "RetrySpec",
    "SchemaPolicy",
    "TableSpec",
    "load_spec",
    "parse_spec",
    "table_selectors",
]

#: Keys that identify one table and so cannot be set under `defaults`.
PER_TABLE_KEYS = frozenset({"source", "query", "target", "name"})


class ReplicationSpec(BaseModel):
    """A whole replication spec: defaults and tables."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tables: tuple[TableSpec, ...]

    def table(self, selector: str) -> TableSpec:
        """Find a table by asset name, target table name or source table name.

        A name is read as PostgreSQL reads it when no name matches it as written, so
        `'"선택"."Mixed Case"'` (as a spec quotes it) finds the table `선택."Mixed Case"`.
        """
        for table in self.tables:
            if selector in table_selectors(table):
                return table
        try:
            parts = tuple(split_identifier_path(selector, what="table name"))
        except SpecError:
            parts = ()
        for table in self.tables:
            names = [n for n in (table.target_table, table.source) if n is not None]
            if any(parts in ((n.schema, n.name), (n.name,)) for n in names):
                return table
        raise SpecError(f"no table matches {selector!r}")

    def select(self, selectors: list[str] | None) -> tuple[TableSpec, ...]:
        """The tables named by `selectors` (all tables when None or empty)."""
        if not selectors:
            return self.tables
        return tuple(dict.fromkeys(self.table(s) for s in selectors))


def table_selectors(table: TableSpec) -> set[str]:
    """Every name by which a user may select `table` on the command line."""
    names = {table.asset_name, str(table.target_table), table.target_table.name}
    names.add(f"{table.target_table.schema}.{table.target_table.name}")
    if table.source is not None:
        names |= {str(table.source), f"{table.source.schema}.{table.source.name}"}
    return names


def _entry_label(index: int, raw: Any) -> str:
    if isinstance(raw, Mapping):
        for key in ("name", "target", "source"):
            if isinstance(raw.get(key), str):
                return f"tables[{index}] ({raw[key]})"
    return f"tables[{index}]"


def _format_validation_error(entry: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown key {loc!r}"
            loc = ""
        elif err["type"] == "enum":
            expected = str(err.get("ctx", {}).get("expected", "")).replace("'", "")
            expected = expected.replace(" or ", ", ")
            msg = f"{err['input']!r} is not one of {expected}"
        lines.append(f"{entry}{'.' + loc if loc else ''}: {msg}")
    return "; ".join(lines)


def parse_spec(data: Mapping[str, Any] | None, *, origin: str = "spec") -> ReplicationSpec:
    """Validate a spec mapping; raise :class:`SpecError` naming the entry and the problem."""
    if not data:
        raise SpecError(f"{origin}: the spec is empty; it needs a `tables:` list")
    if not isinstance(data, Mapping):
        raise SpecError(f"{origin}: the spec must be a mapping with `tables:`")
    unknown = set(data) - {"defaults", "tables"}
    if unknown:
        raise SpecError(f"{origin}: unknown top-level key(s) {sorted(unknown)}")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise SpecError(f"{origin}: `defaults` must be a mapping")
    bad_defaults = PER_TABLE_KEYS & set(defaults)
    if bad_defaults:
        raise SpecError(f"{origin}: defaults cannot set {sorted(bad_defaults)} (one per table)")
    raw_tables = data.get("tables")
    if not isinstance(raw_tables, list) or not raw_tables:
        raise SpecError(f"{origin}: `tables` must be a non-empty list")

    tables: list[TableSpec] = []
    for index, raw in enumerate(raw_tables):
        entry = _entry_label(index, raw)
        if not isinstance(raw, Mapping):
            raise SpecError(f"{origin}: {entry} must be a mapping")
        try:
            tables.append(TableSpec.model_validate({**defaults, **raw}))
        except ValidationError as exc:
            raise SpecError(f"{origin}: {_format_validation_error(entry, exc)}") from None
        except StagecopyError as exc:
            # Keep the kind (UnsafeSqlError stays UnsafeSqlError); both are SpecErrors.
            kind = type(exc) if isinstance(exc, SpecError) else SpecError
            raise kind(f"{origin}: {entry}: {exc}") from None
    _check_unique(tables, origin=origin)
    return ReplicationSpec(tables=tuple(tables))


def _check_unique(tables: list[TableSpec], *, origin: str) -> None:
    targets: dict[QualifiedName, int] = {}
    names: dict[str, int] = {}
    for index, table in enumerate(tables):
        seen = targets.setdefault(table.target_table, index)
        if seen != index:
            raise SpecError(
                f"{origin}: tables[{index}] and tables[{seen}] both write {table.label}"
            )
        seen = names.setdefault(table.asset_name, index)
        if seen != index:
            raise SpecError(
                f"{origin}: tables[{index}] and tables[{seen}] would both be asset "
                f"{table.asset_name!r}; set `name:` on one of them"
            )


def load_spec(spec: str | os.PathLike[str] | Mapping[str, Any]) -> ReplicationSpec:
    """Load a spec from a YAML path or a mapping.

    Example:
        >>> load_spec({"tables": [{"source": "public.orders"}]}).tables[0].mode
        <Mode.MERGE: 'merge'>
    """
    if isinstance(spec, Mapping):
        return parse_spec(spec)
    path = Path(spec)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read spec {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    return parse_spec(data, origin=str(path))
