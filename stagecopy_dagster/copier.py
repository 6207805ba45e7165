"""Copy one table: the public face of :mod:`stagecopy_dagster.engine`.

:class:`TableCopier` runs source COPY stream -> UNLOGGED staging -> MERGE in one target
transaction, inside a :class:`SourceSnapshot`; most callers want
:func:`stagecopy_dagster.runner.replicate`, which opens both sessions, retries transient
failures and verifies the copy in its snapshot.
"""

from stagecopy_dagster.engine.copier import TableCopier
from stagecopy_dagster.engine.plan import MIN_TARGET_VERSION
from stagecopy_dagster.engine.session import SourceSnapshot
from stagecopy_dagster.engine.types import (
    ConnectionFactory,
    Connectors,
    CopyOptions,
    CopyResult,
    Progress,
    ProgressCallback,
    SourceFacts,
)

#: The name this module gave the source facts before the engine split.
SourcePlan = SourceFacts

__all__ = [
    "MIN_TARGET_VERSION",
    "ConnectionFactory",
    "Connectors",
    "CopyOptions",
    "CopyResult",
    "Progress",
    "ProgressCallback",
    "SourcePlan",
    "SourceSnapshot",
    "TableCopier",
]
