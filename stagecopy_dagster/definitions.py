"""The code location `workspace.yaml` loads: the spec at `$STAGECOPY_SPEC` (or the demo)."""

from stagecopy_dagster.build import build_definitions, spec_path

defs = build_definitions(spec_path())
