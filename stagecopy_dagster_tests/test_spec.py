"""Spec validation: every error names the entry and the problem (no database)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stagecopy_dagster.errors import SpecError
from stagecopy_dagster.identifiers import QualifiedName
from stagecopy_dagster.spec import (
    MaskKind,
    Mode,
    ReplicationSpec,
    SchemaPolicy,
    load_spec,
    parse_spec,
)


def spec_error(data: Any) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    return str(info.value)


# --- valid specs ------------------------------------------------------------------------------


def test_minimal_entry_gets_the_documented_defaults() -> None:
    table = load_spec({"tables": [{"source": "Sales.Orders"}]}).tables[0]
    assert table.source == QualifiedName("sales", "orders")
    assert table.target_table == QualifiedName("sales", "orders")
    assert table.mode is Mode.MERGE
    assert table.primary_key is None
    assert table.where is None
    assert table.asset_name == "sales__orders"
    assert table.label == "sales.orders"
    assert table.source_label == "sales.orders"


def test_defaults_apply_to_every_table_and_entries_override_them() -> None:
    spec = load_spec(
        {
            "defaults": {"mode": "sync", "where": "active", "lookback": "5 minutes"},
            "tables": [
                {"source": "a.b", "incremental_field": "u"},
                {"source": "a.c", "mode": "merge", "incremental_field": "v"},
            ],
        }
    )
    assert [t.mode for t in spec.tables] == [Mode.SYNC, Mode.MERGE]
    assert all(t.where is not None and t.where.text == "active" for t in spec.tables)
    assert [t.lookback for t in spec.tables] == ["5 minutes", "5 minutes"]


def test_names_follow_postgresql_rules() -> None:
    table = load_spec(
        {
            "tables": [
                {
                    "source": 'raw_data."인포맥스종목마스터"',
                    "target": '"Sales"."Order Items"',
                    "primary_key": ["종목코드", '"Code"', "Other"],
                    "incremental_field": "Updated_At",
                }
            ]
        }
    ).tables[0]
    assert table.source == QualifiedName("raw_data", "인포맥스종목마스터")
    assert table.target_table == QualifiedName("Sales", "Order Items")
    assert table.primary_key == ("종목코드", "Code", "other")
    assert table.incremental_field == "updated_at"
    assert table.label == '"Sales"."Order Items"'


def test_primary_key_may_be_a_single_string() -> None:
    table = load_spec(
        {"tables": [{"query": "SELECT 1 AS id", "target": "a.b", "primary_key": "id"}]}
    ).tables[0]
    assert table.primary_key == ("id",)
    assert table.source_label == "query"


def test_query_in_append_or_replace_needs_no_key() -> None:
    for mode in ("append", "replace"):
        table = load_spec(
            {"tables": [{"query": "SELECT 1 AS a", "target": "x.y", "mode": mode}]}
        ).tables[0]
        assert table.mode == Mode(mode)


def test_select_by_asset_target_or_source_name() -> None:
    spec = load_spec(
        {"tables": [{"source": "a.orders"}, {"source": "a.items", "target": "b.items_copy"}]}
    )
    assert spec.table("a__orders") is spec.tables[0]
    assert spec.table("b.items_copy") is spec.tables[1]
    assert spec.table("a.items") is spec.tables[1]
    assert spec.select(None) == spec.tables
    assert spec.select(["a.items", "b__items_copy"]) == (spec.tables[1],)
    with pytest.raises(SpecError, match="no table matches 'nope'"):
        spec.table("nope")


def test_the_spec_is_frozen() -> None:
    spec = load_spec({"tables": [{"source": "a.b"}]})
    with pytest.raises(Exception, match="frozen"):
        spec.tables[0].mode = Mode.SYNC  # type: ignore[misc]
    assert isinstance(spec, ReplicationSpec)


# --- errors name the entry and the problem ----------------------------------------------------


def test_unknown_key() -> None:
    message = spec_error({"tables": [{"source": "public.orders", "colour": "red"}]})
    assert message == "spec: tables[0] (public.orders): unknown key 'colour'"


def test_bad_mode_lists_the_modes() -> None:
    message = spec_error(
        {"tables": [{"source": "a.ok"}, {"source": "public.orders", "mode": "upsert"}]}
    )
    assert message == (
        "spec: tables[1] (public.orders).mode: 'upsert' is not one of merge, sync, replace, append"
    )


def test_both_source_and_query() -> None:
    message = spec_error(
        {"tables": [{"source": "a.orders", "query": "SELECT 1 AS a", "target": "x.y"}]}
    )
    assert "tables[0]" in message
    assert "give exactly one of `source` (a table) or `query` (a SELECT)" in message


def test_neither_source_nor_query() -> None:
    message = spec_error({"tables": [{"target": "public.orders"}]})
    assert message == (
        "spec: tables[0] (public.orders): give exactly one of `source` (a table) or "
        "`query` (a SELECT)"
    )


def test_query_without_target() -> None:
    message = spec_error({"tables": [{"query": "SELECT 1 AS id", "primary_key": "id"}]})
    assert message == "spec: tables[0]: a `query` source needs an explicit `target`"


@pytest.mark.parametrize("mode", ["merge", "sync"])
def test_query_in_a_keyed_mode_needs_primary_key(mode: str) -> None:
    message = spec_error({"tables": [{"query": "SELECT 1 AS id", "target": "a.b", "mode": mode}]})
    assert message == f"spec: tables[0] (a.b): a `query` source in mode {mode} needs `primary_key`"


def test_duplicate_targets_name_both_entries() -> None:
    message = spec_error(
        {"tables": [{"source": "a.orders"}, {"source": "b.orders", "target": "a.orders"}]}
    )
    assert message == "spec: tables[1] and tables[0] both write a.orders"


def test_duplicate_targets_after_folding() -> None:
    message = spec_error({"tables": [{"source": "A.Orders"}, {"source": "a.orders"}]})
    assert "tables[1] and tables[0] both write a.orders" in message


def test_duplicate_asset_names() -> None:
    message = spec_error(
        {"tables": [{"source": "a.orders", "name": "x"}, {"source": "b.orders", "name": "x"}]}
    )
    assert message == (
        "spec: tables[1] and tables[0] would both be asset 'x'; set `name:` on one of them"
    )


def test_derived_asset_names_that_collide_are_refused() -> None:
    message = spec_error(
        {"tables": [{"source": "sales.orders"}, {"source": 'public."sales__orders"'}]}
    )
    assert "would both be asset 'sales__orders'" in message


def test_bad_cron() -> None:
    message = spec_error({"tables": [{"source": "a.orders", "schedule": "every day"}]})
    assert message == (
        "spec: tables[0] (a.orders).schedule: schedule 'every day' is not a valid cron string"
    )


def test_good_cron_is_kept() -> None:
    table = load_spec({"tables": [{"source": "a.b", "schedule": "*/5 * * * *"}]}).tables[0]
    assert table.schedule == "*/5 * * * *"


def test_lookback_without_incremental_field() -> None:
    message = spec_error({"tables": [{"source": "a.orders", "lookback": "10 minutes"}]})
    assert message == "spec: tables[0] (a.orders): `lookback` needs `incremental_field`"


def test_lookback_must_be_an_interval() -> None:
    message = spec_error(
        {"tables": [{"source": "a.orders", "incremental_field": "u", "lookback": "ten minutes"}]}
    )
    assert "tables[0] (a.orders).lookback" in message
    assert "'ten minutes' must look like '10 minutes'" in message


def test_replace_with_incremental_field_is_refused() -> None:
    # A replace deletes the whole scope; copying only new rows back would lose the rest.
    message = spec_error(
        {"tables": [{"source": "a.orders", "mode": "replace", "incremental_field": "u"}]}
    )
    assert "tables[0] (a.orders)" in message
    assert "mode replace copies the whole scope; drop `incremental_field`" in message


def test_append_with_lookback_is_refused() -> None:
    # Append has no key: rows re-read inside the lookback window would be inserted twice.
    message = spec_error(
        {
            "tables": [
                {
                    "source": "a.events",
                    "mode": "append",
                    "incremental_field": "at",
                    "lookback": "10 minutes",
                }
            ]
        }
    )
    assert "tables[0] (a.events)" in message
    assert "`lookback` re-reads rows and append has no key" in message


@pytest.mark.parametrize("key", ["source", "target", "query", "name"])
def test_defaults_cannot_set_per_table_keys(key: str) -> None:
    message = spec_error({"defaults": {key: "a.b"}, "tables": [{"source": "a.orders"}]})
    assert message == f"spec: defaults cannot set ['{key}'] (one per table)"


def test_defaults_must_be_a_mapping() -> None:
    assert spec_error({"defaults": ["x"], "tables": [{"source": "a.b"}]}) == (
        "spec: `defaults` must be a mapping"
    )


@pytest.mark.parametrize("data", [None, {}])
def test_empty_spec(data: Any) -> None:
    assert spec_error(data) == "spec: the spec is empty; it needs a `tables:` list"


@pytest.mark.parametrize("tables", [{"source": "a.b"}, "a.b", [], None])
def test_tables_must_be_a_non_empty_list(tables: Any) -> None:
    assert spec_error({"tables": tables}) == "spec: `tables` must be a non-empty list"


def test_unknown_top_level_key() -> None:
    assert spec_error({"tables": [{"source": "a.b"}], "table": []}) == (
        "spec: unknown top-level key(s) ['table']"
    )


def test_an_entry_must_be_a_mapping() -> None:
    assert spec_error({"tables": [{"source": "a.b"}, "a.c"]}) == (
        "spec: tables[1] must be a mapping"
    )


def test_bad_where_names_the_entry_and_the_sql() -> None:
    message = spec_error({"tables": [{"source": "a.orders", "where": "1=1; DROP TABLE x"}]})
    assert message == (
        "spec: tables[0] (a.orders): where '1=1; DROP TABLE x' must be a single statement, found 2"
    )


def test_bad_query_names_the_entry() -> None:
    message = spec_error(
        {"tables": [{"query": "DELETE FROM t", "target": "a.b", "mode": "append"}]}
    )
    assert message == "spec: tables[0] (a.b): query must be a SELECT, got DELETE"


def test_bad_table_name() -> None:
    message = spec_error({"tables": [{"source": "a.b.c"}]})
    assert (
        message == "spec: tables[0] (a.b.c): table name 'a.b.c': expected schema.table, got 3 parts"
    )


def test_bad_asset_name_uses_the_name_as_label() -> None:
    message = spec_error({"tables": [{"source": "a.orders", "name": "my-asset"}]})
    assert message == "spec: tables[0] (my-asset).name: 'my-asset' must match ^[A-Za-z0-9_]+$"


def test_primary_key_listed_twice_after_folding() -> None:
    message = spec_error({"tables": [{"source": "a.b", "primary_key": ["id", "ID"]}]})
    assert message == "spec: tables[0] (a.b): primary_key lists a column twice"


def test_parallel_range() -> None:
    message = spec_error({"tables": [{"source": "a.b", "parallel": 0}]})
    assert message.startswith("spec: tables[0] (a.b).parallel: ")


# --- YAML files -------------------------------------------------------------------------------


def test_load_from_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "replication.yaml"
    path.write_text(
        "defaults:\n  mode: sync\ntables:\n"
        "  - source: raw_data.인포맥스종목마스터\n    primary_key: 종목코드\n"
        "    where: 시장구분 = 'KOSPI' -- 코스피만\n",
        encoding="utf-8",
    )
    table = load_spec(path).tables[0]
    assert table.source == QualifiedName("raw_data", "인포맥스종목마스터")
    assert table.primary_key == ("종목코드",)
    assert table.where is not None and table.where.text == "\"시장구분\" = 'KOSPI'"
    assert table.mode is Mode.SYNC


def test_errors_from_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("tables:\n  - source: a.b\n    mode: upsert\n", encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value).startswith(f"{path}: tables[0] (a.b).mode: 'upsert'")


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("tables: [\n", encoding="utf-8")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(path)
    with pytest.raises(SpecError, match="cannot read spec"):
        load_spec(tmp_path / "missing.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(SpecError, match="the spec is empty"):
        load_spec(empty)


@pytest.mark.parametrize("cron", ["0 0 30 2 *", "* * * * * *", "61 * * * *", "0 0 * *"])
def test_crons_dagster_refuses_are_refused(cron: str) -> None:
    message = spec_error({"tables": [{"source": "a.orders", "schedule": cron}]})
    assert message.endswith(f"schedule {cron!r} is not a valid cron string")


@pytest.mark.parametrize("cron", ["@daily", "0 9 * * MON-FRI", "*/90 * * * *"])
def test_crons_dagster_accepts_are_kept(cron: str) -> None:
    assert load_spec({"tables": [{"source": "a.b", "schedule": cron}]}).tables[0].schedule == cron


# --- on_schema_change, columns, exclude_columns, mask (issue #13) ---------------------------------


def test_schema_policy_and_masks_parse_with_defaults() -> None:
    spec = load_spec(
        {
            "defaults": {"on_schema_change": "fail"},
            "tables": [
                {"source": "a.b", "mask": {"주민번호": "hash", '"Tel"': None}},
                {"source": "a.c", "on_schema_change": "ignore", "exclude_columns": ["Memo"]},
                {"source": "a.d", "columns": ["id", "v"], "primary_key": "id"},
            ],
        }
    )
    first, second, third = spec.tables
    assert [t.on_schema_change for t in spec.tables] == [
        SchemaPolicy.FAIL,
        SchemaPolicy.IGNORE,
        SchemaPolicy.FAIL,
    ]
    assert first.masks == {"주민번호": MaskKind.HASH, "Tel": MaskKind.NULL}
    assert second.exclude_columns == ("memo",)
    assert third.columns == ("id", "v")
    assert load_spec({"tables": [{"source": "a.b"}]}).tables[0].on_schema_change == "evolve"
    hash(first)  # a frozen spec stays hashable with a mask


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        (
            {"on_schema_change": "drop"},
            "(a.b).on_schema_change: 'drop' is not one of evolve, fail, ignore",
        ),
        ({"mask": {"v": "sha1"}}, "(a.b).mask: mask of 'v': 'sha1' is not one of hash, null"),
        ({"mask": ["v"]}, "(a.b).mask: `mask` must map column names to hash or null"),
        ({"mask": {"v": "hash", "V": "null"}}, "(a.b).mask: mask lists column 'v' twice"),
        (
            {"columns": ["id"], "exclude_columns": ["v"]},
            "(a.b): give `columns` (copy only these) or `exclude_columns`, not both",
        ),
        ({"columns": []}, "(a.b): `columns` is empty: list the columns to copy"),
        ({"columns": ["id", "ID"]}, "(a.b): columns lists a column twice"),
        (
            {"primary_key": "id", "columns": ["v"]},
            "(a.b): `columns` must include the primary_key column 'id'",
        ),
        (
            {"primary_key": "id", "exclude_columns": ["id"]},
            "(a.b): primary_key column 'id' cannot be excluded",
        ),
        (
            {"primary_key": "id", "mask": {"id": "hash"}},
            "(a.b): primary_key column 'id' cannot be masked (rows match by it)",
        ),
        (
            {"incremental_field": "at", "mask": {"at": "null"}},
            "(a.b): incremental_field 'at' cannot be masked",
        ),
        (
            {"incremental_field": "at", "columns": ["id"]},
            "(a.b): `columns` must include the incremental_field 'at'",
        ),
        (
            {"exclude_columns": ["v"], "mask": {"v": "hash"}},
            "(a.b): column 'v' is both masked and excluded",
        ),
        (
            {"columns": ["id"], "mask": {"v": "hash"}},
            "(a.b): masked column 'v' is not in `columns`",
        ),
    ],
)
def test_column_selection_and_mask_errors(entry: dict[str, Any], says: str) -> None:
    assert spec_error({"tables": [{"source": "a.b", **entry}]}) == f"spec: tables[0] {says}"


def test_check_schedule_is_a_validated_cron_also_under_defaults() -> None:
    spec = load_spec(
        {
            "defaults": {"check_schedule": "0 3 * * *"},
            "tables": [{"source": "a.b"}, {"source": "a.c", "check_schedule": "@daily"}],
        }
    )
    assert [t.check_schedule for t in spec.tables] == ["0 3 * * *", "@daily"]
    message = spec_error({"tables": [{"source": "a.orders", "check_schedule": "nightly"}]})
    assert message == (
        "spec: tables[0] (a.orders).check_schedule: check_schedule 'nightly' is not a valid "
        "cron string"
    )
