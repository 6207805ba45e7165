"""The schema-change decision (`on_schema_change`), as a table of cases (no database)."""

from __future__ import annotations

import pytest

from stagecopy_dagster.engine.schema import ChangeKind, SchemaChange, plan_schema, widens
from stagecopy_dagster.engine.types import Column
from stagecopy_dagster.spec import SchemaPolicy

EVOLVE, FAIL, IGNORE = SchemaPolicy.EVOLVE, SchemaPolicy.FAIL, SchemaPolicy.IGNORE


def cols(*specs: str) -> list[Column]:
    """`"name type"` (`!` after the type: NOT NULL, `=` before the name: generated)."""
    found: list[Column] = []
    for text in specs:
        name, type_ = text.split(" ", 1)
        not_null = type_.endswith("!")
        found.append(
            Column(
                name.lstrip("="),
                type_.rstrip("!"),
                not_null=not_null,
                generated=name.startswith("="),
            )
        )
    return found


@pytest.mark.parametrize(
    ("target", "source", "wider"),
    [
        ("character varying(10)", "character varying(20)", True),
        ("character varying(10)", "text", True),
        ("character varying(10)", "character varying", True),
        ("character varying", "text", True),
        ("character varying(20)", "character varying(10)", False),
        ("text", "character varying(10)", False),
        ("text", "character varying", False),
        ("smallint", "integer", True),
        ("smallint", "bigint", True),
        ("integer", "bigint", True),
        ("bigint", "integer", False),
        ("integer", "smallint", False),
        ("integer", "numeric", False),
        ("numeric(10,2)", "numeric(12,2)", True),
        ("numeric(10,2)", "numeric(12,4)", True),
        ("numeric(10,2)", "numeric(11,3)", True),  # 8 integer digits stay 8
        ("numeric(10,2)", "numeric(10,3)", False),  # 8 integer digits become 7
        ("numeric(10,2)", "numeric(10,1)", False),
        ("numeric(10,2)", "numeric", True),
        ("numeric", "numeric(30,10)", False),
        ("timestamp(3) without time zone", "timestamp without time zone", True),
        ("timestamp(3) without time zone", "timestamp(6) without time zone", True),
        ("timestamp without time zone", "timestamp(3) without time zone", False),
        ("time(0) without time zone", "time(3) without time zone", True),
        ("timestamp(3) with time zone", "timestamp with time zone", True),
        ("timestamp without time zone", "timestamp with time zone", False),
        ("timestamp with time zone", "timestamp without time zone", False),
        ("date", "timestamp without time zone", False),
        ("text", "text", False),
        ("integer", "text", False),
    ],
)
def test_widens(target: str, source: str, wider: bool) -> None:
    assert widens(target, source) is wider


def test_same_columns_change_nothing_under_every_policy() -> None:
    both = cols("id integer!", "v text")
    for policy in SchemaPolicy:
        plan = plan_schema(both, both, key=["id"], policy=policy)
        assert (plan.changes, plan.nulled, plan.problems) == ((), (), ())
        assert [c.name for c in plan.columns] == ["id", "v"]


def test_evolve_adds_widens_and_keeps_gone_columns() -> None:
    plan = plan_schema(
        cols("id bigint!", "name text", "amount numeric(14,4)", "score real"),
        cols("id integer!", "name character varying(10)", "amount numeric(12,2)", "old text"),
        key=["id"],
        policy=EVOLVE,
    )
    assert plan.problems == ()
    assert plan.changes == (
        SchemaChange("id", ChangeKind.WIDENED, "bigint", "integer"),
        SchemaChange("name", ChangeKind.WIDENED, "text", "character varying(10)"),
        SchemaChange("amount", ChangeKind.WIDENED, "numeric(14,4)", "numeric(12,2)"),
        SchemaChange("score", ChangeKind.ADDED, "real"),
        SchemaChange("old", ChangeKind.GONE_FROM_SOURCE, None, "text"),
    )
    assert [c.name for c in plan.widened] == ["id", "name", "amount"]
    assert [(c.name, c.type, c.not_null) for c in plan.added] == [("score", "real", False)]
    assert [(c.name, c.type) for c in plan.columns] == [
        ("id", "bigint"),
        ("name", "text"),
        ("amount", "numeric(14,4)"),
        ("score", "real"),
    ]
    assert plan.columns[0].not_null  # the target's NOT NULL is kept
    assert plan.nulled == ("old",)
    assert [c.as_dict() for c in plan.changes[::3]] == [
        {"column": "id", "change": "widened", "from": "integer", "to": "bigint"},
        {"column": "score", "change": "added", "type": "real"},
    ]
    assert plan.changes[4].as_dict() == {
        "column": "old",
        "change": "gone_from_source",
        "from": "text",
    }


