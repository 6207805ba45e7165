"""stagecopy: replicate PostgreSQL tables as Dagster assets (COPY -> UNLOGGED staging -> MERGE).

The public API is imported lazily, so `import stagecopy_dagster.copier` (the copy engine
alone, as the benchmark's copier process runs it) does not load Dagster.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stagecopy_dagster.assets import build_table_asset
    from stagecopy_dagster.build import build_definitions
    from stagecopy_dagster.component import StagecopyComponent
    from stagecopy_dagster.connection import Endpoint
    from stagecopy_dagster.copier import CopyOptions, CopyResult, SourceSnapshot, TableCopier
    from stagecopy_dagster.errors import StagecopyError
    from stagecopy_dagster.integrity import IntegrityReport
    from stagecopy_dagster.resources import PostgresResource
    from stagecopy_dagster.runner import replicate, verify
    from stagecopy_dagster.spec import Mode, ReplicationSpec, TableSpec, load_spec
    from stagecopy_dagster.translator import StagecopyTranslator

_EXPORTS = {
    "CopyOptions": "copier",
    "CopyResult": "copier",
    "Endpoint": "connection",
    "IntegrityReport": "integrity",
    "Mode": "spec",
    "PostgresResource": "resources",
    "ReplicationSpec": "spec",
    "SourceSnapshot": "copier",
    "StagecopyComponent": "component",
    "StagecopyError": "errors",
    "StagecopyTranslator": "translator",
    "TableCopier": "copier",
    "TableSpec": "spec",
    "build_definitions": "build",
    "build_table_asset": "assets",
    "replicate": "runner",
    "verify": "runner",
    "load_spec": "spec",
}

__all__ = [
    "CopyOptions",
    "CopyResult",
    "Endpoint",
    "IntegrityReport",
    "Mode",
    "PostgresResource",
    "ReplicationSpec",
    "SourceSnapshot",
    "StagecopyComponent",
    "StagecopyError",
    "StagecopyTranslator",
    "TableCopier",
    "TableSpec",
    "build_definitions",
    "build_table_asset",
    "load_spec",
    "replicate",
    "verify",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'stagecopy_dagster' has no attribute {name!r}")
    return getattr(import_module(f"stagecopy_dagster.{module}"), name)


def __dir__() -> list[str]:
    # `dg list components` finds components with dir(): list the lazy names too.
    return sorted({*globals(), *__all__})
