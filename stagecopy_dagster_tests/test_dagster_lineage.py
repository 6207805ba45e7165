"""Lineage, documentation and automation from the source tables (issue #11, section 2).

Each source table is an observable external asset (kind `postgres`) upstream of its replica;
PostgreSQL comments become descriptions; the spec sets owners, tags, kinds, code version,
freshness; `automation: on_source_change` materializes only the tables whose source changed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import dagster as dg
import pytest

from stagecopy_dagster import build_definitions
from stagecopy_dagster.comments import READ_COMMENTS_ENV
from stagecopy_dagster.errors import SpecError
from stagecopy_dagster.spec import load_spec
from stagecopy_dagster_tests.pg import PgPair, PgPairFactory

SOURCE = "postgresql://reader@127.0.0.1:1/src"  # nothing listens on port 1
TARGET = "postgresql://writer@127.0.0.1:1/dst"


def node(defs: dg.Definitions, key: str):  # untyped: Dagster's asset node
    return defs.resolve_asset_graph().get(dg.AssetKey.from_user_string(key))


def test_each_source_table_is_an_upstream_postgres_asset(monkeypatch) -> None:
    monkeypatch.setenv(READ_COMMENTS_ENV, "0")
    defs = build_definitions(
        {
            "tables": [
                {"source": "raw_data.일별시세", "primary_key": "id"},
                {
                    "query": "WITH r AS (SELECT * FROM sales.orders) "
                    "SELECT r.*, c.name FROM r JOIN customers c USING (cid)",
                    "target": "mart.orders_named",
                    "primary_key": "id",
                },
            ]
        },
        source_url=SOURCE,
        target_url=TARGET,
    )
    graph = defs.resolve_asset_graph()
    replica = node(defs, "raw_data__ilbyeolsise_7db167")
    (source_key,) = replica.parent_keys
    source = graph.get(source_key)
    assert source_key.to_user_string() == "source/raw_data__ilbyeolsise_7db167"
    assert source.is_observable and not source.is_materializable
    assert source.kinds == {"postgres"}
    assert source.metadata["dagster/table_name"] == "raw_data.일별시세"
    # A query's replica depends on every table the query reads (CTE names are not tables).
    query = node(defs, "mart__orders_named")
    assert {k.to_user_string() for k in query.parent_keys} == {
        "source/sales__orders",
        "source/customers",
    }
    # The main job copies the replicas, never "materializes" a source.
    job = defs.resolve_job_def("stagecopy_all")
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == {
        "raw_data__ilbyeolsise_7db167",
        "mart__orders_named",
    }


def test_owners_tags_kinds_code_version_and_freshness_come_from_the_spec(monkeypatch) -> None:
    monkeypatch.setenv(READ_COMMENTS_ENV, "0")
    defs = build_definitions(
        {
            "defaults": {"owners": ["team:data"], "freshness": {"max_lag": "2h"}},
            "tables": [
                {
                    "source": "public.orders",
                    "owners": ["kim@example.com", "team:data"],
                    "tags": {"tier": "gold", "domain/sales": "orders"},
                    "kinds": ["table"],
                    "code_version": "v2",
                    "freshness": {"max_lag": "2h", "warn_lag": "90m"},
                },
                {"source": "public.items"},
            ],
        },
        source_url=SOURCE,
        target_url=TARGET,
    )
    orders = node(defs, "orders")
    assert orders.owners == ["kim@example.com", "team:data"]
    assert orders.tags["tier"] == "gold" and orders.tags["domain/sales"] == "orders"
    assert orders.kinds == {"postgres", "table"}
    assert orders.code_version == "v2"
    policy: Any = orders.freshness_policy
    assert policy.fail_window.to_timedelta() == timedelta(hours=2)
    assert policy.warn_window.to_timedelta() == timedelta(minutes=90)
    assert len({*load_spec({"tables": [{"source": "a.b", "tags": {"x": "y"}}]}).tables}) == 1
    items = node(defs, "items")
    assert items.owners == ["team:data"]
    items_policy: Any = items.freshness_policy
    assert items_policy.fail_window.to_timedelta() == timedelta(hours=2)
    assert items.automation_condition is None  # automation is opt-in


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"freshness": "2 parsecs"}, "freshness.max_lag: '2 parsecs' is not a duration"),
        (
            {"freshness": {"max_lag": "1h", "warn_lag": "2h"}},
            "warn_lag must be shorter than max_lag",
        ),
        ({"owners": ["kim"]}, "owner 'kim' must be an email or 'team:name'"),
        ({"tags": {"a b": "x"}}, "tag key 'a b'"),
        ({"tags": {"tier": "gold plated"}}, "tag tier: value 'gold plated'"),
        ({"automation": "always"}, "'always' is not one of none, on_source_change"),
        ({"observe_schedule": "every minute"}, "observe_schedule 'every minute' is not a valid"),
    ],
)
def test_bad_dagster_keys_name_the_table(entry: dict, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec({"tables": [{"source": "public.orders", **entry}]})
    assert "tables[0] (public.orders)" in str(caught.value)
    assert message in str(caught.value)


@pytest.mark.integration
def test_comments_become_descriptions_and_travel_to_the_target(pg: PgPair) -> None:
    pg.source(
        'CREATE TABLE "종목" (id int PRIMARY KEY, "종목명" text, price numeric)',
        """COMMENT ON TABLE "종목" IS '상장 종목 마스터 (listed instruments)'""",
        """COMMENT ON COLUMN "종목"."종목명" IS 'Instrument name, Korean'""",
        "COMMENT ON COLUMN \"종목\".id IS 'Exchange code; it''s the key'",
        "INSERT INTO \"종목\" VALUES (1, '삼성전자', 1.5)",
        "CREATE TABLE plain (id int PRIMARY KEY)",
        "COMMENT ON TABLE plain IS 'from the source'",
    )
    spec = {
        "tables": [
            {"source": "public.종목", "name": "instruments"},
            {"source": "public.plain", "description": "The spec's words win."},
        ]
    }
    defs = build_definitions(spec, source_url=pg.source_url, target_url=pg.target_url)
    assert node(defs, "instruments").description == "상장 종목 마스터 (listed instruments)"
    assert node(defs, "plain").description == "The spec's words win."
    (source_key,) = node(defs, "instruments").parent_keys
    assert defs.resolve_asset_graph().get(source_key).description == (
        "상장 종목 마스터 (listed instruments)"
    )

    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("stagecopy_all").execute_in_process(instance=instance)
        assert result.success
        event = instance.get_latest_materialization_event(dg.AssetKey("instruments"))
        assert event is not None and event.asset_materialization is not None
        schema = event.asset_materialization.metadata["dagster/column_schema"].value
        assert isinstance(schema, dg.TableSchema)
        described = {c.name: c.description for c in schema.columns}
    assert described == {
        "id": "Exchange code; it's the key",
        "종목명": "Instrument name, Korean",
        "price": None,
    }
    assert pg.target_rows(
        "SELECT obj_description('\"종목\"'::regclass, 'pg_class'), "
        "col_description('\"종목\"'::regclass, 2)"
    ) == [("상장 종목 마스터 (listed instruments)", "Instrument name, Korean")]


@pytest.mark.integration
def test_an_unreachable_source_leaves_the_spec_descriptions(caplog) -> None:
    defs = build_definitions(
        {"tables": [{"source": "public.orders"}]}, source_url=SOURCE, target_url=TARGET
    )
    assert (node(defs, "orders").description or "").startswith("Replica of public.orders")
    assert "source comments not read" in caplog.text
    assert "127.0.0.1:1" in caplog.text


def _requested(defs: dg.Definitions, instance: dg.DagsterInstance, cursor=None):
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    keys = {r.key.to_user_string() for r in result.results if r.true_subset.size > 0}
    return keys, result.cursor


def _observe(defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
    observer = defs.resolve_implicit_global_asset_job_def()
    graph = defs.resolve_asset_graph()
    sources = [k for k in graph.get_all_asset_keys() if graph.get(k).is_observable]
    result = observer.execute_in_process(instance=instance, asset_selection=sources)
    assert result.success


@pytest.mark.integration
def test_on_source_change_runs_only_the_tables_whose_source_changed(
    pg18: PgPairFactory,
) -> None:
    pg = pg18()
    pg.source(
        "CREATE TABLE orders (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())",
        "INSERT INTO orders SELECT g FROM generate_series(1, 20) g",
        "CREATE TABLE items (id int PRIMARY KEY)",
        "INSERT INTO items SELECT g FROM generate_series(1, 20) g",
    )
    spec = {
        "defaults": {"automation": "on_source_change"},
        "tables": [
            {"source": "public.orders", "incremental_field": "at"},
            {"source": "public.items"},
        ],
    }
    defs = build_definitions(spec, source_url=pg.source_url, target_url=pg.target_url)
    with dg.instance_for_test() as instance:
        assert defs.resolve_job_def("stagecopy_all").execute_in_process(instance=instance).success
        _observe(defs, instance)
        requested, cursor = _requested(defs, instance)
        # The first evaluation requests what it has never handled; then a steady state.
        _observe(defs, instance)
        requested, cursor = _requested(defs, instance, cursor)
        assert not {"orders", "items"} & requested, "nothing changed: no run"

        pg.source("INSERT INTO items VALUES (21)")
        _observe(defs, instance)
        requested, cursor = _requested(defs, instance, cursor)
        assert {"orders", "items"} & requested == {"items"}
