"""Durations as users write them in a spec: `2h`, `90m`, `1d`, `45 minutes`, `1.5 hours`."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {
    "s": "seconds",
    "sec": "seconds",
    "secs": "seconds",
    "second": "seconds",
    "seconds": "seconds",
    "m": "minutes",
    "min": "minutes",
    "mins": "minutes",
    "minute": "minutes",
    "minutes": "minutes",
    "h": "hours",
    "hr": "hours",
    "hrs": "hours",
    "hour": "hours",
    "hours": "hours",
    "d": "days",
    "day": "days",
    "days": "days",
    "w": "weeks",
    "week": "weeks",
    "weeks": "weeks",
}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)\s*$")


def parse_duration(text: str) -> timedelta:
    """A positive duration from `text`.

    Raises:
        ValueError: `text` is not a number and a unit (s, m, h, d, w or their words), or is 0.

    Example:
        >>> parse_duration("2h")
        datetime.timedelta(seconds=7200)
        >>> parse_duration("1.5 days")
        datetime.timedelta(days=1, seconds=43200)
    """
    match = _DURATION_RE.match(text)
    unit = _UNITS.get(match.group(2).lower()) if match else None
    if match is None or unit is None:
        raise ValueError(f"{text!r} is not a duration like '2h', '30m', '1d' or '45 minutes'")
    value = timedelta(**{unit: float(match.group(1))})
    if value <= timedelta(0):
        raise ValueError(f"{text!r} must be longer than zero")
    return value
