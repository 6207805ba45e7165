"""Demo data for stagecopy: Korean market-data tables, a mixed-case sales table, an enum table.

`seed_source` fills a source database, `seed_target` creates what the target must hold before
the first copy (the enum type), `touch_source` changes a few rows so a second run has work, and
`DEMO_SPEC` is the replication spec that copies all of it.
"""

from stagecopy_dagster.local.demo.seed import DEMO_SPEC, seed_source, seed_target, touch_source

__all__ = ["DEMO_SPEC", "seed_source", "seed_target", "touch_source"]
