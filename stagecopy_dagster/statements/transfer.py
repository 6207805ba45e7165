"""The COPY statements that stream rows between the servers, and the block ranges of a split read.

The module is not named ``copy`` so that it can never stand in for the standard library's.
"""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import sql

from stagecopy_dagster.engine.types import CopyFormat
from stagecopy_dagster.statements.compose import column_list


def copy_out(select: sql.Composable, fmt: CopyFormat) -> sql.Composed:
    """`COPY (select) TO STDOUT (FORMAT fmt)`."""
    return sql.SQL("COPY ({}) TO STDOUT (FORMAT {})").format(select, sql.SQL(fmt))


def copy_in(table: sql.Composable, columns: Sequence[str], fmt: CopyFormat) -> sql.Composed:
    """`COPY table (cols) FROM STDIN (FORMAT fmt)`."""
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT {})").format(
        table, column_list(columns), sql.SQL(fmt)
    )


def ctid_range(first_block: int, end_block: int | None) -> sql.Composed:
    """A TID range condition covering heap blocks [first_block, end_block)."""
    low = sql.SQL("ctid >= {}::tid").format(sql.Literal(f"({first_block},0)"))
    if end_block is None:
        return low
    return sql.SQL("{} AND ctid < {}::tid").format(low, sql.Literal(f"({end_block},0)"))
