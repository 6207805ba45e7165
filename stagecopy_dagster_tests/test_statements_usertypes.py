"""Exact SQL text of the user-defined types' DDL, without a database.

:mod:`stagecopy_dagster.statements.usertypes`; ``as_string(None)``.
"""

from __future__ import annotations

from stagecopy_dagster.engine.types import TypeAttribute, UserType
from stagecopy_dagster.identifiers import QualifiedName
from stagecopy_dagster.statements import usertypes as ut
from stagecopy_dagster_tests.statementhelpers import text

MOOD = QualifiedName("app", "Mood")


def test_create_enum_keeps_the_labels_in_order_and_quoted() -> None:
    mood = UserType(MOOD, "enum", labels=("sad", "it's ok", "행복"))
    assert text(ut.create_type(mood)) == (
        "CREATE TYPE \"app\".\"Mood\" AS ENUM ('sad', 'it''s ok', '행복')"
    )


def test_create_domain_with_every_part() -> None:
    domain = UserType(
        QualifiedName("app", "code"),
        "domain",
        base="character varying(8)",
        collation='pg_catalog."C"',
        not_null=True,
        default="'x'::character varying",
        checks=(("code_len", "CHECK ((length((VALUE)::text) > 1))"), ("b", "CHECK (true)")),
    )
    assert text(ut.create_type(domain)) == (
        'CREATE DOMAIN "app"."code" AS character varying(8) COLLATE pg_catalog."C" '
        "DEFAULT 'x'::character varying NOT NULL "
        'CONSTRAINT "code_len" CHECK ((length((VALUE)::text) > 1)) CONSTRAINT "b" CHECK (true)'
    )
    assert text(ut.create_type(UserType(MOOD, "domain", base='app."Other"[]'))) == (
        'CREATE DOMAIN "app"."Mood" AS app."Other"[]'
    )


def test_create_composite_with_collations() -> None:
    pair = UserType(
        QualifiedName("app", "pair"),
        "composite",
        attributes=(
            TypeAttribute("x", "app.positive"),
            TypeAttribute("Label", "text", 'pg_catalog."C"'),
        ),
    )
    assert text(ut.create_type(pair)) == (
        'CREATE TYPE "app"."pair" AS ("x" app.positive, "Label" text COLLATE pg_catalog."C")'
    )
    assert text(ut.create_type(UserType(MOOD, "composite"))) == 'CREATE TYPE "app"."Mood" AS ()'


def test_create_range_sets_only_what_the_source_sets() -> None:
    full = UserType(
        QualifiedName("app", "floatrange"),
        "range",
        base="double precision",
        collation=None,
        opclass="app.float_ops",
        subtype_diff="pg_catalog.float8mi",
        multirange="floatmultirange",
    )
    assert text(ut.create_type(full)) == (
        'CREATE TYPE "app"."floatrange" AS RANGE (SUBTYPE = double precision, '
        "SUBTYPE_OPCLASS = app.float_ops, SUBTYPE_DIFF = pg_catalog.float8mi, "
        'MULTIRANGE_TYPE_NAME = "app"."floatmultirange")'
    )
    text_range = UserType(
        QualifiedName("app", "textrange"), "range", base="text", collation='pg_catalog."C"'
    )
    assert text(ut.create_type(text_range)) == (
        'CREATE TYPE "app"."textrange" AS RANGE (SUBTYPE = text, COLLATION = pg_catalog."C")'
    )


def test_add_enum_label_before_after_or_last() -> None:
    assert text(ut.add_enum_label(MOOD, "meh", after="sad")) == (
        "ALTER TYPE \"app\".\"Mood\" ADD VALUE IF NOT EXISTS 'meh' AFTER 'sad'"
    )
    assert text(ut.add_enum_label(MOOD, "awful", before="sad")) == (
        "ALTER TYPE \"app\".\"Mood\" ADD VALUE IF NOT EXISTS 'awful' BEFORE 'sad'"
    )
    assert text(ut.add_enum_label(MOOD, "only")) == (
        'ALTER TYPE "app"."Mood" ADD VALUE IF NOT EXISTS \'only\''
    )
