"""`StagecopyComponent`: stagecopy in a `dg` project, configured by a `defs.yaml` alone.

The component's attributes are the replication spec (`defaults:` and `tables:`, exactly as in a
`replication.yaml`, or `spec_file:` naming one) plus optional `source_url` / `target_url`. It
builds what :func:`~stagecopy_dagster.build.build_definitions` builds: an asset with an
`integrity` check per table, the main job, the schedules, the source sensor and the clean-up.

Connection URLs:

* omitted: `$STAGECOPY_SOURCE_URL` / `$STAGECOPY_TARGET_URL`, read at run time (both), as
  `build_definitions` does; with neither set, loading fails naming them, unless
  `$STAGECOPY_EMBEDDED=1` asks for the local embedded cluster;
* `"{{ env.NAME }}"` (or `"{{ env('NAME') }}"`): the variable `NAME`, also read at run time
  (a `dg.EnvVar`), so the URL and its password never enter the definitions or the UI;
* any other string: rendered with Dagster's template scope and used as given. Keep passwords
  out of it (use `~/.pgpass` or the `env` form).

Example `defs.yaml`:

    type: stagecopy_dagster.component.StagecopyComponent
    attributes:
      source_url: "{{ env.STAGECOPY_SOURCE_URL }}"
      target_url: "{{ env.STAGECOPY_TARGET_URL }}"
      defaults:
        mode: merge
      tables:
        - source: public.orders
          schedule: "0 * * * *"
"""

# No `from __future__ import annotations`: Dagster derives the YAML schema from the real
# (evaluated) annotations of the dataclass fields.
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import dagster as dg

from stagecopy_dagster.build import build_definitions
from stagecopy_dagster.errors import ConnectionConfigError, SpecError
from stagecopy_dagster.spec import ReplicationSpec, load_spec, parse_spec

__all__ = ["StagecopyComponent", "StagecopyScaffolder"]

# `{{ env.NAME }}` or `{{ env('NAME') }}` / `{{ env("NAME") }}`, and nothing else in the string.
_ENV_TEMPLATE_RE = re.compile(
    r"""^\s*\{\{\s*env(?:\.(?P<attr>[A-Za-z_][A-Za-z0-9_]*)"""
    r"""|\(\s*(?P<quote>['"])(?P<call>[A-Za-z_][A-Za-z0-9_]*)(?P=quote)\s*\))\s*\}\}\s*$"""
)


def env_var_name(template: str) -> str | None:
    """The variable a URL template reads when it is exactly `{{ env.NAME }}`, else None.

    Example:
        >>> env_var_name("{{ env.STAGECOPY_SOURCE_URL }}")
        'STAGECOPY_SOURCE_URL'
        >>> env_var_name("postgresql://reader@db/app") is None
        True
    """
    match = _ENV_TEMPLATE_RE.match(template)
    if match is None:
        return None
    return match.group("attr") or match.group("call")


def _resolve_url(context: dg.ResolutionContext, raw: str | None) -> str | None:
    """A URL attribute: `{{ env.NAME }}` becomes `dg.EnvVar(NAME)`, anything else is rendered."""
    if raw is None:
        return None
    name = env_var_name(raw)
    if name is not None:
        # Read at run time by the resource, like `build_definitions` does without URLs: the
        # value never becomes part of the definitions (nor of the UI's resource config).
        return dg.EnvVar(name)
    value = context.resolve_value(raw)
    if value is not None and not isinstance(value, str):
        raise SpecError(f"a connection URL must render to a string, not {type(value).__name__}")
    return value or None


def _resolve_spec_file(context: dg.ResolutionContext, value: str | None) -> str | None:
    """`spec_file`, relative to the defs.yaml that names it."""
    return None if value is None else str(context.resolve_source_relative_path(value))


ResolvedUrl = Annotated[
    str | None,
    dg.Resolver(
        _resolve_url,
        model_field_type=str | None,
        inject_before_resolve=False,
        description=(
            "libpq URI or key=value DSN. `{{ env.NAME }}` reads the variable NAME at run time. "
            "Omitted: $STAGECOPY_SOURCE_URL / $STAGECOPY_TARGET_URL (both; with neither set, "
            "loading fails unless STAGECOPY_EMBEDDED=1 asks for the local embedded cluster)."
        ),
        examples=["{{ env.STAGECOPY_SOURCE_URL }}"],
    ),
]


class StagecopyScaffolder(dg.Scaffolder):
    """`dg scaffold defs stagecopy_dagster.StagecopyComponent NAME`: a defs.yaml that loads.

    The URLs are read from the environment at run time, so `dg check defs` passes before any
    database is configured; the one table is a placeholder to replace.
    """

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        """Write `defs.yaml` into the new folder."""
        dg.scaffold_component(request, scaffold_attributes(Path(request.target_path).name))


