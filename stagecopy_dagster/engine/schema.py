"""The one place that decides how the target's columns follow the source's: a pure function.

:func:`plan_schema` compares the columns the source delivers (after `columns`,
`exclude_columns` and `mask`) with the existing target table's, under the table's
`on_schema_change` policy, and returns a frozen :class:`SchemaPlan`: the changes to apply
(columns to add, types to widen), the columns to copy, the target columns to set NULL, and the
problems that stop the run. Nothing here touches a database; :mod:`.describe` applies the plan,
and only when it has no problem, so a refused run has written nothing.

- `evolve` (default): a new source column is added; a lossless widening (`varchar(n)` to
  `varchar(m > n)` or `text`, `smallint` to `integer`/`bigint`, `integer` to `bigint`,
  `numeric` precision or scale up, a time type's fractional digits up) is applied with
  `ALTER ... TYPE`; a target column the source no longer has stays and is NULL in new and
  changed rows; any other type difference is a problem.
- `fail`: any difference is a problem.
- `ignore`: only the columns both sides hold are copied; nothing is changed (a type difference
  is still a problem: stagecopy never casts silently).

Target columns that the target fills itself (generated, or with a DEFAULT or identity) and the
source lacks are the target's own: they are left alone under every policy.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from stagecopy_dagster.engine.types import Column
from stagecopy_dagster.spec import SchemaPolicy


class ChangeKind(StrEnum):
    """What happened to one column."""

    ADDED = "added"
    """New at the source: added to the target (`evolve`)."""
    WIDENED = "widened"
    """Wider at the source: the target column's type widened with ALTER (`evolve`)."""
    GONE_FROM_SOURCE = "gone_from_source"
    """No longer at the source: kept in the target, NULL in new and changed rows (`evolve`)."""
    NOT_ADDED = "not_added"
    """New at the source: not copied (`ignore`)."""
    NOT_COPIED = "not_copied"
    """No longer at the source: left as it is (`ignore`)."""


@dataclass(frozen=True)
class SchemaChange:
    """One column's difference and what the run does about it."""

    column: str
    kind: ChangeKind
    source_type: str | None = None
    target_type: str | None = None
    """The target column's type before this run (None: the target did not have it)."""

    def as_dict(self) -> dict[str, Any]:
        """The change as metadata and logs show it."""
        found: dict[str, Any] = {"column": self.column, "change": self.kind.value}
        if self.target_type is not None:
            found["from"] = self.target_type
        if self.source_type is not None:
            found["to" if self.kind is ChangeKind.WIDENED else "type"] = self.source_type
        return found

    def describe(self) -> str:
        """One short line for the log."""
        if self.kind is ChangeKind.ADDED:
            return f"added column {self.column} {self.source_type}"
        if self.kind is ChangeKind.WIDENED:
            return f"widened {self.column} from {self.target_type} to {self.source_type}"
        if self.kind is ChangeKind.GONE_FROM_SOURCE:
            return f"{self.column} is gone from the source: kept, NULL in new and changed rows"
        if self.kind is ChangeKind.NOT_ADDED:
            return f"{self.column} is new at the source: not copied (on_schema_change: ignore)"
        return f"{self.column} is gone from the source: left as it is (on_schema_change: ignore)"


@dataclass(frozen=True)
class SchemaPlan:
    """What the run does to the target's columns, decided before any write."""

    changes: tuple[SchemaChange, ...]
    columns: tuple[Column, ...]
    """The columns to copy, in source order, typed as the source delivers them."""
    nulled: tuple[str, ...]
    """Target columns gone from the source: NULL in new and changed rows."""
    problems: tuple[str, ...]
    """Differences the policy refuses; the run must stop before it writes."""

    @property
    def added(self) -> tuple[Column, ...]:
        """Columns to add to the target (ALTER TABLE ... ADD COLUMN)."""
        by_name = {c.name: c for c in self.columns}
        return tuple(by_name[c.column] for c in self.changes if c.kind is ChangeKind.ADDED)

    @property
    def widened(self) -> tuple[Column, ...]:
        """Columns whose target type becomes the source's (ALTER ... TYPE)."""
        by_name = {c.name: c for c in self.columns}
        return tuple(by_name[c.column] for c in self.changes if c.kind is ChangeKind.WIDENED)


