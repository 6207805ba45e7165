"""What the target's user types need, decided without a database.

:mod:`stagecopy_dagster.engine.usertypes`: enum label additions, differences, the plan.
"""

from __future__ import annotations

import pytest

from stagecopy_dagster.engine.types import TypeAttribute, UserType
from stagecopy_dagster.engine.usertypes import (
    enum_label_additions,
    plan_type_changes,
    type_differences,
)
from stagecopy_dagster.errors import SchemaMismatchError, UserTypeError
from stagecopy_dagster.identifiers import QualifiedName
from stagecopy_dagster_tests.statementhelpers import text

MOOD = QualifiedName("public", "mood")


@pytest.mark.parametrize(
    ("wanted", "have", "additions"),
    [
        (["a", "b"], ["a", "b"], []),
        (["a", "b", "c"], ["a", "c"], [("b", None, "a")]),
        (["x", "a", "b"], ["a", "b"], [("x", "a", None)]),
        (["x", "y", "a"], ["a"], [("x", "a", None), ("y", None, "x")]),
        (["a", "b", "c"], ["a"], [("b", None, "a"), ("c", None, "b")]),
        (["a", "b"], [], [("a", None, None), ("b", None, "a")]),
        (["a", "b"], ["b", "a"], None),  # another order
        (["a"], ["a", "z"], None),  # a label the source lacks
    ],
)
def test_enum_label_additions(
    wanted: list[str], have: list[str], additions: list[tuple[str, str | None, str | None]] | None
) -> None:
    assert enum_label_additions(wanted, have) == additions


def test_type_differences_name_each_part() -> None:
    domain = UserType(MOOD, "domain", base="integer", checks=(("c", "CHECK ((VALUE > 0))"),))
    assert type_differences(domain, domain) == []
    other = UserType(MOOD, "domain", base="bigint", not_null=True)
    assert type_differences(domain, other) == [
        "domain public.mood: base type is integer at the source, bigint in the target",
        "domain public.mood: NOT NULL is False at the source, True in the target",
        "domain public.mood: checks is CHECK ((VALUE > 0)) at the source, none in the target",
    ]
    composite = UserType(MOOD, "composite", attributes=(TypeAttribute("a", "integer"),))
    assert type_differences(domain, composite) == [
        "public.mood is a domain at the source, a composite in the target"
    ]
    # A range without a multirange name (a source older than 14) matches any.
    ranged = UserType(MOOD, "range", base="integer", multirange="m1")
    assert type_differences(UserType(MOOD, "range", base="integer"), ranged) == []


def test_plan_creates_the_missing_adds_labels_and_refuses_differences() -> None:
    enum = UserType(MOOD, "enum", labels=("a", "b"))
    pair = UserType(QualifiedName("app", "pair"), "composite")
    changes = plan_type_changes([enum, pair], {MOOD: UserType(MOOD, "enum", labels=("b",))})
    assert changes.create == (pair,)
    assert [text(s) for s in changes.labels] == [
        "ALTER TYPE \"public\".\"mood\" ADD VALUE IF NOT EXISTS 'a' BEFORE 'b'"
    ]
    with pytest.raises(UserTypeError) as raised:
        plan_type_changes(
            [enum, pair],
            {
                MOOD: UserType(MOOD, "enum", labels=("b", "a")),
                pair.name: UserType(pair.name, "enum"),
            },
        )
    assert isinstance(raised.value, SchemaMismatchError)
    assert str(raised.value) == (
        "user-defined types differ between source and target (stagecopy changes no existing "
        "type but to add enum labels): enum public.mood has labels ['a', 'b'] at the source, "
        "['b', 'a'] in the target; app.pair is a composite at the source, an enum in the target"
    )
