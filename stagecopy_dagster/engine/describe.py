"""Source and target facts: what the source holds, and the target table made ready for it.

:func:`describe_source` reads the source inside the copy's snapshot and checks the spec against
it (key, watermark, scope, column selection and masks); nothing is written.
:func:`prepare_target` creates the target table (key and index deferred until the rows are in)
or reconciles it as :func:`~stagecopy_dagster.engine.schema.plan_schema` decides under the
table's `on_schema_change`: refused before any change, or changed with ADD COLUMN and ALTER.
Either way the user-defined types the copied columns use are made to match the source's first
(:mod:`~stagecopy_dagster.engine.usertypes`), in the same transaction.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Sequence

import psycopg
from psycopg import sql

from stagecopy_dagster import catalog
from stagecopy_dagster import statements as st
from stagecopy_dagster.engine.context import CopyContext
from stagecopy_dagster.engine.plan import IndexBuild, plan_index_build
from stagecopy_dagster.engine.schema import SchemaPlan, plan_schema
from stagecopy_dagster.engine.selection import select_columns
from stagecopy_dagster.engine.types import SourceFacts, TargetFacts
from stagecopy_dagster.engine.usertypes import check_user_types, ensure_user_types
from stagecopy_dagster.errors import (
    SchemaMismatchError,
    SourceError,
    SpecError,
    describe_db_error,
    is_transient,
    wrap_db_error,
)
from stagecopy_dagster.identifiers import QualifiedName, clip_identifier
from stagecopy_dagster.masking import install_mask_key, mask_key
from stagecopy_dagster.spec import MaskKind
from stagecopy_dagster.sqlguard import CheckedSql

log = logging.getLogger(__name__)


def describe_source(ctx: CopyContext) -> SourceFacts:
    """Describe the source (a table or a query) and check the spec against it.

    The columns are those the copy delivers: `columns`/`exclude_columns` applied, masked ones
    typed as they arrive. With a `hash` mask, the key is set on the source session here, so a
    missing key stops the run before anything is written.
    """
    conn = ctx.source.conn
    spec = ctx.table
    with ctx.target.step("describe"):
        base: QualifiedName | CheckedSql
        if spec.source is not None:
            oid = catalog.relation_oid(conn, spec.source)
            if oid is None:
                raise SourceError(
                    f"source table {spec.source} does not exist (or the source role cannot see it)",
                    table=ctx.label,
                )
            columns = catalog.columns(conn, oid)
            default_key = catalog.primary_key(conn, oid)
            base = spec.source
            key_first = (spec.primary_key or default_key)[:1]
            watched = [*key_first, *([spec.incremental_field] if spec.incremental_field else [])]
            size = catalog.table_size(conn, oid, spec.source, watched)
        else:
            assert spec.query is not None
            catalog.check_functions(conn, spec.query, what="query")
            columns = catalog.query_columns(conn, spec.query)
            default_key = ()
            base = spec.query
            size = None
        key = tuple(spec.primary_key or default_key)
        _check_names(ctx, [c.name for c in columns], key)
        selection = select_columns(spec, base, columns, key)
        if selection.hashes:
            install_mask_key(conn, mask_key(table=ctx.label))
        relation = selection.relation
        if spec.where is not None:
            catalog.check_functions(conn, spec.where, what="where")
            names = [c.name for c in selection.columns]
            explain(ctx, conn, st.select_rows(relation, names, st.scope_filter(spec.where)))
    return SourceFacts(
        relation,
        selection.columns,
        key,
        key_is_source_pk=bool(default_key) and set(key) == set(default_key),
        version=ctx.source.version,
        size=size,
    )


def _check_names(ctx: CopyContext, names: Sequence[str], key: Sequence[str]) -> None:
    spec = ctx.table
    for col in key:
        if col not in names:
            raise SpecError(
                f"primary_key column {col!r} is not a column of the source "
                f"(columns: {', '.join(names)})",
                table=ctx.label,
            )
    if spec.mode.needs_key and not key:
        raise SpecError(
            f"mode {spec.mode.value} needs a primary key: the source has none, "
            "so set `primary_key`",
            table=ctx.label,
        )
    if spec.incremental_field and spec.incremental_field not in names:
        raise SpecError(
            f"incremental_field {spec.incremental_field!r} is not a column of the source",
            table=ctx.label,
        )


def explain(ctx: CopyContext, conn: psycopg.Connection, statement: sql.Composable) -> None:
    """Plan `statement` on `conn`: a `where` that does not resolve there is a spec error."""
    try:
        catalog.explain(conn, statement)
    except psycopg.Error as exc:
        side = "source" if conn is ctx.source.conn else "target"
        if is_transient(exc):  # the connection was lost, not the `where` wrong: retry
            raise wrap_db_error(exc, table=ctx.label, step=f"where check on the {side}") from exc
        raise SpecError(
            f"`where` does not work on the {side}: {describe_db_error(exc)}", table=ctx.label
        ) from exc


def prepare_target(ctx: CopyContext, source: SourceFacts) -> TargetFacts:
    """Create or reconcile the target table; return what the copy will find there."""
    with ctx.target.step("prepare"):
        oid = catalog.relation_oid(ctx.target.conn, ctx.target_name)
        if oid is None:
            changes = check_user_types(ctx, source.columns)  # a differing type: before a write
            # Before the types: they may create the table's schema too.
            schema_created = _create_schema(ctx)
            types = ensure_user_types(ctx, changes)
            created = _create_target(ctx, source, schema_created=schema_created)
            if not ctx.dry_run:  # a dry run did not create the table to plan against
                _check_scope_on_target(ctx, [c.name for c in source.columns])
            return dataclasses.replace(created, types_created=types.created)
        ctx.target.execute(st.lock_table(ctx.target_name))
        # The types first: a column added or widened below may use one.
        types = ensure_user_types(ctx, check_user_types(ctx, source.columns))
        plan = _reconcile(ctx, source, oid)
        _check_scope_on_target(ctx, [c.name for c in plan.columns])
        return TargetFacts(
            version=ctx.target.version,
            created=False,
            schema_created=False,
            empty=bool(ctx.target.scalar(st.is_empty(ctx.target_name, None))),
            added=tuple(c.name for c in plan.added),
            columns=plan.columns,
            nulled=plan.nulled,
            schema_changes=plan.changes,
            types_created=types.created,
        )


def _reconcile(ctx: CopyContext, source: SourceFacts, oid: int) -> SchemaPlan:
    """Plan the target's columns under `on_schema_change`; refuse, or apply the changes.

    Every refusal is raised before the first change is applied, so a refused run leaves the
    target exactly as it was.
    """
    conn = ctx.target.conn
    plan = plan_schema(
        source.columns,
        catalog.columns(conn, oid),
        key=source.key,
        policy=ctx.table.on_schema_change,
        target_own=[r[0] for r in conn.execute(st.FILLED_COLUMNS, (oid,)).fetchall()],
        null_masked=[n for n, kind in ctx.table.masks.items() if kind is MaskKind.NULL],
    )
    if plan.problems:
        raise SchemaMismatchError("; ".join(plan.problems), table=ctx.label)
    for col in plan.added:
        ctx.target.execute(st.add_column(ctx.target_name, col))
    for col in plan.widened:
        ctx.target.execute(st.alter_column_type(ctx.target_name, col))
    for change in plan.changes:
        log.info("%s: schema change: %s", ctx.label, change.describe())
    return plan


def _check_scope_on_target(ctx: CopyContext, names: Sequence[str]) -> None:
    """The scope must work on the target too (sync/replace and the check use it there)."""
    where = ctx.table.where
    if where is None:
        return
    explain(ctx, ctx.target.conn, st.select_rows(ctx.target_name, names, st.scope_filter(where)))
    catalog.check_functions(ctx.target.conn, where, what="where")


def _create_schema(ctx: CopyContext) -> bool:
    """Create the target table's schema if it is missing; whether it was."""
    schema = ctx.target_name.schema
    # CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the schema exists.
    if ctx.target.scalar(st.SCHEMA_EXISTS, (schema,)) is not None:
        return False
    # Another copy may be creating it (tables side by side into a new schema): wait for its
    # commit, then look again (read committed: the next statement sees it).
    ctx.target.execute(st.schema_lock(schema))
    if ctx.target.scalar(st.SCHEMA_EXISTS, (schema,)) is not None:
        return False
    ctx.target.execute(st.create_schema(schema))
    return True


