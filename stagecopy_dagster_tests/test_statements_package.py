"""The package's public names: every caller's ``st.<name>`` keeps resolving."""

from __future__ import annotations

from stagecopy_dagster import statements as st
from stagecopy_dagster.engine import types

#: Every public name `statements.py` had before it became a package (issue #10), and since.
PUBLIC_NAMES = {
    *("CHECK_BUCKETS", "COLUMNS", "Column", "CopyFormat", "EAGER_PARALLEL", "ESTIMATED_ROWS"),
    *("FORMAT_TYPE", "LEFTOVER_STAGING", "PRIMARY_KEY", "RELATION_BLOCKS", "RELATION_OID"),
    *("SCHEMA_EXISTS", "SESSION_SETTINGS", "TABLE_CHANGE_COUNTERS", "VOLATILE_FUNCTIONS"),
    *("add_column", "add_primary_key", "advisory_lock", "analyze", "bucket_digests"),
    *("changed_key_arrays", "column_list", "copy_in", "copy_out", "count_changed"),
    *("count_new_keys", "count_rows", "create_changed_keys", "create_gone_keys"),
    *("create_index", "create_schema", "create_staging", "create_staging_table", "create_table"),
    *("ctid_range", "delete_gone", "delete_missing", "delete_scope", "describe_query"),
    *("drop_table", "duplicate_keys", "export_snapshot", "has_portable_hash", "ident"),
    *("insert_from", "is_empty", "key_in", "lock_table", "max_watermark", "merge"),
    *("reset_local", "row_digests", "row_image_hash", "scope_filter", "select_key_hashes"),
    *("select_rows", "set_local", "set_session", "set_snapshot", "source_relation", "truncate"),
    *("type_sql", "watermark_signature"),
    *("FILLED_COLUMNS", "alter_column_type"),  # issue #13: on_schema_change
    # Added since: the copy's expected size (issue #14).
    *("count_select", "explain_estimate"),
    # Since: the key-build facts and the incremental window check (issue #12).
    *("CACHE_BYTES", "COLUMN_CORRELATION", "RELATION_SIZE", "count_scope", "window_condition"),
    "schema_lock",  # issue #12: copies side by side into a new schema
}


def test_all_lists_every_public_name_once() -> None:
    assert len(st.__all__) == len(set(st.__all__))
    assert set(st.__all__) == PUBLIC_NAMES


def test_every_listed_name_resolves_to_a_builder_or_a_constant() -> None:
    for name in st.__all__:
        value = getattr(st, name)
        # `merge` and the other builders are functions, never a same-named submodule.
        assert not isinstance(value, type(st)), name


def test_column_types_are_the_engines() -> None:
    assert st.Column is types.Column
    assert st.CopyFormat is types.CopyFormat