def plan_schema(
    source: Sequence[Column],
    target: Sequence[Column],
    *,
    key: Sequence[str],
    policy: SchemaPolicy,
    target_own: Collection[str] = (),
    null_masked: Collection[str] = (),
) -> SchemaPlan:
    """Compare the source's columns with an existing target's under `policy`.

    `target_own` names target columns with a DEFAULT or identity: the target fills them, so
    the source lacking them is not a difference. `null_masked` names columns the source
    delivers as NULL (`mask: null`): the target must let them be NULL.

    Example:
        >>> plan_schema(
        ...     [Column("id", "integer"), Column("v", "text")],
        ...     [Column("id", "integer"), Column("v", "character varying(10)")],
        ...     key=["id"],
        ...     policy=SchemaPolicy.EVOLVE,
        ... ).widened
        (Column(name='v', type='text', not_null=False, generated=False, identity_always=False, binary_safe=True),)
    """  # noqa: E501
    existing = {c.name: c for c in target}
    changes: list[SchemaChange] = []
    columns: list[Column] = []
    problems: list[str] = []
    _follow_source(source, existing, policy, changes=changes, columns=columns, problems=problems)
    nulled = _gone_columns(
        target,
        {c.name for c in source},
        policy,
        target_own=target_own,
        changes=changes,
        problems=problems,
    )
    if policy is SchemaPolicy.FAIL and problems:
        problems = [
            "the source's columns differ from the target's (on_schema_change: fail): "
            + "; ".join(problems)
        ]
    for name in null_masked:
        if name in existing and existing[name].not_null:
            problems.append(
                f"column {name} is masked with null but NOT NULL in the target; drop its "
                "NOT NULL there, or mask it with hash"
            )
    copied = {c.name for c in columns}
    for col in key:
        if col in copied:
            continue
        if col in existing and existing[col].generated:
            problems.append(f"key column {col!r} is generated in the target")
        elif col not in existing and policy is SchemaPolicy.IGNORE:
            problems.append(f"key column {col!r} is not in the target")
    return SchemaPlan(tuple(changes), tuple(columns), tuple(nulled), tuple(problems))


def _follow_source(
    source: Sequence[Column],
    existing: dict[str, Column],
    policy: SchemaPolicy,
    *,
    changes: list[SchemaChange],
    columns: list[Column],
    problems: list[str],
) -> None:
    """The source's columns: copied as they are, added, widened, or refused."""
    mismatched: list[str] = []
    for col in source:
        have = existing.get(col.name)
        if have is None:
            if policy is SchemaPolicy.EVOLVE:
                changes.append(SchemaChange(col.name, ChangeKind.ADDED, source_type=col.type))
                columns.append(Column(col.name, col.type, binary_safe=col.binary_safe))
            elif policy is SchemaPolicy.IGNORE:
                changes.append(SchemaChange(col.name, ChangeKind.NOT_ADDED, source_type=col.type))
            else:
                problems.append(f"column {col.name} ({col.type}) is new at the source")
            continue
        if have.generated:
            continue  # the target computes it; never COPY into a generated column
        if have.type != col.type:
            if not (policy is SchemaPolicy.EVOLVE and widens(have.type, col.type)):
                mismatched.append(_type_problem(col, have, policy))
                continue
            changes.append(
                SchemaChange(
                    col.name, ChangeKind.WIDENED, source_type=col.type, target_type=have.type
                )
            )
        columns.append(
            Column(
                col.name,
                col.type,
                not_null=have.not_null,
                identity_always=have.identity_always,
                binary_safe=col.binary_safe and have.binary_safe,
            )
        )
    if mismatched:
        problems.append(
            "column types differ between source and target (no silent casts): "
            + "; ".join(mismatched)
        )


