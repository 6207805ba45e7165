"""The replication spec: frozen, validated models of the YAML users write.

A spec lists tables; each entry says where rows come from (`source` table or `query`), where they
go (`target`), how they are matched (`primary_key`), which rows are in scope (`where`), what is new
(`incremental_field`, `lookback`) and how they are applied (`mode`). Everything that can be checked
without a database is checked here, when definitions load; what needs the database (does the
table exist, is the key a column) is checked by the copier before anything is written.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from stagecopy_dagster.durations import parse_duration
from stagecopy_dagster.errors import SpecError, StagecopyError
from stagecopy_dagster.identifiers import (
    QualifiedName,
    asset_name_for,
    is_valid_dagster_name,
    parse_column_name,
    parse_qualified_name,
    split_identifier_path,
)
from stagecopy_dagster.partitions import PartitionSpec
from stagecopy_dagster.sqlguard import CheckedSql, parse_query, parse_where


def _is_valid_cron(value: str) -> bool:
    """Whether Dagster accepts `value` as a schedule's cron string.

    Asks Dagster's public `ScheduleDefinition`, the very check the schedule built from this
    spec goes through later, so the spec can never accept a cron Dagster refuses (five fields,
    no 30th of February). Imported here: loading a spec must not load Dagster.
    """
    import dagster as dg  # noqa: PLC0415 (loading a spec must not load Dagster)

    with warnings.catch_warnings():  # out-of-range steps warn again when the schedule is built
        warnings.simplefilter("ignore")
        try:
            dg.ScheduleDefinition(name="cron_check", cron_schedule=value, job_name="cron_check")
        except (dg.DagsterInvalidDefinitionError, ValueError, TypeError):
            return False
    return True


#: Keys that identify one table and so cannot be set under `defaults`.
PER_TABLE_KEYS = frozenset({"source", "query", "target", "name"})
_INTERVAL_RE = re.compile(
    r"^\s*\d+(\.\d+)?\s*(microseconds?|milliseconds?|seconds?|secs?|minutes?|mins?|hours?|"
    r"days?|weeks?)\s*$",
    re.IGNORECASE,
)

_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_TEAM_RE = re.compile(r"^team:[A-Za-z0-9_-]+$")
# Dagster's rules for asset tags (keys may have one `namespace/`; values are short words).
_TAG_KEY_RE = re.compile(r"^([A-Za-z0-9_.-]{1,63}/)?[A-Za-z0-9_.-]{1,63}$")
_TAG_VALUE_RE = re.compile(r"^[A-Za-z0-9_.-]{0,63}$")


class SchemaPolicy(StrEnum):
    """What a run does when the source's columns differ from the target's."""

    EVOLVE = "evolve"
    """Add new source columns, widen types losslessly, keep (and NULL) columns gone from the
    source; any other difference is an error."""
    FAIL = "fail"
    """Any difference stops the run before a write."""
    IGNORE = "ignore"
    """Copy the columns both sides have; change nothing."""


class MaskKind(StrEnum):
    """How a masked column is copied (computed in the source SELECT)."""

    HASH = "hash"
    """Lowercase hex HMAC-SHA256 of the value's text, keyed with `$STAGECOPY_MASK_KEY`."""
    NULL = "null"
    """NULL in every row."""


class Mode(StrEnum):
    """How the rows in scope are applied to the target table."""

    MERGE = "merge"
    """Upsert by primary key; target rows missing from the source stay."""
    SYNC = "sync"
    """Upsert by primary key and delete target rows in scope whose key left the source."""
    REPLACE = "replace"
    """Replace the target rows in scope with the source rows in scope."""
    APPEND = "append"
    """Insert the source rows in scope."""

    @property
    def needs_key(self) -> bool:
        """Whether this mode matches rows by primary key."""
        return self in (Mode.MERGE, Mode.SYNC)


def _as_qualified(value: Any) -> Any:
    return parse_qualified_name(value) if isinstance(value, str) else value


def _as_columns(value: Any) -> Any:
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list | tuple):
        return tuple(parse_column_name(v) if isinstance(v, str) else v for v in value)
    return value


def _as_column(value: Any) -> Any:
    return parse_column_name(value) if isinstance(value, str) else value


