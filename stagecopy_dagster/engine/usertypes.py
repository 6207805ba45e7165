"""The user-defined types a copy needs in the target: read at the source, made alike at the target.

:func:`ensure_user_types` runs when the target table is created or extended, in the copy's
target transaction and before the table: every enum, domain, composite and range type the
columns use (through arrays, domains, composite attributes and range subtypes too) is read from
the source catalog (:func:`read_user_types`), compared with the target's type of the same name,
and created where missing, dependencies first, in a schema of the same name. A target type
that differs is a :class:`~stagecopy_dagster.errors.UserTypeError` naming it, raised before
anything is written.

Labels added to a source enum since the target's was made are the one change stagecopy applies
to an existing type. A label added by `ALTER TYPE ... ADD VALUE` cannot be used before its
transaction commits, so the copy's transaction cannot add and load it at once:
:class:`LabelsPending` ends that attempt before any write, the copier commits the labels in a
short transaction of their own (:func:`add_enum_labels`) and runs the copy again from a fresh
source snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import psycopg
from psycopg import sql

from stagecopy_dagster import statements as st
from stagecopy_dagster.engine.context import CopyContext
from stagecopy_dagster.engine.types import Column, TypeAttribute, UserType
from stagecopy_dagster.errors import UserTypeError
from stagecopy_dagster.identifiers import QualifiedName
from stagecopy_dagster.statements import usertypes as ut

#: PostgreSQL 14 brought multiranges (`pg_range.rngmultitypid`).
MULTIRANGE_VERSION = 140000


class LabelsPending(Exception):  # a signal to the copier, not an error
    """The target's enums lack labels the source has: commit them first, then copy again."""

    def __init__(self, statements: Sequence[sql.Composed]) -> None:
        super().__init__("enum labels to add before the copy")
        self.statements = tuple(statements)


@dataclass(frozen=True)
class TypeChanges:
    """What the target needs so the source's columns fit: decided before anything is written."""

    create: tuple[UserType, ...] = ()
    """Types the target lacks, dependencies first."""
    labels: tuple[sql.Composed, ...] = ()
    """`ALTER TYPE ... ADD VALUE` for labels new at the source, in order."""


@dataclass(frozen=True)
class TypesEnsured:
    """What :func:`ensure_user_types` did in the copy's transaction."""

    created: tuple[QualifiedName, ...] = ()
    """Types this run created (uncommitted: other sessions cannot see them yet)."""
    schemas: tuple[str, ...] = ()
    """Schemas this run created for them."""


def check_user_types(ctx: CopyContext, columns: Sequence[Column]) -> TypeChanges:
    """What the target needs for the user types `columns` use; nothing is written.

    Raises :class:`~stagecopy_dagster.errors.UserTypeError` when a target type differs.
    """
    wanted = read_user_types(ctx.source.conn, [c.type for c in columns], version=ctx.source.version)
    if not wanted:
        return TypeChanges()
    found = {t.name: read_type(ctx.target.conn, t.name, version=ctx.target.version) for t in wanted}
    return plan_type_changes(wanted, found)


def ensure_user_types(ctx: CopyContext, changes: TypeChanges) -> TypesEnsured:
    """Create the types the target lacks, dependencies first (see the module doc).

    Raises :class:`LabelsPending` when enum labels must be committed first (a dry run only
    records them).
    """
    if changes.labels:
        if not ctx.dry_run:
            raise LabelsPending(changes.labels)
        ctx.target.record("-- committed before the copy's transaction:")
        ctx.target.execute_all(changes.labels)
    schemas: list[str] = []
    for user_type in changes.create:
        schema = user_type.name.schema
        if schema not in schemas and ctx.target.scalar(st.SCHEMA_EXISTS, (schema,)) is None:
            ctx.target.execute(st.create_schema(schema))
            schemas.append(schema)
        ctx.target.execute(ut.create_type(user_type))
    return TypesEnsured(tuple(t.name for t in changes.create), tuple(schemas))


def add_enum_labels(ctx: CopyContext, statements: Sequence[sql.Composed]) -> None:
    """The `types` step: add enum labels in a transaction of their own, committed."""
    with ctx.target.step("types"), ctx.target.conn.transaction():
        ctx.target.execute(st.set_local("lock_timeout", ctx.options.lock_timeout))
        ctx.target.execute_all(statements)


