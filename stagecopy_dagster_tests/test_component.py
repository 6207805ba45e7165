"""`StagecopyComponent`: stagecopy from a `defs.yaml`, loaded the way a `dg` project loads it.

Fast tests load YAML through Dagster's component sandbox (`create_defs_folder_sandbox`) and
look at the definitions; integration tests run the component's `stagecopy_all` job against a
real PostgreSQL pair, once with literal URLs and once through the example project in
`examples/component_project` with `{{ env.* }}` URLs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pydantic
import pytest
from dagster.components.core.component_tree import ComponentTree
from dagster.components.testing import DefsFolderSandbox, create_defs_folder_sandbox

from stagecopy_dagster.build import DEMO_SPEC, SOURCE_URL_ENV, TARGET_URL_ENV, build_definitions
from stagecopy_dagster.component import StagecopyComponent, env_var_name
from stagecopy_dagster.errors import ConnectionConfigError, SpecError
from stagecopy_dagster.local.demo.seed import seed_source
from stagecopy_dagster.resources import PostgresResource
from stagecopy_dagster_tests.pg import PgPair

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "component_project"
EXAMPLE_DEFS_YAML = EXAMPLE / "src" / "stagecopy_example" / "defs" / "stagecopy" / "defs.yaml"
TYPE = "stagecopy_dagster.component.StagecopyComponent"

THREE_TABLES = """
    type: stagecopy_dagster.component.StagecopyComponent
    attributes:
      source_url: "{{ env.STAGECOPY_SOURCE_URL }}"
      target_url: "{{ env('STAGECOPY_TARGET_URL') }}"
      defaults:
        blocking: true
      tables:
        - source: raw_data.인포맥스종목마스터
          name: infomax_master
          where: "시장구분 IN ('KOSPI', 'KOSDAQ')"
          group: market
          schedule: "0 * * * *"
        - source: raw_data.일별시세
          name: daily_prices
          incremental_field: updated_at
          group: market
          schedule: "0 * * * *"
        - source: '"Sales"."Order Items"'
          name: order_items
          mode: sync
          group: sales
          schedule: "*/15 * * * *"
"""


@contextmanager
def load_yaml(defs_yaml: str, **files: str) -> Iterator[tuple[dg.Component, dg.Definitions]]:
    """Load one `defs.yaml` (plus `files` beside it) the way `dg` loads a project's defs."""
    with create_defs_folder_sandbox() as sandbox:
        path = write_component(sandbox, defs_yaml, **files)
        with sandbox.load_component_and_build_defs(defs_path=path) as loaded:
            yield loaded