def _as_mask(value: Any) -> Any:
    """`{column: hash | null}` as sorted (column, kind) pairs: a frozen spec stays hashable."""
    if value is None or isinstance(value, tuple):
        return value
    if not isinstance(value, Mapping):
        raise ValueError("`mask` must map column names to hash or null")
    pairs: dict[str, MaskKind] = {}
    for name, given in value.items():
        column = parse_column_name(str(name))
        kind = MaskKind.NULL.value if given is None else given  # YAML reads `null` as None
        if kind not in {k.value for k in MaskKind}:
            raise ValueError(f"mask of {column!r}: {kind!r} is not one of hash, null")
        if column in pairs:
            raise ValueError(f"mask lists column {column!r} twice")
        pairs[column] = MaskKind(kind)
    return tuple(sorted(pairs.items()))


def _as_where(value: Any) -> Any:
    return parse_where(value) if isinstance(value, str) else value


def _as_query(value: Any) -> Any:
    return parse_query(value) if isinstance(value, str) else value


class Automation(StrEnum):
    """What makes Dagster's declarative automation materialize a table by itself."""

    NONE = "none"
    """Nothing: runs come from schedules, the sensor, the UI or the CLI."""
    ON_SOURCE_CHANGE = "on_source_change"
    """A run when the observed source table changed (its data version moved)."""


class Freshness(BaseModel):
    """How stale a table may get before Dagster marks it late: `{max_lag: 2h, warn_lag: 1h}`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_lag: str = Field(description="Fail when the last copy is older than this, e.g. '2h'.")
    warn_lag: str | None = Field(
        default=None, description="Warn when the last copy is older than this (< max_lag)."
    )

    @field_validator("max_lag", "warn_lag")
    @classmethod
    def _check_duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @model_validator(mode="after")
    def _check_order(self) -> Freshness:
        if self.warn_lag is not None and parse_duration(self.warn_lag) >= self.fail_window:
            raise ValueError("freshness.warn_lag must be shorter than max_lag")
        return self

    @property
    def fail_window(self) -> timedelta:
        """`max_lag` as a timedelta."""
        return parse_duration(self.max_lag)

    @property
    def warn_window(self) -> timedelta | None:
        """`warn_lag` as a timedelta (None when not set)."""
        return parse_duration(self.warn_lag) if self.warn_lag is not None else None


def _as_tags(value: Any) -> Any:
    # `{tier: gold}` in YAML; a tuple of pairs inside, so a TableSpec stays hashable.
    if isinstance(value, Mapping):
        return tuple(
            sorted((str(k), v if isinstance(v, str) else str(v)) for k, v in value.items())
        )
    return value


def _as_freshness(value: Any) -> Any:
    # `freshness: 2h` is short for `freshness: {max_lag: 2h}`.
    return {"max_lag": value} if isinstance(value, str) else value


class RetrySpec(BaseModel):
    """`retries:` of a table: Dagster step retries of transient failures (connection lost...)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    attempts: int | None = Field(
        default=None,
        ge=1,
        le=50,
        description="Attempts in all (1 = no retry); default: the target resource's `retries`.",
    )
    delay: float | str = Field(
        default=1.0,
        description="Wait before the first retry ('1s', '2 minutes' or seconds); doubles each "
        "retry, with jitter.",
    )

    @field_validator("delay")
    @classmethod
    def _check_delay(cls, value: float | str) -> float | str:
        if isinstance(value, str):
            parse_duration(value)
        elif value < 0:
            raise ValueError("delay must not be negative")
        return value

    @property
    def delay_seconds(self) -> float:
        """`delay` in seconds."""
        if isinstance(self.delay, str):
            return parse_duration(self.delay).total_seconds()
        return float(self.delay)


