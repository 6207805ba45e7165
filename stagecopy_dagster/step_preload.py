"""What every step process of `stagecopy run --jobs N` needs, loaded once in the forkserver.

With `--jobs N > 1` Dagster's multiprocess executor starts each table's step in a process of
its own. Started from scratch (`spawn`), each one imports Dagster, stagecopy and psycopg and
loads the instance's storage (SQLAlchemy, Alembic): about 3 s of CPU a step here, more than a
table of 200k rows takes to copy. The executor's `forkserver` start method imports this module
once in a server process and forks every step from it, so a step starts with all of that
loaded. Importing it has that one effect: an in-memory instance is created and closed, which
loads the same storage code the steps' instance uses.
"""

from __future__ import annotations

import dagster as dg
import psycopg  # noqa: F401 (preloaded for the steps)

import stagecopy_dagster.assets
import stagecopy_dagster.build
import stagecopy_dagster.executors  # noqa: F401 (preloaded for the steps)

with dg.DagsterInstance.ephemeral():
    pass
