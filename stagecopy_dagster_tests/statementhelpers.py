"""What the exact-text tests of :mod:`stagecopy_dagster.statements` share: tables, scope."""

from __future__ import annotations

from psycopg import sql

from stagecopy_dagster.identifiers import QualifiedName
from stagecopy_dagster.sqlguard import parse_where
from stagecopy_dagster.statements import Column

TARGET = QualifiedName("sales", "orders")
STAGING = QualifiedName("sales", "_stagecopy_1700000000_0123456789ab")
COLUMNS = [
    Column("id", "integer", not_null=True),
    Column("amount", "numeric(12,2)"),
    Column("note", "text"),
]
SCOPE = parse_where("region = 'KR' AND amount > 0")

T = '"sales"."orders"'
S = '"sales"."_stagecopy_1700000000_0123456789ab"'


def text(statement: sql.Composable) -> str:
    return statement.as_string(None)
