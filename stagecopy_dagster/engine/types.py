"""The values that cross the engine's function boundaries: columns and COPY formats."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CopyFormat = Literal["binary", "text"]


@dataclass(frozen=True)
class Column:
    """One column as the catalog describes it."""

    name: str
    type: str
    """`format_type()` of the column: `numeric(12,2)`, `character varying(20)`, `"Mood"`."""
    not_null: bool = False
    generated: bool = False
    """A `GENERATED ALWAYS AS (...) STORED` column: never written by COPY or MERGE."""
    identity_always: bool = False
    """A `GENERATED ALWAYS AS IDENTITY` column: written with OVERRIDING SYSTEM VALUE."""
    binary_safe: bool = True
    """Whether binary COPY of this type is portable between databases (no user type OIDs)."""
