"""Source and target facts: what the source holds, and the target table made ready for it.

:func:`describe_source` reads the source inside the copy's snapshot and checks the spec against
it (key, watermark, scope); nothing is written. :func:`prepare_target` creates the target table
(key and index deferred until the rows are in) or reconciles it: columns new at the source are
added, a changed type is an error, never a silent cast.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import psycopg
from psycopg import sql

from stagecopy_dagster import catalog
from stagecopy_dagster import statements as st
from stagecopy_dagster.engine.context import CopyContext
from stagecopy_dagster.engine.types import Column, SourceFacts, TargetFacts
from stagecopy_dagster.errors import (
    SchemaMismatchError,
    SourceError,
    SpecError,
    describe_db_error,
    is_transient,
    wrap_db_error,
)
from stagecopy_dagster.identifiers import QualifiedName, clip_identifier
from stagecopy_dagster.sqlguard import CheckedSql


def describe_source(ctx: CopyContext) -> SourceFacts:
    """Describe the source (a table or a query) and check the spec against it."""
    conn = ctx.source.conn
    spec = ctx.table
    with ctx.target.step("describe"):
        relation: QualifiedName | CheckedSql
        if spec.source is not None:
            oid = catalog.relation_oid(conn, spec.source)
            if oid is None:
                raise SourceError(
                    f"source table {spec.source} does not exist (or the source role cannot see it)",
                    table=ctx.label,
                )
            columns = catalog.columns(conn, oid)
            default_key = catalog.primary_key(conn, oid)
            relation = spec.source
        else:
            assert spec.query is not None
            catalog.check_functions(conn, spec.query, what="query")
            columns = catalog.query_columns(conn, spec.query)
            default_key = ()
            relation = spec.query
        key = tuple(spec.primary_key or default_key)
        _check_names(ctx, [c.name for c in columns], key)
        if spec.where is not None:
            catalog.check_functions(conn, spec.where, what="where")
            names = [c.name for c in columns]
            explain(ctx, conn, st.select_rows(relation, names, st.scope_filter(spec.where)))
    return SourceFacts(
        relation,
        tuple(columns),
        key,
        key_is_source_pk=bool(default_key) and set(key) == set(default_key),
        version=ctx.source.version,
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
            created = _create_target(ctx, source)
            if not ctx.dry_run:  # a dry run did not create the table to plan against
                _check_scope_on_target(ctx, [c.name for c in source.columns])
            return created
        ctx.target.execute(st.lock_table(ctx.target_name))
        added, columns = _reconcile(ctx, source, catalog.columns(ctx.target.conn, oid))
        _check_scope_on_target(ctx, [c.name for c in columns])
        return TargetFacts(
            version=ctx.target.version,
            created=False,
            schema_created=False,
            empty=bool(ctx.target.scalar(st.is_empty(ctx.target_name, None))),
            added=added,
            columns=columns,
        )


def _reconcile(
    ctx: CopyContext, source: SourceFacts, existing_columns: Sequence[Column]
) -> tuple[tuple[str, ...], tuple[Column, ...]]:
    """Add the source's new columns; return (added, the columns to copy)."""
    existing = {c.name: c for c in existing_columns}
    added: list[str] = []
    copy_columns: list[Column] = []
    mismatched: list[str] = []
    for col in source.columns:
        have = existing.get(col.name)
        if have is None:
            ctx.target.execute(st.add_column(ctx.target_name, col))
            added.append(col.name)
            copy_columns.append(col)
        elif have.generated:
            continue  # the target computes it; never COPY into a generated column
        elif have.type != col.type:
            mismatched.append(f"{col.name} is {col.type} at the source, {have.type} here")
        else:
            copy_columns.append(
                Column(
                    col.name,
                    col.type,
                    not_null=have.not_null,
                    identity_always=have.identity_always,
                    binary_safe=col.binary_safe and have.binary_safe,
                )
            )
    if mismatched:
        raise SchemaMismatchError(
            "column types differ between source and target (no silent casts): "
            + "; ".join(mismatched),
            table=ctx.label,
        )
    copied = {c.name for c in copy_columns}
    for col in source.key:
        if col not in copied:
            raise SchemaMismatchError(
                f"key column {col!r} is generated in the target", table=ctx.label
            )
    return tuple(added), tuple(copy_columns)


def _check_scope_on_target(ctx: CopyContext, names: Sequence[str]) -> None:
    """The scope must work on the target too (sync/replace and the check use it there)."""
    where = ctx.table.where
    if where is None:
        return
    explain(ctx, ctx.target.conn, st.select_rows(ctx.target_name, names, st.scope_filter(where)))
    catalog.check_functions(ctx.target.conn, where, what="where")


def _create_target(ctx: CopyContext, source: SourceFacts) -> TargetFacts:
    """Create the target table (and its schema); its key and index wait for the rows."""
    target = ctx.target_name
    spec = ctx.table
    schema_created = False
    # CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the schema exists.
    if ctx.target.scalar(st.SCHEMA_EXISTS, (target.schema,)) is None:
        ctx.target.execute(st.create_schema(target.schema))
        schema_created = True
    ctx.target.execute(st.create_table(target, source.columns, None))
    deferred: list[sql.Composed] = []
    if source.key and (spec.mode.needs_key or spec.primary_key):
        deferred.append(st.add_primary_key(target, source.key))
    if spec.incremental_field:
        # Not `<table>_<field>_idx`: clipped to 63 bytes that can equal a long table's name.
        digest = hashlib.sha1(f"{target.schema}.{target.name}".encode()).hexdigest()[:10]
        index = clip_identifier(f"stagecopy_{digest}_{spec.incremental_field}")
        deferred.append(st.create_index(target, index, spec.incremental_field))
    return TargetFacts(
        version=ctx.target.version,
        created=True,
        schema_created=schema_created,
        empty=True,
        added=(),
        columns=source.columns,
        deferred=tuple(deferred),
    )
