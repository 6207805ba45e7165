"""The `stagecopy` console script, run as a user runs it: a subprocess, exit codes, output.

Exit codes: 0 success; 1 a copy or an integrity check failed; 2 a bad spec or bad usage.
Each test gets a fresh source/target pair (`any_pg`) and writes its spec into `tmp_path`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

from stagecopy_dagster.build import DEMO_SPEC
from stagecopy_dagster.local import LocalCluster
from stagecopy_dagster.spec import load_spec
from stagecopy_dagster_tests.pg import PgPair

STAGECOPY = Path(sys.executable).with_name("stagecopy")
REPO = Path(__file__).resolve().parents[1]

SPEC = """
    tables:
      # KR orders only: the `where` scope applies to the copy and to the check.
      - source: public.orders
        name: kr_orders
        where: "region = 'KR'"
        mode: sync
      - source: public.customers
"""

SOURCE_SETUP = (
    "CREATE TABLE orders (id int PRIMARY KEY, region text NOT NULL, amount numeric(10,2))",
    "INSERT INTO orders SELECT g, CASE WHEN g % 4 = 0 THEN 'US' ELSE 'KR' END, g * 2.5 "
    "FROM generate_series(1, 400) g",
    "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL)",
    "INSERT INTO customers SELECT g, '고객 ' || g FROM generate_series(1, 50) g",
)
KR_ORDERS = 300


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without anything stagecopy or Dagster would pick up."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STAGECOPY_", "DAGSTER_")) and not k.startswith("PG")
    }
    env.update(extra)
    return env


def stagecopy(
    *args: str, env: Mapping[str, str], cwd: Path, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(STAGECOPY), *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def write_spec(tmp_path: Path, text: str = SPEC) -> Path:
    path = tmp_path / "replication.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def pg_env(pg: PgPair, tmp_path: Path, **extra: str) -> dict[str, str]:
    return clean_env(
        STAGECOPY_SOURCE_URL=pg.source_url,
        STAGECOPY_TARGET_URL=pg.target_url,
        # Never used (both URLs are set); keeps an accidental embedded start out of the repo.
        STAGECOPY_HOME=str(tmp_path / "home"),
        **extra,
    )


def target_table_exists(pg: PgPair, name: str) -> bool:
    return pg.target_rows("SELECT to_regclass(%s) IS NOT NULL", (name,))[0][0]


def count(pg: PgPair, side: str, query: str) -> int:
    rows = pg.source_rows(query) if side == "source" else pg.target_rows(query)
    return int(rows[0][0])


@pytest.fixture
def seeded(any_pg: PgPair) -> PgPair:
    any_pg.source(*SOURCE_SETUP)
    return any_pg


def test_run_copies_and_check_gates_on_the_scoped_integrity(seeded: PgPair, tmp_path: Path) -> None:
    # The spec comes from $STAGECOPY_SPEC here; the other tests pass --spec.
    env = pg_env(seeded, tmp_path, STAGECOPY_SPEC=str(write_spec(tmp_path)))

    run = stagecopy("run", env=env, cwd=tmp_path)
    assert run.returncode == 0, output(run)
    assert "stagecopy: 2 tables: ok" in run.stdout
    assert count(seeded, "target", "SELECT count(*) FROM orders") == KR_ORDERS
    assert count(seeded, "target", "SELECT count(*) FROM orders WHERE region <> 'KR'") == 0
    assert count(seeded, "target", "SELECT count(*) FROM customers") == 50

    check = stagecopy("check", env=env, cwd=tmp_path)
    assert check.returncode == 0, output(check)
    assert "kr_orders: integrity passed" in check.stdout
    assert "customers: integrity passed" in check.stdout
    assert "stagecopy: 2 checks: ok" in check.stdout

    # A target row outside the `where` scope is not the check's business.
    seeded.target("INSERT INTO orders VALUES (9001, 'US', 1.00)")
    check = stagecopy("check", env=env, cwd=tmp_path)
    assert check.returncode == 0, output(check)

    # A changed row in scope is.
    seeded.target("UPDATE orders SET amount = amount + 1 WHERE id = 1")
    check = stagecopy("check", env=env, cwd=tmp_path)
    assert check.returncode == 1, output(check)
    failing = [line for line in check.stdout.splitlines() if "FAILED" in line]
    assert any(
        line.startswith("kr_orders: integrity FAILED")
        and "public.orders" in line
        and "changed 1" in line
        for line in failing
    ), output(check)
    assert "customers: integrity passed" in check.stdout
    assert "stagecopy: 2 checks: FAILED" in check.stdout


@pytest.mark.parametrize(
    ("selector", "copied", "not_copied"),
    [("kr_orders", "orders", "customers"), ("public.customers", "customers", "orders")],
    ids=["asset-name", "table-name"],
)
def test_select_takes_an_asset_name_or_a_table_name(
    seeded: PgPair, tmp_path: Path, selector: str, copied: str, not_copied: str
) -> None:
    env = pg_env(seeded, tmp_path)
    spec = str(write_spec(tmp_path))

    run = stagecopy("run", "--spec", spec, "--select", selector, env=env, cwd=tmp_path)
    assert run.returncode == 0, output(run)
    assert "stagecopy: 1 tables: ok" in run.stdout
    # `run` checks what it copied: one table copied, one check run.
    assert run.stdout.count("integrity passed") == 1
    assert target_table_exists(seeded, copied)
    assert not target_table_exists(seeded, not_copied)


def test_select_of_an_unknown_table_is_a_usage_error(tmp_path: Path) -> None:
    env = clean_env(STAGECOPY_HOME=str(tmp_path / "home"))
    spec = str(write_spec(tmp_path))
    result = stagecopy("check", "--spec", spec, "--select", "nosuch", env=env, cwd=tmp_path)
    assert result.returncode == 2, output(result)
    assert "no table matches 'nosuch'" in result.stderr
    assert not (tmp_path / "home").exists()  # failed before touching any database


def test_plan_prints_the_sql_and_writes_nothing(seeded: PgPair, tmp_path: Path) -> None:
    # Targets that exist and hold rows: the plan is the staged COPY -> MERGE path.
    seeded.target(
        "CREATE TABLE orders (id int PRIMARY KEY, region text NOT NULL, amount numeric(10,2))",
        "INSERT INTO orders VALUES (1, 'KR', 0), (2, 'KR', 0)",
        "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL)",
        "INSERT INTO customers VALUES (1, 'old')",
    )
    result = stagecopy(
        "plan", "--spec", str(write_spec(tmp_path)), env=pg_env(seeded, tmp_path), cwd=tmp_path
    )
    assert result.returncode == 0, output(result)
    text = result.stdout
    assert "-- kr_orders: public.orders -> public.orders" in text
    assert "-- mode sync; key (source primary key); scope region = 'KR'" in text
    assert "-- customers: public.customers -> public.customers" in text
    assert "COPY" in text and "MERGE" in text
    assert "WHERE (region = 'KR')" in text
    # Nothing was written: the same rows, and no staging table left behind.
    assert seeded.target_rows("SELECT id, amount FROM orders ORDER BY id") == [(1, 0), (2, 0)]
    assert seeded.target_rows("SELECT id, name FROM customers") == [(1, "old")]
    assert (
        count(seeded, "target", "SELECT count(*) FROM pg_tables WHERE tablename LIKE '%stagecopy%'")
        == 0
    )


def test_plan_for_a_new_target_table_creates_nothing(seeded: PgPair, tmp_path: Path) -> None:
    result = stagecopy(
        "plan", "--spec", str(write_spec(tmp_path)), env=pg_env(seeded, tmp_path), cwd=tmp_path
    )
    assert result.returncode == 0, output(result)
    assert 'CREATE TABLE "public"."orders"' in result.stdout and "COPY" in result.stdout
    assert not target_table_exists(seeded, "orders")
    assert not target_table_exists(seeded, "customers")


@pytest.mark.parametrize(
    ("spec_text", "reason"),
    [
        ("tables:\n  - source: public.orders\n    modee: merge\n", "unknown key 'modee'"),
        (
            "defaults:\n  mode: upsert\ntables:\n  - source: public.orders\n",
            "'upsert' is not one of",
        ),
        (None, "cannot read spec"),
    ],
    ids=["unknown-key", "bad-mode", "missing-file"],
)
def test_bad_spec_exits_2_with_the_reason(
    tmp_path: Path, spec_text: str | None, reason: str
) -> None:
    spec = tmp_path / "replication.yaml"
    if spec_text is not None:
        spec.write_text(spec_text, encoding="utf-8")
    env = clean_env(STAGECOPY_HOME=str(tmp_path / "home"))
    result = stagecopy("run", "--spec", str(spec), env=env, cwd=tmp_path)
    assert result.returncode == 2, output(result)
    assert "stagecopy: bad spec:" in result.stderr and reason in result.stderr
    assert str(spec) in result.stderr
    assert not (tmp_path / "home").exists()  # failed before touching any database


@pytest.mark.parametrize("command", ["run", "check", "plan", "cleanup"])
@pytest.mark.parametrize("how", ["--spec", "STAGECOPY_SPEC"])
def test_a_user_spec_without_urls_exits_2_naming_the_variables(
    tmp_path: Path, command: str, how: str
) -> None:
    spec = str(write_spec(tmp_path))
    env = clean_env(STAGECOPY_HOME=str(tmp_path / "home"), STAGECOPY_SPEC=spec)
    # `cleanup` has no --spec: it goes by $STAGECOPY_SPEC.
    by_env = how == "STAGECOPY_SPEC" or command == "cleanup"
    args = [command] if by_env else [command, "--spec", spec]
    result = stagecopy(*args, env=env, cwd=tmp_path)
    assert result.returncode == 2, output(result)
    (line,) = result.stderr.strip().splitlines()  # one line, no traceback
    assert "STAGECOPY_SOURCE_URL" in line and "STAGECOPY_TARGET_URL" in line, line
    assert not (tmp_path / "home").exists()  # no embedded cluster was started


@pytest.mark.parametrize("argv", [["frobnicate"], [], ["run", "--no-such-flag"]])
def test_bad_usage_exits_2(tmp_path: Path, argv: list[str]) -> None:
    result = stagecopy(*argv, env=clean_env(), cwd=tmp_path)
    assert result.returncode == 2, output(result)
    assert "usage: stagecopy" in result.stderr


def test_a_failing_copy_exits_1_and_names_the_table(seeded: PgPair, tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        """
        tables:
          - source: public.no_such_table
          - source: public.customers
        """,
    )
    result = stagecopy("run", "--spec", str(spec), env=pg_env(seeded, tmp_path), cwd=tmp_path)
    assert result.returncode == 1, output(result)
    assert "no_such_table" in result.stderr
    assert "stagecopy: 2 tables: FAILED" in result.stdout
    # One broken table does not stop the others.
    assert count(seeded, "target", "SELECT count(*) FROM customers") == 50
    assert "customers: integrity passed" in result.stdout


@pytest.mark.slow
def test_demo_without_ui_sets_up_and_runs_everything(cluster_tmp_path: Path) -> None:
    home = cluster_tmp_path / "stagecopy"
    env = clean_env(STAGECOPY_HOME=str(home))
    try:
        # From the repository, as `./dev demo --no-ui` runs it (its dagster.yaml is used).
        result = stagecopy("demo", "--no-ui", env=env, cwd=REPO, timeout=600)
        assert result.returncode == 0, output(result)
        tables = load_spec(DEMO_SPEC).tables
        assert f"stagecopy: {len(tables)} tables: ok" in result.stdout
        for table in tables:
            assert f"{table.asset_name}: integrity passed: {table.label} " in result.stdout
        dagster_yaml = home / "dagster_home" / "dagster.yaml"
        assert dagster_yaml.read_text() == (REPO / "dagster.yaml").read_text()
        assert (home / "dagster_home" / ".nux" / "nux.yaml").is_file()
    finally:
        LocalCluster(home / "pg").stop()


PREFIXING_TRANSLATOR = """
from stagecopy_dagster import StagecopyTranslator


