"""Which tables a command line means: `--select` names and the project's own translator.

`stagecopy run --select NAME` accepts what a user sees: the asset key the project's translator
gives (`replica/orders`), the asset name, the target or source table as the spec writes it
(`'"선택"."Mixed Case"'`). With `--translator pkg.module:Class` (or `$STAGECOPY_TRANSLATOR`),
the CLI builds the definitions with that translator, so its runs carry the project's keys.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence

import dagster as dg

from stagecopy_dagster.errors import SpecError
from stagecopy_dagster.spec import ReplicationSpec, TableSpec
from stagecopy_dagster.translator import StagecopyTranslator

TRANSLATOR_ENV = "STAGECOPY_TRANSLATOR"
"""`pkg.module:Class`: the translator the CLI builds its definitions with."""


def load_translator(path: str | None = None) -> StagecopyTranslator:
    """The translator named by `path` (or `$STAGECOPY_TRANSLATOR`), else the default one.

    Raises:
        SpecError: The name is not `module:Class`, cannot be imported, or is not a
            `StagecopyTranslator` (subclass or instance).
    """
    path = path or os.environ.get(TRANSLATOR_ENV) or ""
    if not path:
        return StagecopyTranslator()
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise SpecError(f"translator {path!r}: write it as 'package.module:ClassName'")
    try:
        found = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SpecError(f"translator {path!r} cannot be loaded: {exc}") from None
    translator = found() if isinstance(found, type) else found
    if not isinstance(translator, StagecopyTranslator):
        raise SpecError(f"translator {path!r} is not a StagecopyTranslator")
    return translator


def select_tables(
    spec: ReplicationSpec,
    selectors: Sequence[str] | None,
    key_of: Callable[[TableSpec], dg.AssetKey],
) -> tuple[TableSpec, ...]:
    """The tables `selectors` name (all when none): by asset key first, then by table name.

    Raises:
        SpecError: A selector matches no table (the message names it).
    """
    if not selectors:
        return spec.tables
    by_key = {key_of(t).to_user_string(): t for t in spec.tables}
    chosen = [by_key.get(s) or spec.table(s) for s in selectors]
    return tuple(dict.fromkeys(chosen))
