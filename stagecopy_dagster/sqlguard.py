"""The trust boundary for the only raw SQL a user writes: a table's `where` and `query`.

Both are parsed with PostgreSQL's own parser (libpg_query, through pglast) before they get near a
database, and only the *re-printed* parse tree is ever sent, so comments, a second statement or an
unbalanced parenthesis cannot change the SQL around them.

* :func:`parse_where` accepts one boolean expression (`where:`); sub-selects are allowed,
  `SELECT ... FOR UPDATE` and anything that is not an expression are not.
* :func:`parse_query` accepts one plain SELECT (`query:`), CTEs included, without data-modifying
  CTEs, `SELECT INTO` or row locks.

Functions called by either are returned so that the copier can refuse, before any write, those
that the database says are volatile (side effects such as `pg_terminate_backend`, `nextval`,
`set_config`, `pg_sleep`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pglast import ast, parse_sql
from pglast.parser import ParseError
from pglast.stream import RawStream
from pglast.visitors import Visitor
from psycopg import sql

from stagecopy_dagster.errors import UnsafeSqlError


@dataclass(frozen=True)
class CheckedSql:
    """User SQL that passed the parser checks, re-printed from its parse tree."""

    text: str
    """The canonical SQL (no comments, fully parenthesised where needed)."""
    functions: tuple[tuple[str | None, str], ...]
    """(schema or None, name) of every function it calls, for the volatility check."""
    relations: tuple[tuple[str | None, str], ...] = ()
    """(schema or None, name) of every table or view it reads (CTE names left out): lineage."""

    def composable(self) -> sql.Composable:
        """The checked SQL, parenthesised, ready to compose into a statement."""
        # The one place user SQL enters a statement: text re-printed from a parse tree that
        # held exactly one expression or one SELECT.
        return sql.SQL("({})").format(sql.SQL(self.text))  # pyright: ignore[reportArgumentType]

    def qualified(self, alias: str) -> str:
        """The expression with its bare column names qualified by `alias` (sub-selects kept).

        Used where the scope must name the target's columns next to a staging table with the
        same column names (MERGE ... WHEN NOT MATCHED BY SOURCE AND <scope>).
        """
        stmt: Any = parse_sql("SELECT 1 WHERE " + self.text)[0].stmt
        expr = stmt.whereClause
        _qualify(expr, alias)
        return RawStream()(expr)

    def __str__(self) -> str:
        return self.text


def _qualify(node: object, alias: str) -> None:
    if isinstance(node, ast.SubLink):
        if node.testexpr is not None:  # `x IN (SELECT ...)`: x belongs to the outer query
            _qualify(node.testexpr, alias)
        return
    if isinstance(node, ast.ColumnRef):
        fields = node.fields or ()
        if len(fields) == 1 and isinstance(fields[0], ast.String):
            node.fields = (ast.String(alias), fields[0])
        return
    if isinstance(node, ast.Node):
        for name in node:
            _qualify(getattr(node, name), alias)
    elif isinstance(node, tuple | list):
        for item in node:
            _qualify(item, alias)


class _Inspector(Visitor):  # type: ignore[misc]
    """Collects function names and flags constructs that are never allowed."""

    # The method names are pglast's visitor protocol (`visit_<NodeClass>`), hence CamelCase.

    def __init__(self) -> None:
        super().__init__()
        self.functions: list[tuple[str | None, str]] = []
        self.relations: list[tuple[str | None, str]] = []
        self.ctes: set[str] = set()
        self.problems: list[str] = []

    def visit_CommonTableExpr(self, ancestors: object, node: ast.CommonTableExpr) -> None:
        self.ctes.add(node.ctename or "")

    def visit_RangeVar(self, ancestors: object, node: ast.RangeVar) -> None:
        self.relations.append((node.schemaname, node.relname or ""))

    def visit_FuncCall(self, ancestors: object, node: ast.FuncCall) -> None:
        names = [getattr(part, "sval", "") for part in node.funcname or ()]
        self.functions.append((names[0], names[-1]) if len(names) > 1 else (None, names[-1]))

    def visit_SelectStmt(self, ancestors: object, node: ast.SelectStmt) -> None:
        if node.lockingClause:
            self.problems.append("row locks (FOR UPDATE/SHARE) are not allowed")
        if node.intoClause:
            self.problems.append("SELECT INTO is not allowed")

    def visit_InsertStmt(self, ancestors: object, node: ast.Node) -> None:
        self.problems.append("data-modifying statements are not allowed")

    visit_UpdateStmt = visit_InsertStmt
    visit_DeleteStmt = visit_InsertStmt
    visit_MergeStmt = visit_InsertStmt


def _set_operation(stmt: ast.SelectStmt) -> str:
    """`SETOP_NONE` for a plain SELECT, else the UNION/INTERSECT/EXCEPT it is."""
    return "SETOP_NONE" if stmt.op is None else stmt.op.name


def _parse_one(text: str, *, what: str) -> ast.RawStmt:
    if not text or not text.strip():
        raise UnsafeSqlError(f"{what} is empty")
    try:
        statements = parse_sql(text)
    except ParseError as exc:
        raise UnsafeSqlError(f"{what} is not valid SQL: {exc.args[0]}") from exc
    if len(statements) != 1:
        raise UnsafeSqlError(f"{what} must be a single statement, found {len(statements)}")
    return statements[0]


def _inspect(node: ast.Node, *, what: str) -> _Inspector:
    inspector = _Inspector()
    inspector(node)
    if inspector.problems:
        raise UnsafeSqlError(f"{what}: {inspector.problems[0]}")
    return inspector


def parse_where(text: str) -> CheckedSql:
    """Check that `text` is exactly one SQL boolean expression; return its canonical form.

    Example:
        >>> parse_where("시장구분 = 'KOSPI' -- comment").text
        "시장구분 = 'KOSPI'"
    """
    what = f"where {text!r}"
    if not text or not text.strip():
        raise UnsafeSqlError(f"{what} is empty (leave the key out for all rows)")
    raw = _parse_one("SELECT 1 WHERE " + text, what=what)
    stmt: Any = raw.stmt
    if not isinstance(stmt, ast.SelectStmt) or _set_operation(stmt) != "SETOP_NONE":
        raise UnsafeSqlError(f"{what} must be one boolean expression")
    extra = [
        clause
        for clause in (
            "fromClause",
            "groupClause",
            "havingClause",
            "windowClause",
            "sortClause",
            "limitCount",
            "limitOffset",
            "lockingClause",
            "intoClause",
            "withClause",
            "distinctClause",
            "valuesLists",
        )
        if getattr(stmt, clause, None)
    ]
    if extra or stmt.whereClause is None or len(stmt.targetList or ()) != 1:
        raise UnsafeSqlError(f"{what} must be one boolean expression, not a clause or statement")
    found = _inspect(stmt.whereClause, what=what)
    return CheckedSql(RawStream()(stmt.whereClause), tuple(dict.fromkeys(found.functions)))


def parse_query(text: str) -> CheckedSql:
    """Check that `text` is exactly one read-only SELECT; return its canonical form."""
    what = "query"
    raw = _parse_one(text, what=what)
    stmt: Any = raw.stmt
    if not isinstance(stmt, ast.SelectStmt):
        kind = type(stmt).__name__.removesuffix("Stmt").upper()
        raise UnsafeSqlError(f"{what} must be a SELECT, got {kind}")
    if stmt.valuesLists and _set_operation(stmt) == "SETOP_NONE" and not stmt.targetList:
        raise UnsafeSqlError(f"{what} must be a SELECT, got VALUES")
    found = _inspect(stmt, what=what)
    relations = [r for r in found.relations if r[0] is not None or r[1] not in found.ctes]
    return CheckedSql(
        RawStream()(stmt),
        tuple(dict.fromkeys(found.functions)),
        tuple(dict.fromkeys(relations)),
    )
