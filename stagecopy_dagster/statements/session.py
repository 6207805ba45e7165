"""Session and transaction statements: shared settings, snapshots and locks."""

from __future__ import annotations

from psycopg import sql

from stagecopy_dagster.identifiers import QualifiedName

#: Session settings that make text output identical on both sides (COPY text, check hashes).
SESSION_SETTINGS: dict[str, str] = {
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "TimeZone": "UTC",
    "extra_float_digits": "3",
    "bytea_output": "hex",
    "client_encoding": "UTF8",
    # money's text is the locale's (symbol, separators, fraction digits): "C" prints and reads
    # the stored amount alike on both sides, whatever lc_monetary each server defaults to.
    "lc_monetary": "C",
}


def set_session(settings: dict[str, str] | None = None) -> sql.Composed:
    """`SET name = 'value'; ...` for the session settings both sides must share."""
    items = (settings or SESSION_SETTINGS).items()
    return sql.SQL("; ").join(
        sql.SQL("SET {} = {}").format(sql.Identifier(k), sql.Literal(v)) for k, v in items
    )


#: Planner costs that let a big read (the diff's hashing of every target row) use parallel
#: workers, which the defaults withhold from a CREATE TABLE AS whose result is small.
EAGER_PARALLEL: dict[str, str] = {"parallel_setup_cost": "0", "parallel_tuple_cost": "0.001"}


def reset_local(name: str) -> sql.Composed:
    """`SET LOCAL name TO DEFAULT`: back to the session's value."""
    return sql.SQL("SET LOCAL {} TO DEFAULT").format(sql.Identifier(name))


def set_local(name: str, value: str) -> sql.Composed:
    """`SET LOCAL name = 'value'` (lasts until the transaction ends)."""
    return sql.SQL("SET LOCAL {} = {}").format(sql.Identifier(name), sql.Literal(value))


def export_snapshot() -> sql.SQL:
    """`SELECT pg_export_snapshot()`: lets parallel readers share the copy's snapshot."""
    return sql.SQL("SELECT pg_catalog.pg_export_snapshot()")


def set_snapshot(snapshot_id: str) -> sql.Composed:
    """`SET TRANSACTION SNAPSHOT '...'`."""
    return sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_id))


def advisory_lock(table: QualifiedName) -> sql.Composed:
    """A transaction-level advisory lock that serializes stagecopy runs on one target."""
    key = f"stagecopy:{table.schema}.{table.name}"
    return sql.SQL("SELECT pg_catalog.pg_advisory_xact_lock(hashtextextended({}, 0))").format(
        sql.Literal(key)
    )


def schema_lock(schema: str) -> sql.Composed:
    """A transaction-level advisory lock taken before creating the target schema `schema`.

    Copies run side by side into a new schema: the first creates it, the others wait for its
    commit and then find it, instead of failing on the catalog's unique name.
    """
    key = f"stagecopy-schema:{schema}"
    return sql.SQL("SELECT pg_catalog.pg_advisory_xact_lock(hashtextextended({}, 0))").format(
        sql.Literal(key)
    )


def lock_table(table: QualifiedName) -> sql.Composed:
    """`LOCK TABLE ... IN SHARE ROW EXCLUSIVE MODE`: readers go on, other writers wait."""
    return sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(table.identifier)