def _create_target(ctx: CopyContext, source: SourceFacts, *, schema_created: bool) -> TargetFacts:
    """Create the target table (its schema exists); key and index now or once the rows are in.

    :func:`~stagecopy_dagster.engine.plan.plan_index_build` decides each from the source's
    statistics (row width, table size, the column's order in the heap).
    """
    target = ctx.target_name
    spec = ctx.table
    key_now = False
    deferred: list[sql.Composed] = []
    cache = ctx.target.scalar(st.CACHE_BYTES) if source.size is not None else None
    cache_bytes = None if cache is None else int(cache)
    if source.key and (spec.mode.needs_key or spec.primary_key):
        build = plan_index_build(
            source.size,
            source.key[0],
            may_refuse_rows=not source.key_is_source_pk,
            cache_bytes=cache_bytes,
        )
        key_now = build is IndexBuild.BEFORE_LOAD
        if not key_now:
            deferred.append(st.add_primary_key(target, source.key))
    ctx.target.execute(st.create_table(target, source.columns, source.key if key_now else None))
    if spec.incremental_field:
        # Not `<table>_<field>_idx`: clipped to 63 bytes that can equal a long table's name.
        digest = hashlib.sha1(f"{target.schema}.{target.name}".encode()).hexdigest()[:10]
        index = clip_identifier(f"stagecopy_{digest}_{spec.incremental_field}")
        create = st.create_index(target, index, spec.incremental_field)
        build = plan_index_build(
            source.size, spec.incremental_field, may_refuse_rows=False, cache_bytes=cache_bytes
        )
        if build is IndexBuild.BEFORE_LOAD:
            ctx.target.execute(create)
        else:
            deferred.append(create)
    return TargetFacts(
        version=ctx.target.version,
        created=True,
        schema_created=schema_created,
        empty=True,
        added=(),
        columns=source.columns,
        deferred=tuple(deferred),
    )
