"""The spec's value types: modes and policies, the small nested models, and the coercers.

Each coercer turns what YAML gives (a string, a list, a mapping) into the frozen value a
:class:`~stagecopy_dagster.table_spec.TableSpec` field holds, validating it on the way; the
patterns check the free-text keys (`lookback`, `owners`, `tags`) as Dagster would.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from datetime import timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stagecopy_dagster.durations import parse_duration
from stagecopy_dagster.identifiers import parse_column_name, parse_qualified_name
from stagecopy_dagster.sqlguard import parse_query, parse_where


def is_valid_cron(value: str) -> bool:
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


INTERVAL_RE = re.compile(
    r"^\s*\d+(\.\d+)?\s*(microseconds?|milliseconds?|seconds?|secs?|minutes?|mins?|hours?|"
    r"days?|weeks?)\s*$",
    re.IGNORECASE,
)

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
TEAM_RE = re.compile(r"^team:[A-Za-z0-9_-]+$")
# Dagster's rules for asset tags (keys may have one `namespace/`; values are short words).
TAG_KEY_RE = re.compile(r"^([A-Za-z0-9_.-]{1,63}/)?[A-Za-z0-9_.-]{1,63}$")
TAG_VALUE_RE = re.compile(r"^[A-Za-z0-9_.-]{0,63}$")


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


def as_qualified(value: Any) -> Any:
    """`schema.table` text as a QualifiedName (PostgreSQL quoting rules)."""
    return parse_qualified_name(value) if isinstance(value, str) else value


def as_columns(value: Any) -> Any:
    """One column name or a list of them as a tuple of column names."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list | tuple):
        return tuple(parse_column_name(v) if isinstance(v, str) else v for v in value)
    return value


def as_column(value: Any) -> Any:
    """A column name as PostgreSQL reads it."""
    return parse_column_name(value) if isinstance(value, str) else value


def as_mask(value: Any) -> Any:
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


def as_where(value: Any) -> Any:
    """`where` text as checked SQL (one boolean expression)."""
    return parse_where(value) if isinstance(value, str) else value


def as_query(value: Any) -> Any:
    """`query` text as checked SQL (one SELECT)."""
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


def as_tags(value: Any) -> Any:
    """`{tier: gold}` as sorted (key, value) pairs, so a TableSpec stays hashable."""
    if isinstance(value, Mapping):
        return tuple(
            sorted((str(k), v if isinstance(v, str) else str(v)) for k, v in value.items())
        )
    return value


def as_freshness(value: Any) -> Any:
    """`freshness: 2h`, short for `freshness: {max_lag: 2h}`."""
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
