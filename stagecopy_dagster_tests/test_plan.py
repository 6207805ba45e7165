"""The copy plan as a table of cases: mode x target state x server versions x options.

`plan_copy` is pure, so each row states the facts and the decision, with no database. The
integration tests (test_copier_*.py) check that each path then does what the plan says.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from stagecopy_dagster.engine.plan import (
    WIDE_ROW_BYTES,
    CopyPlan,
    IndexBuild,
    PlanFacts,
    plan_copy,
    plan_index_build,
)
from stagecopy_dagster.engine.types import CopyPath, SourceSize, SyncForm
from stagecopy_dagster.spec import Mode

PG15, PG16, PG17, PG18 = 150018, 160010, 170006, 180006
PG13 = 130020  # a source older than hash_record_extended


def facts(**changes: Any) -> PlanFacts:
    """A merge into a filled target on PostgreSQL 18, both sides, every option at its default."""
    base = PlanFacts(
        mode=Mode.MERGE,
        source_version=PG18,
        target_version=PG18,
        target_empty=False,
        schema_created=False,
        columns_added=False,
        incremental=False,
        windowed=False,
        has_where=False,
        diff_enabled=True,
        parallel=1,
        source_is_table=True,
        key_is_source_pk=True,
        needs_key=True,
        key_binary_safe=True,
        same_binary_types=True,
    )
    if "mode" in changes:
        changes.setdefault("needs_key", changes["mode"].needs_key)
    return dataclasses.replace(base, **changes)


D, S, X = CopyPath.DIRECT, CopyPath.STAGED, CopyPath.DIFF

# (case, facts, path, sync form)
PATH_CASES: list[tuple[str, dict[str, Any], CopyPath, SyncForm]] = [
    # merge
    ("merge, new table", {"target_empty": True}, D, SyncForm.NONE),
    ("merge, filled: diff", {}, X, SyncForm.NONE),
    ("merge, filled, PG15", {"target_version": PG15, "source_version": PG15}, X, SyncForm.NONE),
    ("merge, diff: false", {"diff_enabled": False}, S, SyncForm.NONE),
    ("merge, watermark", {"incremental": True, "windowed": True}, S, SyncForm.NONE),
    ("merge, watermark, empty scope", {"incremental": True}, S, SyncForm.NONE),
    ("merge, column just added", {"columns_added": True}, S, SyncForm.NONE),
    ("merge, key of a user type", {"key_binary_safe": False}, S, SyncForm.NONE),
    ("merge, source PG13", {"source_version": PG13}, S, SyncForm.NONE),
    ("merge, parallel 2", {"parallel": 2}, S, SyncForm.NONE),
    ("merge, parallel, query source", {"parallel": 2, "source_is_table": False}, X, SyncForm.NONE),
    ("merge, parallel, new schema", {"parallel": 2, "schema_created": True}, X, SyncForm.NONE),
    ("merge, parallel, no sessions", {"parallel": 2, "can_open_sessions": False}, X, SyncForm.NONE),
    ("merge, parallel, dry run", {"parallel": 2, "dry_run": True}, X, SyncForm.NONE),
    # sync: the sync form follows the path and the target's version
    ("sync, new table", {"mode": Mode.SYNC, "target_empty": True}, D, SyncForm.NONE),
    ("sync, diff, PG18", {"mode": Mode.SYNC}, X, SyncForm.DIFF_FULL_JOIN),
    ("sync, diff, PG16", {"mode": Mode.SYNC, "target_version": PG16}, X, SyncForm.DIFF_FULL_JOIN),
    ("sync, diff, PG15", {"mode": Mode.SYNC, "target_version": PG15}, X, SyncForm.DIFF_ANTI_JOIN),
    ("sync, staged, PG18", {"mode": Mode.SYNC, "diff_enabled": False}, S, SyncForm.IN_MERGE),
    (
        "sync, staged, PG17",
        {"mode": Mode.SYNC, "diff_enabled": False, "target_version": PG17},
        S,
        SyncForm.IN_MERGE,
    ),
    (
        "sync, staged, PG16",
        {"mode": Mode.SYNC, "diff_enabled": False, "target_version": PG16},
        S,
        SyncForm.AGAINST_STAGING,
    ),
    (
        "sync, staged, PG15",
        {"mode": Mode.SYNC, "diff_enabled": False, "target_version": PG15},
        S,
        SyncForm.AGAINST_STAGING,
    ),
    (
        "sync, watermark, PG18",
        {"mode": Mode.SYNC, "incremental": True, "windowed": True},
        S,
        SyncForm.KEYS_STREAM,
    ),
    (
        "sync, watermark, PG15",
        {"mode": Mode.SYNC, "incremental": True, "windowed": True, "target_version": PG15},
        S,
        SyncForm.KEYS_STREAM,
    ),
    (
        "sync, watermark, empty scope",
        {"mode": Mode.SYNC, "incremental": True},
        S,
        SyncForm.IN_MERGE,
    ),
    ("sync, parallel, PG18", {"mode": Mode.SYNC, "parallel": 3}, S, SyncForm.IN_MERGE),
    (
        "sync, parallel, PG15",
        {"mode": Mode.SYNC, "parallel": 3, "target_version": PG15},
        S,
        SyncForm.AGAINST_STAGING,
    ),
    # replace and append never MERGE
    ("replace, filled", {"mode": Mode.REPLACE}, D, SyncForm.NONE),
    ("replace, empty", {"mode": Mode.REPLACE, "target_empty": True}, D, SyncForm.NONE),
    ("append, filled", {"mode": Mode.APPEND}, D, SyncForm.NONE),
    (
        "append, watermark",
        {"mode": Mode.APPEND, "incremental": True, "windowed": True},
        D,
        SyncForm.NONE,
    ),
    ("append, parallel", {"mode": Mode.APPEND, "parallel": 2}, D, SyncForm.NONE),
]


@pytest.mark.parametrize(
    ("changes", "path", "sync"), [c[1:] for c in PATH_CASES], ids=[c[0] for c in PATH_CASES]
)
def test_path_and_sync_form(changes: dict[str, Any], path: CopyPath, sync: SyncForm) -> None:
    plan = plan_copy(facts(**changes))
    assert (plan.path, plan.sync) == (path, sync)


@pytest.mark.parametrize(
    ("version", "returning"), [(PG15, False), (PG16, False), (PG17, True), (PG18, True)]
)
def test_merge_reports_its_own_counts_from_postgresql_17(version: int, returning: bool) -> None:
    assert plan_copy(facts(target_version=version)).merge_returning is returning


@pytest.mark.parametrize(
    ("changes", "copy_format", "key_format"),
    [
        ({}, "binary", "binary"),
        ({"same_binary_types": False}, "text", "text"),
        ({"key_binary_safe": False}, "binary", "text"),
        ({"same_binary_types": False, "key_binary_safe": False}, "text", "text"),
    ],
)
def test_copy_format_is_binary_only_for_identical_portable_types(
    changes: dict[str, Any], copy_format: str, key_format: str
) -> None:
    plan = plan_copy(facts(**changes))
    assert (plan.copy_format, plan.key_format) == (copy_format, key_format)


@pytest.mark.parametrize(
    ("changes", "streams"),
    [
        ({}, 1),
        ({"parallel": 4}, 4),
        ({"parallel": 4, "target_empty": True}, 4),
        ({"parallel": 4, "mode": Mode.REPLACE}, 4),
        ({"parallel": 4, "source_is_table": False}, 1),
        ({"parallel": 4, "schema_created": True, "target_empty": True}, 1),
        ({"parallel": 4, "can_open_sessions": False}, 1),
        ({"parallel": 4, "dry_run": True}, 1),
    ],
)
def test_parallel_streams_only_where_other_sessions_can_share_the_work(
    changes: dict[str, Any], streams: int
) -> None:
    plan = plan_copy(facts(**changes))
    assert plan.streams == streams
    assert plan.parallel is (streams > 1)


@pytest.mark.parametrize(
    ("changes", "truncate", "delete_scope", "count_target"),
    [
        ({"mode": Mode.REPLACE}, True, False, False),
        ({"mode": Mode.REPLACE, "has_where": True}, False, True, True),
        ({"mode": Mode.REPLACE, "target_empty": True}, True, False, False),
        ({"mode": Mode.MERGE}, False, False, True),
        ({"mode": Mode.MERGE, "target_empty": True}, False, False, False),
        ({"mode": Mode.APPEND}, False, False, True),
        ({"mode": Mode.SYNC, "has_where": True}, False, False, True),
    ],
)
def test_replace_empties_its_scope_and_only_filled_targets_are_counted(
    changes: dict[str, Any], truncate: bool, delete_scope: bool, count_target: bool
) -> None:
    plan = plan_copy(facts(**changes))
    assert (plan.truncate, plan.delete_scope, plan.count_target) == (
        truncate,
        delete_scope,
        count_target,
    )


@pytest.mark.parametrize(
    ("changes", "check"),
    [
        ({"key_is_source_pk": True}, False),  # one snapshot cannot repeat its primary key
        ({"key_is_source_pk": False}, True),
        ({"key_is_source_pk": False, "dry_run": True}, False),
        ({"key_is_source_pk": False, "mode": Mode.SYNC}, True),
        ({"key_is_source_pk": False, "mode": Mode.APPEND}, False),  # no key to repeat
        ({"key_is_source_pk": False, "mode": Mode.REPLACE}, False),
    ],
)
def test_repeated_keys_are_looked_for_unless_the_source_rules_them_out(
    changes: dict[str, Any], check: bool
) -> None:
    assert plan_copy(facts(**changes)).check_duplicates is check


def test_every_mode_and_target_state_and_version_has_a_plan() -> None:
    """The whole grid plans without error, and only merge/sync into filled targets MERGE."""
    seen: set[tuple[CopyPath, SyncForm]] = set()
    for mode in Mode:
        for empty in (True, False):
            for version in (PG15, PG16, PG17, PG18):
                for diff in (True, False):
                    for windowed in (True, False):
                        plan: CopyPlan = plan_copy(
                            facts(
                                mode=mode,
                                target_empty=empty,
                                target_version=version,
                                source_version=version,
                                diff_enabled=diff,
                                incremental=windowed,
                                windowed=windowed,
                            )
                        )
                        merges = mode.needs_key and not empty
                        assert (plan.path is not CopyPath.DIRECT) is merges
                        assert (plan.sync is not SyncForm.NONE) is (merges and mode is Mode.SYNC)
                        seen.add((plan.path, plan.sync))
    assert seen == {
        (D, SyncForm.NONE),
        (S, SyncForm.NONE),
        (X, SyncForm.NONE),
        (X, SyncForm.DIFF_FULL_JOIN),
        (X, SyncForm.DIFF_ANTI_JOIN),
        (S, SyncForm.IN_MERGE),
        (S, SyncForm.AGAINST_STAGING),
        (S, SyncForm.KEYS_STREAM),
    }


# --- when a created table's key and watermark index are built -----------------------------------

MB = 1024 * 1024
GB = 1024 * MB
CACHE = 4 * GB  # effective_cache_size's default


def size(rows: float, heap_mb: float, **correlation: float) -> SourceSize:
    return SourceSize(rows, int(heap_mb * MB), tuple(correlation.items()))


@pytest.mark.parametrize(
    ("source", "may_refuse_rows", "build"),
    [
        # The measured shapes, keys in heap order: ~290 and ~800 bytes a row, in the cache.
        (size(1e6, 290, id=1.0), False, IndexBuild.AFTER_LOAD),
        (size(1.5e6, 1200, id=1.0), False, IndexBuild.AFTER_LOAD),
        # Rows as wide as the later build's second scan costs more than a key insert.
        (size(1e5, 100 * WIDE_ROW_BYTES / 1000 * 1.01, id=1.0), False, IndexBuild.BEFORE_LOAD),
        (size(1e5, 100 * WIDE_ROW_BYTES / 1000 * 1.01, id=-1.0), False, IndexBuild.BEFORE_LOAD),
        # A heap larger than the target's cache: the later build would read it from disk again.
        (size(5e7, 5 * 1024, id=1.0), False, IndexBuild.BEFORE_LOAD),
        # Scattered key values: every insert a random B-tree descent.
        (size(5e7, 5 * 1024, id=0.01), False, IndexBuild.AFTER_LOAD),
        # A key the source does not enforce: a load must not fail half way on it.
        (size(5e7, 5 * 1024, id=1.0), True, IndexBuild.AFTER_LOAD),
        # Small tables, no statistics, a query: the default.
        (size(1000, 20, id=1.0), False, IndexBuild.AFTER_LOAD),
        (size(-1, 5 * 1024, id=1.0), False, IndexBuild.AFTER_LOAD),
        (size(5e7, 5 * 1024), False, IndexBuild.AFTER_LOAD),
        (None, False, IndexBuild.AFTER_LOAD),
    ],
    ids=[
        "narrow",
        "wide",
        "very-wide",
        "very-wide-descending",
        "beyond-cache",
        "beyond-cache-scattered",
        "beyond-cache-unenforced-key",
        "small",
        "never-analyzed",
        "no-column-statistics",
        "query",
    ],
)
def test_index_build_follows_row_width_size_and_order(
    source: SourceSize | None, may_refuse_rows: bool, build: IndexBuild
) -> None:
    assert (
        plan_index_build(source, "id", may_refuse_rows=may_refuse_rows, cache_bytes=CACHE) is build
    )