def test_evolve_refuses_narrowing_and_type_changes_naming_every_column() -> None:
    plan = plan_schema(
        cols("id integer", "a character varying(5)", "b text", "c integer", "new int"),
        cols("id integer", "a character varying(10)", "b integer", "c bigint"),
        key=["id"],
        policy=EVOLVE,
    )
    assert plan.problems == (
        "column types differ between source and target (no silent casts): "
        "a is character varying(5) at the source, character varying(10) here; "
        "b is text at the source, integer here; c is integer at the source, bigint here",
    )


def test_evolve_refuses_timestamp_to_timestamptz_and_says_how_to_convert() -> None:
    plan = plan_schema(
        cols("id integer", "at timestamp with time zone"),
        cols("id integer", "at timestamp without time zone"),
        key=["id"],
        policy=EVOLVE,
    )
    (problem,) = plan.problems
    assert "at is timestamp with time zone at the source, timestamp without time zone here" in (
        problem
    )
    assert "USING at AT TIME ZONE '<that zone>'" in problem


def test_evolve_refuses_a_gone_not_null_column() -> None:
    plan = plan_schema(
        cols("id integer"), cols("id integer", "code text!"), key=["id"], policy=EVOLVE
    )
    (problem,) = plan.problems
    assert problem.startswith("column code is gone from the source but NOT NULL in the target")


def test_the_targets_own_columns_are_left_alone() -> None:
    plan = plan_schema(
        cols("id integer", "v text"),
        cols("id integer", "v text", "loaded_at timestamptz!", "=total numeric", "n bigint!"),
        key=["id"],
        policy=FAIL,
        target_own=["loaded_at", "n"],
    )
    assert (plan.changes, plan.nulled, plan.problems) == ((), (), ())
    assert [c.name for c in plan.columns] == ["id", "v"]


def test_fail_refuses_any_difference_in_one_message() -> None:
    plan = plan_schema(
        cols("id integer", "v text", "new int"),
        cols("id integer", "v character varying(3)", "old text"),
        key=["id"],
        policy=FAIL,
    )
    assert plan.problems == (
        "the source's columns differ from the target's (on_schema_change: fail): "
        "column new (int) is new at the source; column types differ between source and "
        "target (no silent casts): v is text at the source, character varying(3) here; "
        "column old is gone from the source",
    )


def test_ignore_copies_the_common_columns_and_changes_nothing() -> None:
    plan = plan_schema(
        cols("id integer", "v text", "new int"),
        cols("id integer", "v text", "old text!"),
        key=["id"],
        policy=IGNORE,
    )
    assert plan.problems == ()
    assert [c.name for c in plan.columns] == ["id", "v"]
    assert (plan.added, plan.widened, plan.nulled) == ((), (), ())
    assert [(c.column, c.kind) for c in plan.changes] == [
        ("new", ChangeKind.NOT_ADDED),
        ("old", ChangeKind.NOT_COPIED),
    ]


def test_ignore_still_refuses_a_type_difference_and_a_missing_key() -> None:
    plan = plan_schema(
        cols("id integer", "v text"),
        cols("v character varying(3)"),
        key=["id"],
        policy=IGNORE,
    )
    assert plan.problems == (
        "column types differ between source and target (no silent casts): "
        "v is text at the source, character varying(3) here",
        "key column 'id' is not in the target",
    )


def test_a_key_generated_in_the_target_is_a_problem() -> None:
    plan = plan_schema(
        cols("id integer", "v integer"), cols("=id integer", "v integer"), key=["id"], policy=EVOLVE
    )
    assert plan.problems == ("key column 'id' is generated in the target",)


def test_a_null_mask_needs_a_nullable_target_column() -> None:
    both = cols("id integer", "phone text!")
    plan = plan_schema(both, both, key=["id"], policy=EVOLVE, null_masked=["phone"])
    (problem,) = plan.problems
    assert problem.startswith("column phone is masked with null but NOT NULL in the target")
