"""Pure SQL builders: every statement stagecopy sends, composed with :mod:`psycopg.sql`.

Nothing here touches a database; each builder returns a :class:`psycopg.sql.Composed` whose text
the unit tests compare exactly (``stmt.as_string(None)``). Identifiers are always
:class:`~psycopg.sql.Identifier`; values are :class:`~psycopg.sql.Literal` (COPY cannot take bind
parameters) or bind parameters; the only user SQL comes in as a
:class:`~stagecopy_dagster.sqlguard.CheckedSql`.

Callers use the package as one namespace (``from stagecopy_dagster import statements as st``);
the modules hold one job each: :mod:`~.compose` (identifiers, column lists, types),
:mod:`~.session` (settings, snapshots, locks), :mod:`~.catalog` (fixed catalog queries),
:mod:`~.scope` (FROM items, the scope's WHERE, scoped reads), :mod:`~.transfer` (COPY),
:mod:`~.ddl` (schema changes), :mod:`~.apply` (MERGE, INSERT, deletes), :mod:`~.diff` (the
diff path's hashes and keys) and :mod:`~.digests` (the integrity check's digests).
"""

from stagecopy_dagster.engine.types import Column, CopyFormat
from stagecopy_dagster.statements.apply import (
    count_new_keys,
    delete_missing,
    delete_scope,
    duplicate_keys,
    insert_from,
    merge,
)
from stagecopy_dagster.statements.catalog import (
    CACHE_BYTES,
    COLUMN_CORRELATION,
    COLUMNS,
    ESTIMATED_ROWS,
    FILLED_COLUMNS,
    FORMAT_TYPE,
    LEFTOVER_STAGING,
    PRIMARY_KEY,
    RELATION_BLOCKS,
    RELATION_OID,
    RELATION_SIZE,
    SCHEMA_EXISTS,
    TABLE_CHANGE_COUNTERS,
    VOLATILE_FUNCTIONS,
)
from stagecopy_dagster.statements.compose import column_list, ident, type_sql
from stagecopy_dagster.statements.ddl import (
    add_column,
    add_primary_key,
    alter_column_type,
    analyze,
    create_index,
    create_schema,
    create_staging,
    create_staging_table,
    create_table,
    drop_table,
    truncate,
)
from stagecopy_dagster.statements.diff import (
    changed_key_arrays,
    count_changed,
    create_changed_keys,
    create_gone_keys,
    delete_gone,
    key_in,
    row_image_hash,
    select_key_hashes,
)
from stagecopy_dagster.statements.digests import (
    CHECK_BUCKETS,
    bucket_digests,
    count_scope,
    has_portable_hash,
    row_digests,
)
from stagecopy_dagster.statements.scope import (
    count_rows,
    count_select,
    describe_query,
    explain_estimate,
    is_empty,
    max_watermark,
    scope_filter,
    select_rows,
    source_relation,
    watermark_signature,
    window_condition,
)
from stagecopy_dagster.statements.session import (
    EAGER_PARALLEL,
    SESSION_SETTINGS,
    advisory_lock,
    export_snapshot,
    lock_table,
    reset_local,
    schema_lock,
    set_local,
    set_session,
    set_snapshot,
)
from stagecopy_dagster.statements.transfer import copy_in, copy_out, ctid_range

__all__ = [
    # types the builders take (defined in stagecopy_dagster.engine.types)
    "Column",
    "CopyFormat",
    # compose
    "column_list",
    "ident",
    "type_sql",
    # session
    "EAGER_PARALLEL",
    "SESSION_SETTINGS",
    "advisory_lock",
    "schema_lock",
    "export_snapshot",
    "lock_table",
    "reset_local",
    "set_local",
    "set_session",
    "set_snapshot",
    # catalog
    "CACHE_BYTES",
    "COLUMN_CORRELATION",
    "COLUMNS",
    "ESTIMATED_ROWS",
    "FILLED_COLUMNS",
    "FORMAT_TYPE",
    "LEFTOVER_STAGING",
    "PRIMARY_KEY",
    "RELATION_BLOCKS",
    "RELATION_OID",
    "RELATION_SIZE",
    "SCHEMA_EXISTS",
    "TABLE_CHANGE_COUNTERS",
    "VOLATILE_FUNCTIONS",
    # scope
    "count_rows",
    "count_select",
    "describe_query",
    "explain_estimate",
    "is_empty",
    "max_watermark",
    "scope_filter",
    "select_rows",
    "source_relation",
    "watermark_signature",
    "window_condition",
    # transfer
    "copy_in",
    "copy_out",
    "ctid_range",
    # ddl
    "add_column",
    "add_primary_key",
    "alter_column_type",
    "analyze",
    "create_index",
    "create_schema",
    "create_staging",
    "create_staging_table",
    "create_table",
    "drop_table",
    "truncate",
    # apply
    "count_new_keys",
    "delete_missing",
    "delete_scope",
    "duplicate_keys",
    "insert_from",
    "merge",
    # diff
    "changed_key_arrays",
    "count_changed",
    "create_changed_keys",
    "create_gone_keys",
    "delete_gone",
    "key_in",
    "row_image_hash",
    "select_key_hashes",
    # digests
    "CHECK_BUCKETS",
    "bucket_digests",
    "count_scope",
    "has_portable_hash",
    "row_digests",
]
