"""PostgreSQL name rules, staging names and Dagster names (no database)."""

from __future__ import annotations

import re

import dagster as dg
import pytest

from stagecopy_dagster.errors import SpecError
from stagecopy_dagster.identifiers import (
    MAX_IDENTIFIER_BYTES,
    STAGING_PREFIX,
    QualifiedName,
    asset_name_for,
    clip_identifier,
    is_valid_dagster_name,
    parse_column_name,
    parse_qualified_name,
    quote_if_needed,
    romanize,
    staging_created_at,
    staging_table_name,
)

KOREAN_25 = "인포맥스종목마스터코드별일별시세변동이력정보테이블"


def test_korean_fixture_is_25_characters() -> None:
    assert len(KOREAN_25) == 25
    assert len(KOREAN_25.encode()) == 75


# --- folding and quoting ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("orders", QualifiedName("public", "orders")),
        ("Sales.Orders", QualifiedName("sales", "orders")),
        ('"Sales"."Order Items"', QualifiedName("Sales", "Order Items")),
        ('Raw_Data."Order Items"', QualifiedName("raw_data", "Order Items")),
        ("raw_data.인포맥스종목마스터", QualifiedName("raw_data", "인포맥스종목마스터")),
        ('"we""ird.sch"."a;b c"', QualifiedName('we"ird.sch', "a;b c")),
        ("  a . b  ", QualifiedName("a", "b")),
        ("a$b", QualifiedName("public", "a$b")),
        # Only ASCII letters fold in UTF-8 databases (as PostgreSQL's downcase_identifier).
        ("ÄBC.X", QualifiedName("Äbc", "x")),
    ],
)
def test_parse_qualified_name(text: str, expected: QualifiedName) -> None:
    assert parse_qualified_name(text) == expected


