"""The copier's clock: wall time, or a controlled one for scenario replay.

Only time-dependent decisions read it (failed-exit due times, retention).
A controlled clock also tells the Failed Exit Queue not to schedule Celery
countdowns in real time: the replay driver runs due retries itself.
"""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

_frozen: dt.datetime | None = None


def now() -> dt.datetime:
    return _frozen if _frozen is not None else timezone.now()


def is_controlled() -> bool:
    return _frozen is not None


def freeze(at: dt.datetime) -> None:
    global _frozen
    if at.tzinfo is None:
        raise ValueError("the clock takes aware datetimes only")
    _frozen = at


def advance_to(at: dt.datetime) -> None:
    if _frozen is None:
        raise RuntimeError("advance_to needs a controlled clock (freeze first)")
    freeze(max(_frozen, at))


def release() -> None:
    global _frozen
    _frozen = None