def write_component(sandbox: DefsFolderSandbox, defs_yaml: str, **files: str) -> Path:
    path = sandbox.defs_folder_path / "stagecopy"
    path.mkdir()
    (path / "defs.yaml").write_text(textwrap.dedent(defs_yaml), encoding="utf-8")
    for name, text in files.items():
        (path / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def spec_error(exc: BaseException) -> SpecError:
    """The SpecError behind Dagster's component-loading error."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, SpecError):
            return seen
        seen = seen.__cause__ or seen.__context__
    raise AssertionError(f"no SpecError behind {exc!r}")


def check_keys(defs: dg.Definitions) -> set[dg.AssetCheckKey]:
    return set(defs.resolve_asset_graph().asset_check_keys)


def asset_names(defs: dg.Definitions) -> set[str]:
    """The replicas' keys (the observable source tables, `source/...`, left out)."""
    graph = defs.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    return {k.to_user_string() for k in keys if graph.get(k).is_materializable}


# --- loading -----------------------------------------------------------------------------------


def test_defs_yaml_builds_assets_checks_jobs_and_schedules() -> None:
    with load_yaml(THREE_TABLES) as (component, defs):
        assert isinstance(component, StagecopyComponent)
        assert asset_names(defs) == {"infomax_master", "daily_prices", "order_items"}
        assert check_keys(defs) == {
            dg.AssetCheckKey(dg.AssetKey(name), "integrity")
            for name in ("infomax_master", "daily_prices", "order_items")
        }
        assert {s.name for s in defs.schedules or []} == {
            "market_schedule",
            "sales_schedule",
            "stagecopy_cleanup_schedule",
        }
        assert defs.resolve_schedule_def("market_schedule").cron_schedule == "0 * * * *"
        assert defs.resolve_schedule_def("sales_schedule").cron_schedule == "*/15 * * * *"
        assert {j.name for j in defs.resolve_all_job_defs()} >= {
            "stagecopy_all",
            "stagecopy_cleanup",
            "market_schedule_job",
            "sales_schedule_job",
        }
        assert defs.resolve_sensor_def("stagecopy_source_changes") is not None
        master = defs.resolve_assets_def("infomax_master")
        assert master.specs_by_key[dg.AssetKey("infomax_master")].group_name == "market"
        (check,) = master.check_specs
        assert check.name == "integrity"
        assert check.blocking  # `defaults: blocking: true` reached the check


def test_named_component_prefixes_its_resources_jobs_schedules_and_sensor() -> None:
    named = THREE_TABLES.replace("    attributes:\n", "    attributes:\n      name: crm\n", 1)
    assert named != THREE_TABLES
    with load_yaml(named) as (_, defs):
        assert set(defs.resources or {}) == {"crm_source", "crm_target"}
        assert {s.name for s in defs.schedules or []} == {
            "crm_market_schedule",
            "crm_sales_schedule",
            "crm_stagecopy_cleanup_schedule",
        }
        assert defs.resolve_job_def("crm_stagecopy_all") is not None
        assert defs.resolve_sensor_def("crm_stagecopy_source_changes") is not None


def test_env_templates_become_env_vars_read_at_run_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SOURCE_URL_ENV, "postgresql://reader:s3cret@src/app")
    monkeypatch.setenv(TARGET_URL_ENV, "postgresql://writer:s3cret@dwh/app")
    with load_yaml(THREE_TABLES) as (component, defs):
        assert isinstance(component, StagecopyComponent)
        assert component.source_url == dg.EnvVar(SOURCE_URL_ENV)
        assert isinstance(component.target_url, dg.EnvVar)
        assert component.target_url.env_var_name == TARGET_URL_ENV
        resources = defs.resources or {}
        for name, env in (("source", SOURCE_URL_ENV), ("target", TARGET_URL_ENV)):
            resource = resources[name]
            assert isinstance(resource, PostgresResource)
            assert isinstance(resource.url, dg.EnvVar) and resource.url.env_var_name == env
        # The secret is nowhere in what Dagster keeps of the definitions.
        assert "s3cret" not in repr(defs.resources)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ env.STAGECOPY_SOURCE_URL }}", "STAGECOPY_SOURCE_URL"),
        ("{{env.X}}", "X"),
        ("  {{ env('DWH_URL') }} ", "DWH_URL"),
        ('{{ env("DWH_URL") }}', "DWH_URL"),
        ("postgresql://u@h/{{ env.DB }}", None),
        ("{{ env.A ~ env.B }}", None),
        ("postgresql://reader@src/app", None),
    ],
)
def test_env_var_name(template: str, expected: str | None) -> None:
    assert env_var_name(template) == expected


def test_other_url_strings_are_rendered_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SC_TEST_DB", "warehouse")
    with load_yaml(
        """
        type: stagecopy_dagster.component.StagecopyComponent
        attributes:
          source_url: postgresql://reader@src/app
          target_url: "postgresql://writer@dwh/{{ env.SC_TEST_DB }}"
          tables:
            - source: public.orders
        """
    ) as (component, defs):
        assert isinstance(component, StagecopyComponent)
        assert component.source_url == "postgresql://reader@src/app"
        assert component.target_url == "postgresql://writer@dwh/warehouse"
        target = (defs.resources or {})["target"]
        assert isinstance(target, PostgresResource)
        assert target.url == "postgresql://writer@dwh/warehouse"


def test_urls_left_out_fall_back_to_the_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SOURCE_URL_ENV, "postgresql://reader@src/app")
    monkeypatch.setenv(TARGET_URL_ENV, "postgresql://writer@dwh/app")
    with load_yaml(
        f"""
        type: {TYPE}
        attributes:
          tables:
            - source: public.orders
        """
    ) as (_, defs):
        source = (defs.resources or {})["source"]
        assert isinstance(source, PostgresResource)
        assert isinstance(source.url, dg.EnvVar) and source.url.env_var_name == SOURCE_URL_ENV


