"""One table of the spec: an entry of `tables:` merged with `defaults:`, validated.

Everything about one table that can be checked without a database is checked here, when the
definitions load; the value types and coercers of its fields are in
:mod:`stagecopy_dagster.spec_fields`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from stagecopy_dagster.identifiers import QualifiedName, asset_name_for, is_valid_dagster_name
from stagecopy_dagster.partitions import PartitionSpec
from stagecopy_dagster.spec_fields import (
    EMAIL_RE,
    INTERVAL_RE,
    TAG_KEY_RE,
    TAG_VALUE_RE,
    TEAM_RE,
    Automation,
    Freshness,
    MaskKind,
    Mode,
    RetrySpec,
    SchemaPolicy,
    as_column,
    as_columns,
    as_freshness,
    as_mask,
    as_qualified,
    as_query,
    as_tags,
    as_where,
    is_valid_cron,
)
from stagecopy_dagster.sqlguard import CheckedSql


class TableSpec(BaseModel):
    """One replicated table: an entry of `tables:` merged with `defaults:`."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    source: Annotated[QualifiedName | None, BeforeValidator(as_qualified)] = Field(
        default=None, description="Source table, `schema.table` (PostgreSQL quoting rules)."
    )
    query: Annotated[CheckedSql | None, BeforeValidator(as_query)] = Field(
        default=None, description="A single SELECT run on the source instead of a table."
    )
    target: Annotated[QualifiedName | None, BeforeValidator(as_qualified)] = Field(
        default=None, description="Target table; defaults to the source table's name."
    )
    primary_key: Annotated[tuple[str, ...] | None, BeforeValidator(as_columns)] = Field(
        default=None, description="Key columns; defaults to the source table's primary key."
    )
    where: Annotated[CheckedSql | None, BeforeValidator(as_where)] = Field(
        default=None, description="Scope: one boolean SQL expression, applied on both sides."
    )
    incremental_field: Annotated[str | None, BeforeValidator(as_column)] = Field(
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
    tags: Annotated[tuple[tuple[str, str], ...], BeforeValidator(as_tags)] = Field(
        default=(), description="Asset tags, `{key: value}` (kept as pairs: the spec is frozen)."
    )
    kinds: tuple[str, ...] = Field(
        default=(), description="Extra kinds shown in the UI, besides `postgres`."
    )
    code_version: str | None = Field(
        default=None, description="Asset code version (bump it when the copy logic changes)."
    )
    freshness: Annotated[Freshness | None, BeforeValidator(as_freshness)] = Field(
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
    columns: Annotated[tuple[str, ...] | None, BeforeValidator(as_columns)] = Field(
        default=None, description="Copy only these source columns (the key included)."
    )
    exclude_columns: Annotated[tuple[str, ...] | None, BeforeValidator(as_columns)] = Field(
        default=None, description="Copy every source column but these."
    )
    mask: Annotated[tuple[tuple[str, MaskKind], ...] | None, BeforeValidator(as_mask)] = Field(
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
        if value is not None and not INTERVAL_RE.match(value):
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
            if not (EMAIL_RE.match(owner) or TEAM_RE.match(owner)):
                raise ValueError(f"owner {owner!r} must be an email or 'team:name'")
        return value

    @field_validator("tags")
    @classmethod
    def _check_tags(cls, value: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        for key, tag in value:
            if not TAG_KEY_RE.match(key):
                raise ValueError(f"tag key {key!r}: use letters, digits, '_', '-', '.' (<= 63)")
            if not TAG_VALUE_RE.match(tag):
                raise ValueError(f"tag {key}: value {tag!r}: use letters, digits, '_', '-', '.'")
        return value

    @field_validator("schedule", "observe_schedule", "check_schedule")
    @classmethod
    def _check_cron(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and not is_valid_cron(value):
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