def plan_type_changes(
    wanted: Sequence[UserType], found: Mapping[QualifiedName, UserType | None]
) -> TypeChanges:
    """What to create and which labels to add; raises naming every type that differs."""
    create: list[UserType] = []
    labels: list[sql.Composed] = []
    problems: list[str] = []
    for source_type in wanted:
        target_type = found.get(source_type.name)
        if target_type is None:
            create.append(source_type)
            continue
        if source_type.kind == "enum" and target_type.kind == "enum":
            additions = enum_label_additions(source_type.labels, target_type.labels)
            if additions is None:
                problems.append(
                    f"enum {source_type.name} has labels {list(source_type.labels)} at the "
                    f"source, {list(target_type.labels)} in the target"
                )
            else:
                labels.extend(
                    ut.add_enum_label(source_type.name, label, before=before, after=after)
                    for label, before, after in additions
                )
            continue
        problems.extend(type_differences(source_type, target_type))
    if problems:
        raise UserTypeError(
            "user-defined types differ between source and target (stagecopy changes no "
            "existing type but to add enum labels): " + "; ".join(problems)
        )
    return TypeChanges(tuple(create), tuple(labels))


def enum_label_additions(
    wanted: Sequence[str], have: Sequence[str]
) -> list[tuple[str, str | None, str | None]] | None:
    """(label, before, after) to add, in order, so `have` becomes `wanted`.

    None when it cannot: `have` holds a label `wanted` lacks, or the shared labels are in
    another order. Each label goes after the one before it in `wanted` (already there by
    then); only a new first label goes before the target's first.
    """
    remaining = iter(wanted)
    if not all(label in remaining for label in have):  # `have` is a subsequence of `wanted`
        return None
    present = set(have)
    additions: list[tuple[str, str | None, str | None]] = []
    for i, label in enumerate(wanted):
        if label in present:
            continue
        if i > 0:
            additions.append((label, None, wanted[i - 1]))
        else:
            additions.append((label, have[0] if have else None, None))
        present.add(label)
    return additions


def type_differences(source: UserType, target: UserType) -> list[str]:
    """How the target's type of the same name differs from the source's (empty: alike)."""
    name = source.name
    if source.kind != target.kind:
        return [f"{name} is {_a(source.kind)} at the source, {_a(target.kind)} in the target"]
    fields: list[tuple[str, object, object]] = []
    if source.kind == "domain":
        fields = [
            ("base type", source.base, target.base),
            ("collation", source.collation, target.collation),
            ("NOT NULL", source.not_null, target.not_null),
            ("default", source.default, target.default),
            ("checks", _checks(source), _checks(target)),
        ]
    elif source.kind == "composite":
        fields = [("attributes", _attributes(source), _attributes(target))]
    elif source.kind == "range":
        fields = [
            ("subtype", source.base, target.base),
            ("collation", source.collation, target.collation),
            ("subtype opclass", source.opclass, target.opclass),
            ("subtype_diff", source.subtype_diff, target.subtype_diff),
        ]
        if source.multirange is not None and target.multirange is not None:
            fields.append(("multirange", source.multirange, target.multirange))
    return [
        f"{source.kind} {name}: {what} is {_show(a)} at the source, {_show(b)} in the target"
        for what, a, b in fields
        if a != b
    ]


