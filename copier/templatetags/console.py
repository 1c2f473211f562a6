"""Filters of the console's templates: signed positions, times to the millisecond."""

from __future__ import annotations

import datetime as dt

from django import template

from copier.console.display import signed as _signed
from copier.console.display import time_display

register = template.Library()


@register.filter
def signed(value: int | None) -> str:
    return _signed(value)


@register.filter
def ms(value: dt.datetime | None) -> str:
    return time_display(value)


@register.filter
def count(panel: object, colour: str) -> int:
    return int(panel.count(colour))  # type: ignore[attr-defined]
