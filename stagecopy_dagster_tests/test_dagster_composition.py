"""stagecopy in a real project: a custom translator's keys everywhere, other assets beside it.

The translator's asset key is the only key: the main job, the schedules and the source-change
sensor ask it for each table (a translator that prefixes keys used to break all three), and
`stagecopy_all` runs exactly the spec's assets, never an unrelated asset merged beside them.
"""

from __future__ import annotations

import dagster as dg
import pytest

from stagecopy_dagster import PostgresResource, StagecopyTranslator, build_definitions
from stagecopy_dagster.errors import SpecError
from stagecopy_dagster.spec import TableSpec, load_spec
from stagecopy_dagster_tests.pg import PgPair, PgPairFactory

FAKE_SOURCE_URL = "postgresql://reader@127.0.0.1:1/src"
FAKE_TARGET_URL = "postgresql://writer@127.0.0.1:1/dst"


class Prefixed(StagecopyTranslator):
    """The translator docstring's own example: every key under `replica/`."""

    def get_asset_spec(self, table: TableSpec) -> dg.AssetSpec:
        spec = super().get_asset_spec(table)
        return spec.replace_attributes(key=spec.key.with_prefix("replica"))


SPEC = {
    "defaults": {"group": "market", "schedule": "0 * * * *"},
    "tables": [{"source": "public.quotes"}, {"source": "public.trades", "schedule": None}],
}
QUOTES = dg.AssetKey(["replica", "quotes"])
TRADES = dg.AssetKey(["replica", "trades"])


def prefixed_defs() -> dg.Definitions:
    return build_definitions(
        SPEC, source_url=FAKE_SOURCE_URL, target_url=FAKE_TARGET_URL, translator=Prefixed()
    )


def test_a_prefixing_translator_keys_the_assets_checks_job_and_schedule() -> None:
    defs = prefixed_defs()
    everything = defs.resolve_job_def("stagecopy_all")
    assert everything.asset_layer.executable_asset_keys == {QUOTES, TRADES}
    assert {k.asset_key for k in everything.asset_layer.asset_graph.asset_check_keys} == {
        QUOTES,
        TRADES,
    }
    schedule = defs.resolve_schedule_def("market_schedule")
    hourly = defs.resolve_job_def(schedule.job_name)
    assert hourly.asset_layer.executable_asset_keys == {QUOTES}


def test_a_prefixing_translator_keys_the_sensor_selection() -> None:
    defs = prefixed_defs()
    sensor = defs.resolve_sensor_def("stagecopy_source_changes")
    assert sensor.asset_selection is not None
    assert sensor.asset_selection.resolve(defs.resolve_asset_graph()) == {QUOTES, TRADES}


@pytest.mark.integration
def test_the_sensor_requests_the_translated_keys(pg18: PgPairFactory) -> None:
    pg: PgPair = pg18()
    pg.source(
        "CREATE TABLE quotes (id int PRIMARY KEY, at timestamptz NOT NULL)",
        "INSERT INTO quotes VALUES (1, '2024-01-01')",
    )
    defs = build_definitions(
        {"tables": [{"source": "public.quotes", "incremental_field": "at"}]},
        source_url=pg.source_url,
        target_url=pg.target_url,
        translator=Prefixed(),
    )
    sensor = defs.resolve_sensor_def("stagecopy_source_changes")
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            resources={"source": PostgresResource(url=pg.source_url)},
            instance=instance,
            definitions=defs,
        )
        data = sensor.evaluate_tick(context)
    (request,) = data.run_requests
    assert list(request.asset_selection or []) == [dg.AssetKey(["replica", "quotes"])]


def test_stagecopy_all_runs_only_the_specs_assets_beside_an_unrelated_one() -> None:
    @dg.asset(group_name="analytics")
    def revenue_model() -> None:
        """A dbt-like model that happens to live in the same project."""

    merged = dg.Definitions.merge(
        build_definitions(SPEC, source_url=FAKE_SOURCE_URL, target_url=FAKE_TARGET_URL),
        dg.Definitions(assets=[revenue_model]),
    )
    everything = merged.resolve_job_def("stagecopy_all")
    assert everything.asset_layer.executable_asset_keys == {
        dg.AssetKey("quotes"),
        dg.AssetKey("trades"),
    }