def _a(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def _checks(user_type: UserType) -> str:
    return ", ".join(definition for _, definition in user_type.checks) or "none"


def _attributes(user_type: UserType) -> str:
    return (
        "("
        + ", ".join(
            f"{a.name} {a.type}" + (f" COLLATE {a.collation}" if a.collation else "")
            for a in user_type.attributes
        )
        + ")"
    )


def _show(value: object) -> str:
    if value is None:
        return "none"
    return str(value)


def read_user_types(
    conn: psycopg.Connection, type_names: Sequence[str], *, version: int
) -> tuple[UserType, ...]:
    """The user types behind `type_names` (`format_type` texts), dependencies first.

    Arrays are followed to their elements, domains to their base types, composites to their
    attributes' types, ranges to their subtypes and multiranges to their ranges. Built-in types
    and types an extension owns (it brings them itself) are left out.
    """
    found: dict[int, UserType | None] = {}
    ordered: list[UserType] = []

    def visit(oid: int) -> None:
        if oid in found:
            return
        found[oid] = None  # visiting: a type cannot reach itself, but be safe
        for dependency, user_type in _describe(conn, oid, version=version):
            if user_type is None:
                visit(dependency)
            else:
                found[oid] = user_type
        described = found[oid]
        if described is not None:
            ordered.append(described)

    if type_names:
        for (oid,) in conn.execute(ut.USER_TYPE_OIDS, (list(type_names),)).fetchall():
            visit(int(oid))
    return tuple(ordered)


def read_type(conn: psycopg.Connection, name: QualifiedName, *, version: int) -> UserType | None:
    """The type `name` as this database defines it (None: there is no such type)."""
    row = conn.execute(ut.TYPE_BY_NAME, (name.schema, name.name)).fetchone()
    if row is None:
        return None
    described = [t for _, t in _describe(conn, int(row[0]), version=version) if t is not None]
    if not described:
        raise UserTypeError(
            f"{name} exists in the target but is not an enum, domain, composite or range type"
        )
    return described[0]


class _TypeFacts(NamedTuple):
    """One row of :data:`~stagecopy_dagster.statements.usertypes.TYPE_FACTS`."""

    schema: str
    name: str
    kind: str
    is_array: bool
    element: int
    base_oid: int
    base: str | None
    not_null: bool
    default: str | None
    relid: int
    relkind: str | None
    builtin: bool
    collation: str | None


#: What a type depends on (as `(oid, None)`), then `(oid, its UserType)` when it is one.
_Described = list[tuple[int, UserType | None]]


def _describe(conn: psycopg.Connection, oid: int, *, version: int) -> _Described:
    """The types `oid` depends on (as `(oid, None)`), then `(oid, its UserType)` if it is one."""
    row = conn.execute(ut.TYPE_FACTS, (oid,)).fetchone()
    assert row is not None
    facts = _TypeFacts(*row)
    if facts.is_array:
        return [(int(facts.element), None)]
    describe = _BY_KIND.get(facts.kind)
    if facts.builtin or describe is None:
        # A built-in type, an extension's (it brings its own), or a base or pseudo type: the
        # target must have it already.
        return []
    return describe(conn, oid, facts, version)


def _enum(conn: psycopg.Connection, oid: int, facts: _TypeFacts, version: int) -> _Described:
    labels = tuple(r[0] for r in conn.execute(ut.ENUM_LABELS, (oid,)).fetchall())
    return [(oid, UserType(QualifiedName(facts.schema, facts.name), "enum", labels=labels))]


def _domain(conn: psycopg.Connection, oid: int, facts: _TypeFacts, version: int) -> _Described:
    checks = tuple((r[0], r[1]) for r in conn.execute(ut.DOMAIN_CHECKS, (oid,)).fetchall())
    domain = UserType(
        QualifiedName(facts.schema, facts.name),
        "domain",
        base=facts.base or "",
        collation=facts.collation,
        not_null=bool(facts.not_null),
        default=facts.default,
        checks=checks,
    )
    return [(int(facts.base_oid), None), (oid, domain)]


def _composite(conn: psycopg.Connection, oid: int, facts: _TypeFacts, version: int) -> _Described:
    name = QualifiedName(facts.schema, facts.name)
    if facts.relkind != "c":
        raise UserTypeError(
            f"a column uses {name}, the row type of a table: stagecopy creates only types "
            "made by CREATE TYPE; create that table in the target first"
        )
    rows = conn.execute(ut.COMPOSITE_ATTRIBUTES, (facts.relid,)).fetchall()
    attributes = tuple(TypeAttribute(r[0], r[2], r[3]) for r in rows)
    composite = UserType(name, "composite", attributes=attributes)
    return [*((int(r[1]), None) for r in rows), (oid, composite)]


def _range(conn: psycopg.Connection, oid: int, facts: _TypeFacts, version: int) -> _Described:
    name = QualifiedName(facts.schema, facts.name)
    query = ut.RANGE_FACTS if version >= MULTIRANGE_VERSION else ut.RANGE_FACTS_13
    row = conn.execute(query, (oid,)).fetchone()
    assert row is not None
    subtype_oid, subtype, collation, opclass, subtype_diff, canonical, multirange = row
    if canonical:
        raise UserTypeError(
            f"range type {name} has a canonical function (written in C): stagecopy cannot "
            "recreate it; create the type in the target first"
        )
    range_type = UserType(
        name,
        "range",
        base=subtype,
        collation=collation,
        opclass=opclass,
        subtype_diff=subtype_diff,
        multirange=multirange,
    )
    return [(int(subtype_oid), None), (oid, range_type)]


def _multirange(conn: psycopg.Connection, oid: int, facts: _TypeFacts, version: int) -> _Described:
    row = conn.execute(ut.RANGE_OF_MULTIRANGE, (oid,)).fetchone()
    assert row is not None
    return [(int(row[0]), None)]  # created with its range


_BY_KIND: dict[str, Callable[[psycopg.Connection, int, _TypeFacts, int], _Described]] = {
    "e": _enum,
    "d": _domain,
    "c": _composite,
    "r": _range,
    "m": _multirange,
}