class Prefixed(StagecopyTranslator):
    def get_asset_spec(self, table):
        spec = super().get_asset_spec(table)
        return spec.replace_attributes(key=spec.key.with_prefix("replica"))
"""


def test_select_follows_the_projects_translator(seeded: PgPair, tmp_path: Path) -> None:
    (tmp_path / "my_translators.py").write_text(PREFIXING_TRANSLATOR, encoding="utf-8")
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    env = pg_env(seeded, tmp_path, PYTHONPATH=path)
    spec = str(write_spec(tmp_path))

    run = stagecopy(
        "run",
        "--spec",
        spec,
        "--translator",
        "my_translators:Prefixed",
        "--select",
        "replica/kr_orders",
        env=env,
        cwd=tmp_path,
    )
    assert run.returncode == 0, output(run)
    assert "replica/kr_orders" in run.stdout
    assert target_table_exists(seeded, "orders")
    assert not target_table_exists(seeded, "customers")

    # The same through the environment; a table name still selects too.
    env["STAGECOPY_TRANSLATOR"] = "my_translators:Prefixed"
    check = stagecopy("check", "--spec", spec, "--select", "public.orders", env=env, cwd=tmp_path)
    assert check.returncode == 0, output(check)
    assert "replica/kr_orders" in check.stdout

    bad = stagecopy(
        "run", "--spec", spec, "--translator", "my_translators:Nope", env=env, cwd=tmp_path
    )
    assert bad.returncode == 2, output(bad)
    assert "translator 'my_translators:Nope' cannot be loaded" in bad.stderr
