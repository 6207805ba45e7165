"""The names one replication gives its Dagster objects, so several can share a project.

`build_definitions(spec, name="crm")` prefixes every resource key, job, schedule, sensor and op
it makes with `crm_`; without a name they keep their plain names (`source`, `target`,
`stagecopy_all`, ...). Asset keys are the translator's business, not this module's.
"""

from __future__ import annotations

from dataclasses import dataclass

from stagecopy_dagster.errors import SpecError
from stagecopy_dagster.identifiers import is_valid_dagster_name


@dataclass(frozen=True)
class Names:
    """Names of one replication's Dagster objects.

    Example:
        >>> Names("crm").all_tables_job
        'crm_stagecopy_all'
        >>> Names().source
        'source'
    """

    prefix: str = ""

    def __post_init__(self) -> None:
        if self.prefix and not is_valid_dagster_name(self.prefix):
            raise SpecError(f"replication name {self.prefix!r}: use letters, digits and _ only")

    def of(self, base: str) -> str:
        """`base`, prefixed with this replication's name when it has one."""
        return f"{self.prefix}_{base}" if self.prefix else base

    @property
    def source(self) -> str:
        """The source resource's key."""
        return self.of("source")

    @property
    def target(self) -> str:
        """The target resource's key."""
        return self.of("target")

    @property
    def all_tables_job(self) -> str:
        """The main job: every table of the spec and its check."""
        return self.of("stagecopy_all")

    @property
    def source_sensor(self) -> str:
        """The sensor that launches the tables whose source changed."""
        return self.of("stagecopy_source_changes")

    @property
    def cleanup_job(self) -> str:
        """The job that drops leftover staging tables."""
        return self.of("stagecopy_cleanup")

    @property
    def cleanup_schedule(self) -> str:
        """The clean-up job's daily schedule."""
        return self.of("stagecopy_cleanup_schedule")


#: The names of a replication without a name: `source`, `target`, `stagecopy_all`, ...
PLAIN = Names()