@pytest.fixture
def env_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Connection URLs in the environment (never used: nothing here connects)."""
    monkeypatch.setenv(SOURCE_URL_ENV, "postgresql://reader@src.invalid/app")
    monkeypatch.setenv(TARGET_URL_ENV, "postgresql://writer@dwh.invalid/app")


@pytest.mark.usefixtures("env_urls")
def test_spec_text_is_taken_as_written_not_as_a_template() -> None:
    with load_yaml(
        f"""
        type: {TYPE}
        attributes:
          tables:
            - source: public.grid
              where: "cells = '{{{{1,2}},{{3,4}}}}'::int[] OR note = '{{{{ env.HOME }}}}'"
        """
    ) as (component, _):
        assert isinstance(component, StagecopyComponent)
        (table,) = component.replication_spec().tables
        assert table.where is not None
        assert "'{{1,2},{3,4}}'" in table.where.text
        assert "'{{ env.HOME }}'" in table.where.text


@pytest.mark.usefixtures("env_urls")
def test_spec_file_is_read_relative_to_defs_yaml() -> None:
    with load_yaml(
        f"""
        type: {TYPE}
        attributes:
          spec_file: replication.yaml
        """,
        **{"replication.yaml": DEMO_SPEC.read_text(encoding="utf-8")},
    ) as (_, defs):
        expected = build_definitions(DEMO_SPEC)
        assert asset_names(defs) == asset_names(expected)
        assert check_keys(defs) == check_keys(expected)
        assert {s.name for s in defs.schedules or []} == {s.name for s in expected.schedules or []}


def test_python_construction_matches_build_definitions() -> None:
    component = StagecopyComponent(
        defaults={"mode": "sync"},
        tables=[{"source": "public.orders"}, {"source": "public.items", "mode": "append"}],
        source_url="postgresql://reader@src/app",
        target_url="postgresql://writer@dwh/app",
    )
    spec = component.replication_spec()
    assert [t.mode.value for t in spec.tables] == ["sync", "append"]
    defs = dg.build_defs_for_component(component)
    assert asset_names(defs) == {"orders", "items"}


# --- bad specs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        (
            "tables:\n  - source: public.orders\n    modee: merge",
            "tables[0] (public.orders): unknown key 'modee'",
        ),
        (
            "tables:\n  - source: public.orders\n    mode: upsert",
            "'upsert' is not one of merge, sync, replace, append",
        ),
        (
            "defaults:\n  source: public.orders\ntables:\n  - source: public.x",
            "defaults cannot set",
        ),
        ("tables: []", "`tables` must be a non-empty list"),
        ("defaults:\n  mode: merge", "give `tables:`"),
        (
            'tables:\n  - source: public.orders\n    where: "1 = 1; DROP TABLE x"',
            "tables[0] (public.orders)",
        ),
        (
            "spec_file: replication.yaml\ntables:\n  - source: public.orders",
            "give `spec_file` or `tables`/`defaults`, not both",
        ),
        ("spec_file: missing.yaml", "cannot read spec"),
        (
            "source_url: postgresql://reader@src/app\ntables:\n  - source: public.orders",
            "give both source_url and target_url, or neither",
        ),
    ],
    ids=[
        "unknown-key",
        "bad-mode",
        "per-table-default",
        "no-tables",
        "no-spec",
        "unsafe-where",
        "spec-twice",
        "missing-spec-file",
        "one-url",
    ],
)
def test_bad_spec_fails_with_the_spec_error(attributes: str, message: str) -> None:
    defs_yaml = f"type: {TYPE}\nattributes:\n" + textwrap.indent(attributes, "  ") + "\n"
    # Any exception: Dagster wraps the spec error, which is dug out below.
    with (
        pytest.raises(Exception) as raised,
        load_yaml(defs_yaml, **{"replication.yaml": "tables:\n  - source: public.x\n"}),
    ):
        pass
    error = spec_error(raised.value)
    assert message in str(error)
    if "spec_file" not in attributes:
        # Inline specs are named by the defs.yaml that holds them.
        assert str(error).startswith("src/") and "/defs/stagecopy/defs.yaml: " in str(error)


def test_no_url_anywhere_fails_at_load_naming_the_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in (SOURCE_URL_ENV, TARGET_URL_ENV, "STAGECOPY_EMBEDDED"):
        monkeypatch.delenv(name, raising=False)
    spec = f"type: {TYPE}\nattributes:\n  tables:\n    - source: public.orders\n"
    with pytest.raises(Exception) as raised, load_yaml(spec):
        pass
    seen: BaseException | None = raised.value
    while seen is not None and not isinstance(seen, ConnectionConfigError):
        seen = seen.__cause__ or seen.__context__
    assert seen is not None, repr(raised.value)
    assert "/defs/stagecopy/defs.yaml: " in str(seen)
    assert SOURCE_URL_ENV in str(seen) and TARGET_URL_ENV in str(seen)


def test_unknown_attribute_is_refused_by_the_schema() -> None:
    # Any exception: Dagster wraps the schema's ValidationError, checked below.
    with (
        pytest.raises(Exception) as raised,
        load_yaml(f"type: {TYPE}\nattributes:\n  tabels:\n    - source: public.orders\n"),
    ):
        pass
    cause = raised.value.__cause__
    assert isinstance(cause, pydantic.ValidationError)
    assert "attributes.tabels" in str(cause) and "defs.yaml:3" in str(cause)


# --- the example project -----------------------------------------------------------------------


@contextmanager
def example_tree(monkeypatch: pytest.MonkeyPatch) -> Iterator[ComponentTree]:
    """The example project's component tree, imported from its `src/` like `dg dev` does."""
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    try:
        yield ComponentTree.for_project(EXAMPLE)
    finally:
        for name in [m for m in sys.modules if m.split(".")[0] == "stagecopy_example"]:
            del sys.modules[name]


