"""Fixed queries over the system catalogs and statistics views, with bind parameters.

Nothing here is composed: each constant is one :class:`psycopg.sql.SQL` that the caller executes
with its `%s` parameters.
"""

from __future__ import annotations

from psycopg import sql

RELATION_OID = sql.SQL(
    "SELECT c.oid, c.relkind FROM pg_catalog.pg_class c "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = %s AND c.relname = %s"
)

#: The last column says whether binary COPY of the type is portable: built-in types and enums,
#: but not tsquery, whose empty value binary COPY writes and cannot read back ("malformed
#: tsquery: operand not found", PostgreSQL 15 and 18).
COLUMNS = sql.SQL(
    "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull, "
    "a.attgenerated <> '', a.attidentity = 'a', "
    "(t.typtype IN ('b', 'e', 'r', 'm') AND (t.oid < 16384 OR t.typtype = 'e') "
    "AND t.oid NOT IN ('pg_catalog.tsquery'::regtype, 'pg_catalog._tsquery'::regtype)) "
    "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
    "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
)

#: Columns the table fills itself on INSERT (a DEFAULT or identity): the target's own columns.
FILLED_COLUMNS = sql.SQL(
    "SELECT a.attname FROM pg_catalog.pg_attribute a WHERE a.attrelid = %s AND a.attnum > 0 "
    "AND NOT a.attisdropped AND (a.atthasdef OR a.attidentity <> '') ORDER BY a.attnum"
)

PRIMARY_KEY = sql.SQL(
    "SELECT a.attname FROM pg_catalog.pg_index i "
    "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) "
    "JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
    "WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.ord"
)

#: Heap size and row estimate of a table, as the last VACUUM/ANALYZE left them in pg_class.
RELATION_SIZE = sql.SQL(
    "SELECT c.relpages::bigint * current_setting('block_size')::bigint, c.reltuples "
    "FROM pg_catalog.pg_class c WHERE c.oid = %s"
)

#: The server's idea of its page cache (`effective_cache_size`), in bytes.
CACHE_BYTES = sql.SQL(
    "SELECT setting::bigint * pg_catalog.pg_size_bytes(coalesce(unit, '1B')) "
    "FROM pg_catalog.pg_settings WHERE name = 'effective_cache_size'"
)

#: How closely each column's values follow the heap's physical order (ANALYZE's estimate).
COLUMN_CORRELATION = sql.SQL(
    "SELECT s.attname, s.correlation FROM pg_catalog.pg_stats s "
    "WHERE s.schemaname = %s AND s.tablename = %s AND NOT s.inherited AND s.attname = ANY(%s)"
)

FORMAT_TYPE = sql.SQL(
    "SELECT pg_catalog.format_type(%s, %s), "
    "(t.typtype IN ('b', 'e', 'r', 'm') AND (t.oid < 16384 OR t.typtype = 'e') "
    "AND t.oid NOT IN ('pg_catalog.tsquery'::regtype, 'pg_catalog._tsquery'::regtype)) "
    "FROM pg_catalog.pg_type t WHERE t.oid = %s"
)

#: Volatile functions among the given names (side effects or different answers per call).
VOLATILE_FUNCTIONS = sql.SQL(
    "SELECT DISTINCT p.proname FROM pg_catalog.pg_proc p "
    "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
    "WHERE p.provolatile = 'v' AND p.proname = ANY(%s) "
    "AND (%s::text IS NULL OR n.nspname = %s)"
)

#: The planner's row estimate of a table (no scan), from its quoted name.
ESTIMATED_ROWS = sql.SQL("SELECT reltuples FROM pg_catalog.pg_class WHERE oid = %s::regclass")

SCHEMA_EXISTS = sql.SQL("SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = %s")

#: How many heap blocks a relation has (by OID): the range the parallel readers split.
RELATION_BLOCKS = sql.SQL(
    "SELECT pg_catalog.pg_relation_size(%s::oid) / current_setting('block_size')::int"
)

#: Staging tables left behind (by any schema), with whether another session holds a lock on them.
LEFTOVER_STAGING = sql.SQL(
    "SELECT n.nspname, c.relname, "
    "EXISTS (SELECT FROM pg_catalog.pg_locks l "
    "WHERE l.relation = c.oid AND l.pid <> pg_backend_pid()) "
    "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind = 'r' AND c.relname LIKE '\\_stagecopy\\_%%' ORDER BY 1, 2"
)

#: Cumulative write counters and the file node (changes on TRUNCATE) of one table (the sensor).
TABLE_CHANGE_COUNTERS = sql.SQL(
    "SELECT s.n_tup_ins, s.n_tup_upd, s.n_tup_del, pg_catalog.pg_relation_filenode(c.oid) "
    "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "LEFT JOIN pg_catalog.pg_stat_all_tables s ON s.relid = c.oid "
    "WHERE n.nspname = %s AND c.relname = %s"
)