def _gone_columns(
    target: Sequence[Column],
    at_source: Collection[str],
    policy: SchemaPolicy,
    *,
    target_own: Collection[str],
    changes: list[SchemaChange],
    problems: list[str],
) -> list[str]:
    """Target columns the source lacks (not the target's own): return those to set NULL."""
    nulled: list[str] = []
    for have in target:
        if have.name in at_source or have.generated or have.name in target_own:
            continue
        if policy is SchemaPolicy.IGNORE:
            changes.append(SchemaChange(have.name, ChangeKind.NOT_COPIED, target_type=have.type))
        elif policy is SchemaPolicy.FAIL:
            problems.append(f"column {have.name} is gone from the source")
        elif have.not_null:
            problems.append(
                f"column {have.name} is gone from the source but NOT NULL in the target "
                "(without a default), so new and changed rows cannot set it NULL; drop the "
                "column or its NOT NULL in the target"
            )
        else:
            changes.append(
                SchemaChange(have.name, ChangeKind.GONE_FROM_SOURCE, target_type=have.type)
            )
            nulled.append(have.name)
    return nulled


def _type_problem(col: Column, have: Column, policy: SchemaPolicy) -> str:
    found = f"{col.name} is {col.type} at the source, {have.type} here"
    if (
        policy is SchemaPolicy.EVOLVE
        and _TIMESTAMP.match(have.type)
        and _TIMESTAMPTZ.match(col.type)
    ):
        return (
            f"{found} (timestamp becomes timestamptz by the TimeZone of the session that "
            "converted it at the source, which stagecopy cannot know; convert the target "
            f"column yourself: ALTER COLUMN ... TYPE timestamptz USING {col.name} AT TIME ZONE "
            "'<that zone>')"
        )
    return found


_VARCHAR = re.compile(r"^character varying(?:\((\d+)\))?$")
_NUMERIC = re.compile(r"^numeric(?:\((\d+),(\d+)\))?$")
_TIMESTAMP = re.compile(r"^timestamp(?:\(\d\))? without time zone$")
_TIMESTAMPTZ = re.compile(r"^timestamp(?:\(\d\))? with time zone$")
_TIME_TYPE = re.compile(r"^(timestamp|time)(?:\((\d)\))? (with|without) time zone$")
_INTEGERS = ("smallint", "integer", "bigint")
#: A time type without a typmod keeps microseconds: six fractional digits.
_MAX_TIME_DIGITS = 6


def widens(target_type: str, source_type: str) -> bool:
    """Whether `ALTER ... TYPE source_type` keeps every `target_type` value exactly.

    Types are `format_type()` texts, as the catalog prints them.

    Example:
        >>> widens("character varying(10)", "text"), widens("bigint", "integer")
        (True, False)
    """
    if target_type == source_type:
        return False
    return any(rule(target_type, source_type) for rule in _WIDENINGS)


def _integer_widens(target_type: str, source_type: str) -> bool:
    if target_type in _INTEGERS and source_type in _INTEGERS:
        return _INTEGERS.index(source_type) > _INTEGERS.index(target_type)
    return False


def _varchar_widens(target_type: str, source_type: str) -> bool:
    varchar = _VARCHAR.match(target_type)
    if varchar is None:
        return False
    if source_type == "text":
        return True
    wider = _VARCHAR.match(source_type)
    if wider is None or varchar.group(1) is None:
        return False
    return wider.group(1) is None or int(wider.group(1)) > int(varchar.group(1))


def _numeric_widens(target_type: str, source_type: str) -> bool:
    numeric, wider = _NUMERIC.match(target_type), _NUMERIC.match(source_type)
    if numeric is None or wider is None or numeric.group(1) is None:
        return False
    if wider.group(1) is None:
        return True  # unconstrained numeric holds every value
    p, s = int(numeric.group(1)), int(numeric.group(2))
    p2, s2 = int(wider.group(1)), int(wider.group(2))
    return s2 >= s and p2 - s2 >= p - s  # neither fractional nor integer digits shrink


def _time_widens(target_type: str, source_type: str) -> bool:
    timed, wider = _TIME_TYPE.match(target_type), _TIME_TYPE.match(source_type)
    if timed is None or wider is None or wider.group(1, 3) != timed.group(1, 3):
        return False
    return int(wider.group(2) or _MAX_TIME_DIGITS) > int(timed.group(2) or _MAX_TIME_DIGITS)


_WIDENINGS = (_integer_widens, _varchar_widens, _numeric_widens, _time_widens)
