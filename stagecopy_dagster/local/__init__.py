"""Local PostgreSQL clusters for the demo, the tests and the benchmark; never the copy path.

* :mod:`~stagecopy_dagster.local.cluster`: :class:`LocalCluster`, one cluster in a data directory.
* :mod:`~stagecopy_dagster.local.installs`: which PostgreSQL binaries exist here.
* :mod:`~stagecopy_dagster.local.server`, :mod:`~stagecopy_dagster.local.osuser`,
  :mod:`~stagecopy_dagster.local.runtime`: running them, as another OS user when root.
* :mod:`~stagecopy_dagster.local.default`: the embedded default cluster the demo uses.
* :mod:`~stagecopy_dagster.local.demo`: the demo data set and its replication spec.

The copy path (copier, engine, statements, resources at import time, ...) never imports this
package: it works against any PostgreSQL it is given a URL for.
"""

from stagecopy_dagster.local.cluster import LocalCluster
from stagecopy_dagster.local.errors import ClusterError, ClusterStartError
from stagecopy_dagster.local.installs import (
    PostgresInstall,
    available_installs,
    embedded_install,
    system_install,
)

__all__ = [
    "ClusterError",
    "ClusterStartError",
    "LocalCluster",
    "PostgresInstall",
    "available_installs",
    "embedded_install",
    "system_install",
]