@pytest.mark.parametrize(
    "selector", ['"선택"."Mixed Case"', '선택."Mixed Case"', "mixed_case_copy", '"Mixed Case"']
)
def test_select_finds_a_table_by_its_name_as_the_spec_writes_it(selector: str) -> None:
    spec = load_spec(
        {
            "tables": [
                {"source": "public.other"},
                {"source": '"선택"."Mixed Case"', "name": "mixed_case_copy"},
            ]
        }
    )
    assert spec.table(selector).asset_name == "mixed_case_copy"


def test_two_named_replications_merge_with_distinct_resources_jobs_and_sensors() -> None:
    crm = build_definitions(
        {"tables": [{"source": "crm.customers", "schedule": "0 * * * *"}]},
        source_url=FAKE_SOURCE_URL,
        target_url=FAKE_TARGET_URL,
        name="crm",
    )
    shop = build_definitions(
        {"tables": [{"source": "shop.orders", "schedule": "0 * * * *"}]},
        source_url=FAKE_SOURCE_URL,
        target_url=FAKE_TARGET_URL,
        name="shop",
    )
    merged = dg.Definitions.merge(crm, shop)
    assert set(merged.resources or {}) == {"crm_source", "crm_target", "shop_source", "shop_target"}
    assert {s.name for s in merged.schedules or []} == {
        "crm_crm_schedule",
        "crm_stagecopy_cleanup_schedule",
        "shop_shop_schedule",
        "shop_stagecopy_cleanup_schedule",
    }
    assert {s.name for s in merged.sensors or []} == {
        "crm_stagecopy_source_changes",
        "shop_stagecopy_source_changes",
    }
    assert merged.resolve_job_def("crm_stagecopy_all").asset_layer.executable_asset_keys == {
        dg.AssetKey("crm__customers")
    }
    assert merged.resolve_job_def("shop_stagecopy_all").asset_layer.executable_asset_keys == {
        dg.AssetKey("shop__orders")
    }
    assert merged.resolve_sensor_def("crm_stagecopy_source_changes").required_resource_keys == {
        "crm_source"
    }


def test_a_replication_name_must_be_a_dagster_name() -> None:
    with pytest.raises(SpecError, match="replication name 'c-r-m'"):
        build_definitions(
            {"tables": [{"source": "crm.customers"}]},
            source_url=FAKE_SOURCE_URL,
            target_url=FAKE_TARGET_URL,
            name="c-r-m",
        )


@pytest.mark.integration
def test_two_named_replications_and_an_unrelated_asset_run_in_one_project(
    pg18: PgPairFactory,
) -> None:
    pg: PgPair = pg18()
    pg.source(
        "CREATE TABLE customers (id int PRIMARY KEY, name text)",
        "INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 50) g",
        "CREATE TABLE orders (id int PRIMARY KEY, qty int)",
        "INSERT INTO orders SELECT g, g FROM generate_series(1, 70) g",
    )
    ran: list[str] = []

    @dg.asset
    def revenue_model() -> None:
        ran.append("revenue_model")

    urls = {"source_url": pg.source_url, "target_url": pg.target_url}
    merged = dg.Definitions.merge(
        build_definitions({"tables": [{"source": "public.customers"}]}, name="crm", **urls),
        build_definitions({"tables": [{"source": "public.orders"}]}, name="shop", **urls),
        dg.Definitions(assets=[revenue_model]),
    )
    with dg.instance_for_test() as instance:
        for job in ("crm_stagecopy_all", "shop_stagecopy_all"):
            result = merged.resolve_job_def(job).execute_in_process(instance=instance)
            assert result.success
            (evaluation,) = result.get_asset_check_evaluations()
            assert evaluation.passed
    assert ran == []  # neither main job ran the unrelated asset
    assert pg.target_rows("SELECT count(*) FROM customers") == [(50,)]
    assert pg.target_rows("SELECT count(*) FROM orders") == [(70,)]
