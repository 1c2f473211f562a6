"""How times and positions read on the console: to the millisecond, in the operator's zone.

The database and the processes stay in UTC (settings.TIME_ZONE); only what a person reads
is shown in COPIER_DISPLAY_TZ, always with the zone's name, so that "09:30:00.125" is never
ambiguous on a screen shared across desks.
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from copier.console.sentences import signed

__all__ = ["display_zone", "display_zone_name", "duration_ms", "signed", "time_display"]


@cache
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ImproperlyConfigured(
            f"COPIER_DISPLAY_TZ={name!r} is not a time zone; use an IANA name such as "
            "UTC, America/New_York or Europe/London") from None


def display_zone() -> ZoneInfo:
    """The operator's zone (COPIER_DISPLAY_TZ, default UTC)."""
    return _zone(getattr(settings, "COPIER_DISPLAY_TZ", "UTC") or "UTC")


def display_zone_name() -> str:
    return display_zone().key


def time_display(value: dt.datetime | None) -> str:
    """'2026-03-02 10:00:00.125 EST': to the millisecond, with the zone's abbreviation."""
    if value is None:
        return "-"
    local = value.astimezone(display_zone())
    return f"{local:%Y-%m-%d %H:%M:%S}.{local.microsecond // 1000:03d} {local:%Z}"


def duration_ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1000
    return f"{ms:.0f} ms" if ms < 10_000 else f"{seconds:.1f} s"
