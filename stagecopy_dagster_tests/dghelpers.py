"""Helpers for tests that run stagecopy's Dagster definitions in process."""

from __future__ import annotations

from typing import Any

import dagster as dg


def assets_of(defs: dg.Definitions) -> list[dg.AssetsDefinition]:
    """The spec's assets (stagecopy makes only `AssetsDefinition`s)."""
    assets = list(defs.assets or [])
    assert all(isinstance(a, dg.AssetsDefinition) for a in assets)
    return [a for a in assets if isinstance(a, dg.AssetsDefinition)]


def materialize(defs: dg.Definitions, **kwargs: Any) -> dg.ExecuteInProcessResult:
    """`dg.materialize` of every asset of `defs` with its resources."""
    return dg.materialize(assets_of(defs), resources=defs.resources, **kwargs)