def test_default_schema() -> None:
    assert parse_qualified_name("t", default_schema="raw") == QualifiedName("raw", "t")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a.b.c", "expected schema.table, got 3 parts"),
        ('"".x', "a quoted name cannot be empty"),
        ('"unterminated', "unterminated quoted name"),
        ("1abc.x", "unquoted names start with a letter or '_'"),
        ("a-b", "unexpected '-'"),
        ("a.", "expected a name"),
        ("", "expected a name"),
        ("$a", "unquoted names start with a letter or '_'"),
    ],
)
def test_bad_table_names(text: str, problem: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_qualified_name(text)
    assert str(info.value).startswith(f"table name {text!r}: ")
    assert problem in str(info.value)


def test_column_names_fold_like_postgresql() -> None:
    assert parse_column_name("Code") == "code"
    assert parse_column_name('"Code"') == "Code"
    assert parse_column_name("종목코드") == "종목코드"
    assert parse_column_name('"a ""b"" c"') == 'a "b" c'
    with pytest.raises(SpecError, match="expected one name, not a dotted path"):
        parse_column_name("t.code")


@pytest.mark.parametrize(
    ("name", "written"),
    [
        ("orders", "orders"),
        ("Orders", '"Orders"'),
        ("Order Items", '"Order Items"'),
        ('a"b', '"a""b"'),
        ("a.b", '"a.b"'),
        ("종목코드", "종목코드"),
        ("_x1$", "_x1$"),
        ("1x", '"1x"'),
        ("", '""'),
    ],
)
def test_quote_if_needed(name: str, written: str) -> None:
    assert quote_if_needed(name) == written


def test_str_of_a_qualified_name_round_trips() -> None:
    for name in (
        QualifiedName("Sales", "Order Items"),
        QualifiedName('we"ird.sch', "a;b c"),
        QualifiedName("raw_data", "인포맥스종목마스터"),
    ):
        assert parse_qualified_name(str(name)) == name


def test_identifier_is_always_quoted() -> None:
    assert QualifiedName("Sales", 'a"b').identifier.as_string(None) == '"Sales"."a""b"'


# --- the 63-byte limit ------------------------------------------------------------------------


def test_clip_a_25_character_korean_name_to_21_characters() -> None:
    clipped = clip_identifier(KOREAN_25)
    assert clipped == KOREAN_25[:21]
    assert len(clipped.encode()) == MAX_IDENTIFIER_BYTES


def test_clip_never_splits_a_character() -> None:
    name = "a" + "가" * 30  # 1 + 90 bytes: 62 bytes fit at a character boundary
    clipped = clip_identifier(name)
    assert clipped == "a" + "가" * 20
    assert len(clipped.encode()) == 61
    clipped.encode().decode("utf-8")  # valid UTF-8


def test_short_names_are_not_clipped() -> None:
    assert clip_identifier("x" * 63) == "x" * 63
    assert clip_identifier("x" * 64) == "x" * 63


def test_parsing_clips_quoted_and_unquoted_names() -> None:
    assert parse_qualified_name(f"raw_data.{KOREAN_25}") == QualifiedName(
        "raw_data", KOREAN_25[:21]
    )
    assert parse_qualified_name(f'"{KOREAN_25}".x').schema == KOREAN_25[:21]
    assert parse_column_name(KOREAN_25) == KOREAN_25[:21]


# --- staging names ----------------------------------------------------------------------------


def test_staging_names_are_short_ascii_and_unique() -> None:
    names = [staging_table_name() for _ in range(10_000)]
    assert len(set(names)) == len(names)
    for name in names[:100]:
        assert name.isascii()
        assert name.startswith(STAGING_PREFIX)
        assert len(name.encode()) <= MAX_IDENTIFIER_BYTES
        assert re.fullmatch(r"[a-z0-9_]+", name)  # never needs quoting
        assert quote_if_needed(name) == name


def test_staging_created_at_round_trip() -> None:
    assert staging_created_at(staging_table_name(1_700_000_000)) == 1_700_000_000
    assert staging_created_at(staging_table_name(1_700_000_000.9)) == 1_700_000_000
    assert staging_created_at(staging_table_name(0)) == 0
    assert staging_created_at(staging_table_name()) is not None


@pytest.mark.parametrize(
    "name", ["orders", "_stagecopy_", "_stagecopy_123_abc", "_stagecopy_1700000000_XYZ012345678"]
)
def test_staging_created_at_ignores_other_names(name: str) -> None:
    assert staging_created_at(name) is None


# --- Dagster names ----------------------------------------------------------------------------


def assert_valid_dagster_name(name: str) -> None:
    assert is_valid_dagster_name(name)

    @dg.op(name=name)  # Dagster's own check of ^[A-Za-z0-9_]+$
    def _op() -> None: ...


def test_korean_names_are_romanized_with_a_hash() -> None:
    name = asset_name_for(QualifiedName("raw_data", "인포맥스종목마스터"))
    assert name == "raw_data__inpomaekseujongmokmaseuteo_bb87fa"
    assert_valid_dagster_name(name)


def test_romanize() -> None:
    assert romanize("인포맥스종목마스터") == "inpomaekseujongmokmaseuteo"
    assert romanize("주문 A1") == "jumun A1"


def test_other_scripts_are_transliterated_not_dropped() -> None:
    # Before anyascii these were `public__t_9f6da8` and `t__t_680985`: nothing left to read.
    assert asset_name_for(QualifiedName("public", "заказы")) == "public__zakazy_9f6da8"
    assert asset_name_for(QualifiedName("販売", "注文明細")) == "FanMai__ZhuWenMingXi_680985"
    assert asset_name_for(QualifiedName("public", "Ünïcode")).startswith("public__Unicode_")
    # Hangul keeps stagecopy's romanization (existing asset keys do not move).
    assert romanize("일별시세 заказы") == "ilbyeolsise zakazy"


def test_plain_names_keep_their_spelling() -> None:
    assert asset_name_for(QualifiedName("public", "orders")) == "orders"
    assert asset_name_for(QualifiedName("public", "Orders")) == "Orders"
    assert asset_name_for(QualifiedName("sales", "order_items")) == "sales__order_items"
    assert asset_name_for(QualifiedName("Sales", "Orders")) == "Sales__Orders"


def test_mixed_case_with_spaces() -> None:
    name = asset_name_for(QualifiedName("Sales", "Order Items"))
    assert re.fullmatch(r"Sales__Order_Items_[0-9a-f]{6}", name)
    assert_valid_dagster_name(name)


def test_cleaned_names_never_collide_with_plain_ones() -> None:
    pairs = [
        (QualifiedName("public", "Order Items"), QualifiedName("public", "order_items")),
        (QualifiedName("sales", "Order Items"), QualifiedName("sales", "order_items")),
        (QualifiedName("sales", "Order Items"), QualifiedName("sales", "Order_Items")),
        (QualifiedName("sales", "a-b"), QualifiedName("sales", "a_b")),
        (QualifiedName("sales", "a-b"), QualifiedName("sales", "a.b")),
    ]
    for left, right in pairs:
        assert asset_name_for(left) != asset_name_for(right), (left, right)


def test_asset_names_are_stable_and_valid_for_awkward_names() -> None:
    names = [
        QualifiedName('we"ird.sch', "a;b c"),
        QualifiedName("public", "주문"),
        QualifiedName("public", "!!!"),
        QualifiedName("raw_data", KOREAN_25[:21]),
        QualifiedName("Ünïcode", "tâble"),
        QualifiedName("x" * 63, "가" * 21),
    ]
    for table in names:
        name = asset_name_for(table)
        assert name == asset_name_for(QualifiedName(table.schema, table.name))
        assert_valid_dagster_name(name)
    assert len({asset_name_for(t) for t in names}) == len(names)


def test_is_valid_dagster_name() -> None:
    assert is_valid_dagster_name("a_B_1")
    for bad in ("", "a-b", "a b", "종목", "a.b"):
        assert not is_valid_dagster_name(bad)
