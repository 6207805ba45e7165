"""PostgreSQL's own documentation travels with the data.

The source table's `COMMENT` becomes the asset description (unless the spec sets one) and its
column comments become the column descriptions of `dagster/column_schema`; the target table and
its columns get the same comments after each copy.

The asset description is part of the definitions, so it is read when they load: one catalog
query for all the spec's tables, with a short connect timeout. A source that cannot be reached
then (or `STAGECOPY_READ_COMMENTS=0`) leaves the descriptions as the spec or stagecopy writes
them; the copy still carries the comments.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import psycopg

from stagecopy_dagster.connection import Endpoint, scrub
from stagecopy_dagster.identifiers import QualifiedName
from stagecopy_dagster.statements.comments import (
    TABLE_COMMENTS,
    comment_on_column,
    comment_on_table,
)

log = logging.getLogger(__name__)

READ_COMMENTS_ENV = "STAGECOPY_READ_COMMENTS"
"""`0` (or `false`/`no`/`off`): do not read source comments when the definitions load."""

#: Seconds to wait for the source when the definitions load (the copy uses the resource's).
LOAD_CONNECT_TIMEOUT = 3


@dataclass(frozen=True)
class TableDocs:
    """A table's comment and its columns' comments (only the columns that have one)."""

    comment: str | None = None
    columns: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def column(self, name: str) -> str | None:
        """The comment of column `name`, if it has one."""
        return self.columns.get(name)


NO_DOCS = TableDocs()


def read_docs(
    conn: psycopg.Connection, tables: Iterable[QualifiedName]
) -> dict[QualifiedName, TableDocs]:
    """The comments of `tables` (those that exist) in one catalog query."""
    wanted = list(dict.fromkeys(tables))
    if not wanted:
        return {}
    rows = conn.execute(
        TABLE_COMMENTS, ([t.schema for t in wanted], [t.name for t in wanted])
    ).fetchall()
    docs: dict[QualifiedName, TableDocs] = {}
    for schema, name, comment, columns in rows:
        parsed = columns if isinstance(columns, dict) else json.loads(columns or "{}")
        docs[QualifiedName(schema, name)] = TableDocs(comment, MappingProxyType(dict(parsed)))
    return docs


def apply_docs(
    conn: psycopg.Connection, target: QualifiedName, docs: TableDocs, columns: Sequence[str]
) -> list[str]:
    """Give `target` the source's comments where they differ; what was set, e.g. `column id`.

    Only comments the source has are written: a comment a user put on the target where the
    source has none stays. Commits on `conn` (its own short transaction).
    """
    if docs.comment is None and not docs.columns:
        return []
    current = read_docs(conn, [target]).get(target, NO_DOCS)
    changed: list[str] = []
    if docs.comment is not None and docs.comment != current.comment:
        conn.execute(comment_on_table(target, docs.comment))
        changed.append("table")
    for column in columns:
        comment = docs.column(column)
        if comment is not None and comment != current.column(column):
            conn.execute(comment_on_column(target, column, comment))
            changed.append(f"column {column}")
    conn.commit()
    return changed


def reading_comments_enabled() -> bool:
    """Whether `$STAGECOPY_READ_COMMENTS` allows reading comments when definitions load."""
    return os.environ.get(READ_COMMENTS_ENV, "").strip().lower() not in ("0", "false", "no", "off")


def load_source_docs(
    url: str | None, tables: Iterable[QualifiedName]
) -> dict[QualifiedName, TableDocs]:
    """Source comments for the definitions: best effort, never an error.

    Empty when there is no URL, when reading is switched off, or when the source cannot be
    reached within :data:`LOAD_CONNECT_TIMEOUT` seconds (a warning says so, without secrets).
    """
    wanted = list(tables)
    if not url or not wanted or not reading_comments_enabled():
        return {}
    endpoint = Endpoint(url=url, connect_timeout=LOAD_CONNECT_TIMEOUT, retries=1)
    try:
        with endpoint.connect(autocommit=True) as conn:
            return read_docs(conn, wanted)
    except Exception as exc:  # documentation is optional: loading must go on
        log.warning(
            "stagecopy: source comments not read (%s); descriptions come from the spec",
            scrub(str(exc), url),
        )
        return {}