def scaffold_attributes(folder: str) -> dict[str, Any]:
    """The attributes a scaffolded defs.yaml starts with.

    `name` comes from the defs folder (`replica` -> `replica_source`, `replica_stagecopy_all`),
    so a second scaffolded component merges with the first instead of colliding on `source`.
    """
    name = re.sub(r"[^A-Za-z0-9_]+", "_", folder).strip("_") or "stagecopy"
    return {"name": name, **SCAFFOLD_ATTRIBUTES}


#: The attributes every scaffolded defs.yaml has besides `name`.
SCAFFOLD_ATTRIBUTES: dict[str, Any] = {
    "source_url": "{{ env.STAGECOPY_SOURCE_URL }}",
    "target_url": "{{ env.STAGECOPY_TARGET_URL }}",
    "defaults": {"mode": "merge"},
    "tables": [{"source": "public.orders", "schedule": "0 * * * *"}],
}


@dg.scaffold_with(StagecopyScaffolder)
@dataclass
class StagecopyComponent(dg.Component, dg.Resolvable):
    """Replicate PostgreSQL tables (COPY -> UNLOGGED staging -> MERGE) as Dagster assets.

    One asset with an `integrity` asset check per table of the replication spec, the job
    `stagecopy_all`, one schedule per (group, cron), the source-change sensor and the daily
    staging clean-up. The spec is given inline (`defaults:`, `tables:`) or as `spec_file:`.

    Example (Python; in YAML the same keys go under `attributes:`):
        >>> component = StagecopyComponent(tables=[{"source": "public.orders"}])
        >>> component.replication_spec().tables[0].mode
        <Mode.MERGE: 'merge'>
    """

    # The spec is taken as written, not rendered as a template: SQL text such as a 2-D array
    # literal '{{1,2},{3,4}}' in `where` must reach stagecopy unchanged, as from replication.yaml.
    tables: Annotated[
        list[dict[str, Any]] | None,
        dg.Resolver.passthrough(
            description=(
                "The spec's `tables:` list: one entry per table (source or query, target, "
                "primary_key, where, incremental_field, lookback, mode, name, group, schedule, "
                "check_schedule, description, parallel, pool, blocking, retries, freshness)."
            ),
            examples=[[{"source": "public.orders", "mode": "sync", "schedule": "0 * * * *"}]],
        ),
    ] = None
    defaults: Annotated[
        dict[str, Any] | None,
        dg.Resolver.passthrough(
            description="The spec's `defaults:`: keys applied to every entry of `tables`.",
            examples=[{"mode": "merge", "blocking": True}],
        ),
    ] = None
    spec_file: Annotated[
        str | None,
        dg.Resolver(
            _resolve_spec_file,
            model_field_type=str | None,
            description=(
                "A replication spec YAML (relative to this defs.yaml) instead of inline "
                "`defaults` and `tables`, e.g. the file the `stagecopy` CLI uses."
            ),
            examples=["replication.yaml"],
        ),
    ] = None
    source_url: ResolvedUrl = None
    target_url: ResolvedUrl = None
    name: Annotated[
        str | None,
        dg.Resolver.default(
            description=(
                "Prefix for the resource keys, jobs, schedules and sensor this component makes "
                "(`crm` -> `crm_source`, `crm_stagecopy_all`), so several stagecopy components "
                "can live in one project."
            ),
            examples=["crm"],
        ),
    ] = None

    def replication_spec(self, *, origin: str = "StagecopyComponent") -> ReplicationSpec:
        """The validated spec.

        Raises:
            SpecError: The spec is invalid, or given both inline and as `spec_file`.
        """
        if self.spec_file is not None:
            if self.tables is not None or self.defaults is not None:
                raise SpecError(f"{origin}: give `spec_file` or `tables`/`defaults`, not both")
            return load_spec(self.spec_file)
        if self.tables is None:
            raise SpecError(
                f"{origin}: give `tables:` (and optionally `defaults:`) or `spec_file:`"
            )
        data: dict[str, Any] = {"tables": self.tables}
        if self.defaults is not None:
            data["defaults"] = self.defaults
        return parse_spec(data, origin=origin)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        """What `build_definitions` makes for the spec.

        Raises:
            SpecError: The spec, or one URL without the other.
            ConnectionConfigError: No URL here nor in the environment (and no embedded opt-in).
        """
        origin = _origin(context)
        spec = self.replication_spec(origin=origin)
        try:
            return build_definitions(
                spec, source_url=self.source_url, target_url=self.target_url, name=self.name
            )
        except (SpecError, ConnectionConfigError) as exc:  # the URLs: name the defs.yaml
            raise type(exc)(f"{origin}: {exc}") from None


def _origin(context: dg.ComponentLoadContext) -> str:
    """How spec errors name this component: its defs.yaml, relative to the project."""
    path = Path(context.path)
    yaml_path = path / "defs.yaml" if path.is_dir() else path
    try:
        return str(yaml_path.relative_to(context.project_root))
    except ValueError:
        return str(yaml_path)
