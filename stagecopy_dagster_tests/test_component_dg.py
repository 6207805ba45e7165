"""The component in `dg`, the way a user meets it (dagster-dg-cli 1.13.27, in a subprocess).

`dg list components` shows it (the `dagster_dg_cli.registry_modules` entry point),
`dg scaffold defs stagecopy_dagster.StagecopyComponent NAME` writes a defs.yaml that loads
beside the example's own component, and `dg check defs` passes on the example project.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "component_project"
DG = str(Path(sys.executable).with_name("dg"))

pytestmark = pytest.mark.slow


def dg(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "STAGECOPY_"))}
    env["NO_COLOR"] = "1"
    return subprocess.run(
        [DG, *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    copy = tmp_path / "component_project"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return copy


def test_dg_lists_scaffolds_and_checks_the_component(project: Path) -> None:
    listed = dg(project, "list", "components", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "stagecopy_dagster.StagecopyComponent" in listed.stdout

    scaffolded = dg(project, "scaffold", "defs", "stagecopy_dagster.StagecopyComponent", "crm")
    assert scaffolded.returncode == 0, scaffolded.stdout + scaffolded.stderr
    written = project / "src" / "stagecopy_example" / "defs" / "crm" / "defs.yaml"
    defs_yaml = yaml.safe_load(written.read_text(encoding="utf-8"))
    assert defs_yaml["type"] == "stagecopy_dagster.StagecopyComponent"
    assert defs_yaml["attributes"]["name"] == "crm"  # merges beside the example's component
    assert defs_yaml["attributes"]["source_url"] == "{{ env.STAGECOPY_SOURCE_URL }}"

    checked = dg(project, "check", "defs")
    output = checked.stdout + checked.stderr
    assert checked.returncode == 0, output
    assert "All definitions loaded successfully" in output


def test_dg_check_defs_fails_on_a_broken_spec_naming_it(project: Path) -> None:
    broken = project / "src" / "stagecopy_example" / "defs" / "broken"
    broken.mkdir()
    (broken / "defs.yaml").write_text(
        "type: stagecopy_dagster.StagecopyComponent\n"
        "attributes:\n"
        "  name: broken\n"
        "  source_url: '{{ env.STAGECOPY_SOURCE_URL }}'\n"
        "  target_url: '{{ env.STAGECOPY_TARGET_URL }}'\n"
        "  tables:\n"
        "    - source: public.orders\n"
        "      mode: upsert\n",
        encoding="utf-8",
    )
    checked = dg(project, "check", "defs")
    output = checked.stdout + checked.stderr
    assert checked.returncode != 0
    assert "'upsert' is not one of merge, sync, replace, append" in output