class TableSpec(BaseModel):
    """One replicated table: an entry of `tables:` merged with `defaults:`."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    source: Annotated[QualifiedName | None, BeforeValidator(_as_qualified)] = Field(
        default=None, description="Source table, `schema.table` (PostgreSQL quoting rules)."
    )
    query: Annotated[CheckedSql | None, BeforeValidator(_as_query)] = Field(
        default=None, description="A single SELECT run on the source instead of a table."
    )
    target: Annotated[QualifiedName | None, BeforeValidator(_as_qualified)] = Field(
        default=None, description="Target table; defaults to the source table's name."
    )
    primary_key: Annotated[tuple[str, ...] | None, BeforeValidator(_as_columns)] = Field(
        default=None, description="Key columns; defaults to the source table's primary key."
    )
    where: Annotated[CheckedSql | None, BeforeValidator(_as_where)] = Field(
        default=None, description="Scope: one boolean SQL expression, applied on both sides."
    )
    incremental_field: Annotated[str | None, BeforeValidator(_as_column)] = Field(
        default=None, description="Copy only rows whose field is newer than the target's max."
    )
    lookback: str | None = Field(
        default=None, description="Re-copy this much before the watermark, e.g. '10 minutes'."
    )
    mode: Mode = Field(default=Mode.MERGE, description="merge | sync | replace | append")
    name: str | None = Field(default=None, description="Asset name (^[A-Za-z0-9_]+$).")
    group: str | None = Field(default=None, description="Asset group; defaults to the schema.")
    schedule: str | None = Field(default=None, description="Cron schedule for this table.")
    check_schedule: str | None = Field(
        default=None,
        description="Cron schedule of the full-scope `integrity` check alone (no copy).",
    )
    description: str | None = Field(
        default=None, description="Asset description; defaults to the source table's COMMENT."
    )
    owners: tuple[str, ...] = Field(default=(), description="Asset owners: emails or `team:name`.")
    tags: Annotated[tuple[tuple[str, str], ...], BeforeValidator(_as_tags)] = Field(
        default=(), description="Asset tags, `{key: value}` (kept as pairs: the spec is frozen)."
    )
    kinds: tuple[str, ...] = Field(
        default=(), description="Extra kinds shown in the UI, besides `postgres`."
    )
    code_version: str | None = Field(
        default=None, description="Asset code version (bump it when the copy logic changes)."
    )
    freshness: Annotated[Freshness | None, BeforeValidator(_as_freshness)] = Field(
        default=None, description="Freshness policy: `{max_lag: 2h}` (and optional warn_lag)."
    )
    automation: Automation = Field(
        default=Automation.NONE,
        description="none | on_source_change: let Dagster's automation copy on source changes.",
    )
    observe_schedule: str = Field(
        default="*/5 * * * *",
        description="Cron of the source observations that `automation: on_source_change` uses.",
    )
    parallel: int = Field(
        default=1, ge=1, le=64, description="Parallel COPY streams for one large table."
    )
    diff: bool = Field(
        default=True,
        description="Full re-copies into a filled target compare key and row hash first and "
        "copy only new and changed rows; false streams every row into staging.",
    )
    pool: str = Field(
        default="stagecopy",
        description="Dagster pool: limits how many tables copy at once (per database).",
    )
    blocking: bool = Field(
        default=False, description="Whether a failed integrity check fails the run."
    )
    on_schema_change: SchemaPolicy = Field(
        default=SchemaPolicy.EVOLVE,
        description="evolve (add columns, widen types, keep gone columns) | fail | ignore",
    )
    columns: Annotated[tuple[str, ...] | None, BeforeValidator(_as_columns)] = Field(
        default=None, description="Copy only these source columns (the key included)."
    )
    exclude_columns: Annotated[tuple[str, ...] | None, BeforeValidator(_as_columns)] = Field(
        default=None, description="Copy every source column but these."
    )
    mask: Annotated[tuple[tuple[str, MaskKind], ...] | None, BeforeValidator(_as_mask)] = Field(
        default=None,
        description="Columns masked in the source SELECT: `hash` (HMAC-SHA256 hex, keyed by "
        "$STAGECOPY_MASK_KEY) or `null`.",
    )
    partition: PartitionSpec | None = Field(
        default=None,
        description="Dagster partitions as WHERE scopes: {column, by: day, start, timezone} "
        "or {column, values: [...]}; see docs/partitions.md.",
    )
    retries: RetrySpec | None = Field(
        default=None, description="Step retries of transient failures: {attempts, delay}."
    )

    @field_validator("lookback")
    @classmethod
    def _check_lookback(cls, value: str | None) -> str | None:
        if value is not None and not _INTERVAL_RE.match(value):
            raise ValueError(f"lookback {value!r} must look like '10 minutes' or '2 hours'")
        return value

    @field_validator("name", "group", "pool")
    @classmethod
    def _check_dagster_name(cls, value: str | None) -> str | None:
        if value is not None and not is_valid_dagster_name(value):
            raise ValueError(f"{value!r} must match ^[A-Za-z0-9_]+$")
        return value

    @field_validator("owners")
    @classmethod
    def _check_owners(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for owner in value:
            if not (_EMAIL_RE.match(owner) or _TEAM_RE.match(owner)):
                raise ValueError(f"owner {owner!r} must be an email or 'team:name'")
        return value

    @field_validator("tags")
    @classmethod
    def _check_tags(cls, value: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        for key, tag in value:
            if not _TAG_KEY_RE.match(key):
                raise ValueError(f"tag key {key!r}: use letters, digits, '_', '-', '.' (<= 63)")
            if not _TAG_VALUE_RE.match(tag):
                raise ValueError(f"tag {key}: value {tag!r}: use letters, digits, '_', '-', '.'")
        return value

    @field_validator("schedule", "observe_schedule", "check_schedule")
    @classmethod
    def _check_cron(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and not _is_valid_cron(value):
            raise ValueError(f"{info.field_name} {value!r} is not a valid cron string")
        return value

    @model_validator(mode="after")
    def _check_shape(self) -> TableSpec:
        if (self.source is None) == (self.query is None):
            raise ValueError("give exactly one of `source` (a table) or `query` (a SELECT)")
        if self.query is not None:
            if self.target is None:
                raise ValueError("a `query` source needs an explicit `target`")
            if self.mode.needs_key and not self.primary_key:
                raise ValueError(f"a `query` source in mode {self.mode.value} needs `primary_key`")
        if self.primary_key is not None and len(set(self.primary_key)) != len(self.primary_key):
            raise ValueError("primary_key lists a column twice")
        if self.lookback and not self.incremental_field:
            raise ValueError("`lookback` needs `incremental_field`")
        if self.lookback and self.mode is Mode.APPEND:
            raise ValueError(
                "`lookback` re-reads rows and append has no key to match them (they would be "
                "inserted twice); use mode merge, or drop `lookback`"
            )
        if self.incremental_field and self.mode is Mode.REPLACE:
            raise ValueError("mode replace copies the whole scope; drop `incremental_field`")
        check_column_selection(self)
        if self.partition is not None and self.incremental_field:
            # A backfill of several partitions would take the watermark over the whole range
            # and skip the rows of partitions not loaded yet; the partition is the increment.
            raise ValueError(
                "`partition` and `incremental_field` do not mix: each partition is copied "
                "whole (a range's watermark would skip partitions not loaded yet); drop "
                "`incremental_field`"
            )
        return self

    @property
    def masks(self) -> dict[str, MaskKind]:
        """`mask` as a mapping of column name to kind."""
        return dict(self.mask or ())

    @property
    def target_table(self) -> QualifiedName:
        """The target table (the source's name when no target is given)."""
        target = self.target or self.source
        assert target is not None  # guaranteed by _check_shape
        return target

    @property
    def asset_name(self) -> str:
        """The Dagster asset name: `name`, or one derived from the target table."""
        return self.name or asset_name_for(self.target_table)

    @property
    def group_name(self) -> str:
        """The Dagster group: `group`, or one derived from the target schema."""
        return self.group or asset_name_for(QualifiedName("public", self.target_table.schema))

    @property
    def label(self) -> str:
        """How messages name this table: the target table as it would be written in SQL."""
        return str(self.target_table)

    @property
    def source_label(self) -> str:
        """The source as messages name it."""
        return str(self.source) if self.source is not None else "query"


def check_column_selection(table: TableSpec) -> None:
    """`columns`, `exclude_columns` and `mask` agree with each other and the key (no database).

    What needs the source (do the columns exist, is the source's own key masked) is checked
    when a run describes the source.
    """
    if table.columns is not None and table.exclude_columns is not None:
        raise ValueError("give `columns` (copy only these) or `exclude_columns`, not both")
    for what, names in (("columns", table.columns), ("exclude_columns", table.exclude_columns)):
        if names is not None and len(set(names)) != len(names):
            raise ValueError(f"{what} lists a column twice")
    if table.columns is not None and not table.columns:
        raise ValueError("`columns` is empty: list the columns to copy")
    excluded = table.exclude_columns or ()
    for col in table.primary_key or ():
        _check_kept(table, col, "primary_key column")
        if col in table.masks:
            raise ValueError(f"primary_key column {col!r} cannot be masked (rows match by it)")
    if table.incremental_field is not None:
        _check_kept(table, table.incremental_field, "incremental_field")
        if table.incremental_field in table.masks:
            raise ValueError(f"incremental_field {table.incremental_field!r} cannot be masked")
    for col in table.masks:
        if col in excluded:
            raise ValueError(f"column {col!r} is both masked and excluded")
        if table.columns is not None and col not in table.columns:
            raise ValueError(f"masked column {col!r} is not in `columns`")


def _check_kept(table: TableSpec, column: str, what: str) -> None:
    """A column the copy needs (key, watermark) must be selected."""
    if table.columns is not None and column not in table.columns:
        raise ValueError(f"`columns` must include the {what} {column!r}")
    if column in (table.exclude_columns or ()):
        raise ValueError(f"{what} {column!r} cannot be excluded")


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
