"""What `stagecopy status` asks the databases: how far the source is ahead of the copy."""

from __future__ import annotations

from typing import Any

from psycopg import sql

from stagecopy_dagster.identifiers import QualifiedName
from stagecopy_dagster.sqlguard import CheckedSql
from stagecopy_dagster.statements.scope import scope_filter, source_relation


def rows_after(
    source: QualifiedName | CheckedSql, field: str, where: CheckedSql | None, watermark: Any
) -> sql.Composed:
    """`count(*)` and `max(field)` of the rows in scope whose `field` is after `watermark`.

    With `watermark` None (nothing copied yet) every row in scope counts.
    """
    return sql.SQL("SELECT count(*), max({}) FROM {}{}").format(
        sql.Identifier(field),
        source_relation(source),
        scope_filter(where, incremental_field=field, watermark=watermark, inclusive=False),
    )
