"""stagecopy: replicate PostgreSQL tables as Dagster assets (COPY -> UNLOGGED staging -> MERGE)."""

from stagecopy_dagster.assets import build_table_asset
from stagecopy_dagster.build import build_definitions
from stagecopy_dagster.component import StagecopyComponent
from stagecopy_dagster.copier import CopyOptions, CopyResult, SourceSnapshot, TableCopier
from stagecopy_dagster.errors import StagecopyError
from stagecopy_dagster.integrity import IntegrityReport
from stagecopy_dagster.resources import PostgresResource
from stagecopy_dagster.spec import Mode, ReplicationSpec, TableSpec, load_spec
from stagecopy_dagster.translator import StagecopyTranslator

__all__ = [
    "CopyOptions",
    "CopyResult",
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
]