def test_example_project_defs_yaml_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    assert EXAMPLE_DEFS_YAML.is_file()
    with example_tree(monkeypatch) as tree:
        defs = tree.build_defs()
    assert asset_names(defs) == {"infomax_master", "order_items"}
    assert check_keys(defs) == {
        dg.AssetCheckKey(dg.AssetKey("infomax_master"), "integrity"),
        dg.AssetCheckKey(dg.AssetKey("order_items"), "integrity"),
    }
    assert {s.name for s in defs.schedules or []} == {
        "market_schedule",
        "stagecopy_cleanup_schedule",
    }
    source = (defs.resources or {})["source"]
    assert isinstance(source, PostgresResource)
    assert isinstance(source.url, dg.EnvVar) and source.url.env_var_name == SOURCE_URL_ENV


@pytest.mark.slow
def test_example_project_validates_in_a_fresh_process() -> None:
    """`dagster definitions validate` on the example's code location, as a deployment loads it."""
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("dagster")),
            "definitions",
            "validate",
            "-m",
            "stagecopy_example.definitions",
            "-d",
            "src",
        ],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful" in result.stdout + result.stderr


# --- on a real database ------------------------------------------------------------------------


def run_main_job(defs: dg.Definitions) -> dg.ExecuteInProcessResult:
    with dg.DagsterInstance.ephemeral() as instance:
        return defs.resolve_job_def("stagecopy_all").execute_in_process(instance=instance)


def assert_checks_passed(result: dg.ExecuteInProcessResult, names: set[str]) -> None:
    evaluations = result.get_asset_check_evaluations()
    assert {e.asset_key.to_user_string() for e in evaluations} == names
    assert all(e.check_name == "integrity" and e.passed for e in evaluations), [
        e.description for e in evaluations
    ]


def test_component_materializes_on_a_real_database(any_pg: PgPair) -> None:
    any_pg.source(
        "CREATE TABLE orders (id int PRIMARY KEY, region text NOT NULL, amount numeric(10,2))",
        "INSERT INTO orders SELECT g, CASE WHEN g % 3 = 0 THEN 'US' ELSE 'KR' END, g * 1.5 "
        "FROM generate_series(1, 300) g",
    )
    with load_yaml(
        f"""
        type: {TYPE}
        attributes:
          source_url: "{any_pg.source_url}"
          target_url: "{any_pg.target_url}"
          tables:
            - source: public.orders
              where: "region = 'KR'"
              mode: sync
        """
    ) as (_, defs):
        result = run_main_job(defs)
    assert result.success
    assert any_pg.target_rows("SELECT count(*), count(*) FILTER (WHERE region = 'KR') FROM orders")[
        0
    ] == (200, 200)
    assert_checks_passed(result, {"orders"})
    (materialization,) = result.get_asset_materialization_events()
    metadata = materialization.materialization.metadata if materialization.materialization else {}
    assert metadata["dagster/row_count"].value == 200


def test_example_project_materializes_the_demo_tables(
    any_pg: PgPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_source(any_pg.source_admin_url, large_rows=3_000)
    monkeypatch.setenv(SOURCE_URL_ENV, any_pg.source_url)
    monkeypatch.setenv(TARGET_URL_ENV, any_pg.target_url)
    with example_tree(monkeypatch) as tree:
        defs = tree.build_defs()
    result = run_main_job(defs)
    assert result.success
    assert_checks_passed(result, {"infomax_master", "order_items"})
    in_scope = (
        "SELECT count(*) FROM raw_data.인포맥스종목마스터 WHERE 시장구분 IN ('KOSPI', 'KOSDAQ')"
    )
    (source_master,) = any_pg.source_rows(in_scope)[0]
    assert any_pg.target_rows("SELECT count(*) FROM raw_data.인포맥스종목마스터")[0] == (
        source_master,
    )
    assert (
        any_pg.target_rows('SELECT count(*) FROM "Sales"."Order Items"')[0]
        == (any_pg.source_rows('SELECT count(*) FROM "Sales"."Order Items"')[0])
    )
