"""Progress reports as text: one line a person can read, the same for every reader.

Dagster's run log, the CLI's live line and its plain log lines all print
:func:`describe_progress`, so the numbers read the same wherever they are seen.
"""

from __future__ import annotations

from stagecopy_dagster.engine.types import Progress

_MINUTE, _HOUR = 60, 3600


def format_duration(seconds: float) -> str:
    """`42s`, `3m07s`, `1h02m05s`."""
    whole = int(seconds)
    if whole < _MINUTE:
        return f"{whole}s"
    if whole < _HOUR:
        return f"{whole // _MINUTE}m{whole % _MINUTE:02d}s"
    return f"{whole // _HOUR}h{whole % _HOUR // _MINUTE:02d}m{whole % _MINUTE:02d}s"


def describe_progress(p: Progress, *, with_table: bool = True) -> str:
    """Rows and MB against the expected total, percent, rate and ETA (or the time it took).

    An estimated total reads `~1,000,000`; a counted one has no `~`. Example:
    `public.orders: 250,000 / ~1,000,000 rows, 12.5 / ~50.0 MB, 25.0%, 50,000 rows/s,
    2.5 MB/s, ETA 15s`.
    """
    parts: list[str] = []
    expected = p.expected
    if p.rows is not None:
        total = ""
        if expected is not None:
            total = f" / {'' if expected.exact else '~'}{expected.rows:,}"
        parts.append(f"{p.rows:,}{total} rows")
    mb_total = "" if p.expected_bytes is None else f" / ~{p.expected_bytes / 1e6:,.1f}"
    parts.append(f"{p.bytes / 1e6:,.1f}{mb_total} MB")
    share = p.fraction
    if share is not None and expected is not None:
        parts.append(f"{share * 100:.1f}%")
    if p.rows_per_second is not None:
        parts.append(f"{p.rows_per_second:,.0f} rows/s")
    parts.append(f"{p.mb_per_second:,.1f} MB/s")
    if p.final:
        parts.append(f"done in {format_duration(p.seconds)}")
    elif p.eta_seconds is not None:
        parts.append(f"ETA {format_duration(p.eta_seconds)}")
    what = "keys: " if p.step == "copy_keys" else ""
    head = f"{p.table}: " if with_table else ""
    return head + what + ", ".join(parts)
