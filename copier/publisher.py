"""The one module that sends Celery messages: work is published by task name.

Services publish through here and never import `copier.tasks`; the tasks import
the services. So the data path runs one way (DESIGN.md) and no import circle
ties the services to the tasks that call them.

A message by name needs none of the task's code in the publishing process (the
listener, the web). Where the task is registered (a worker, the replay, tests:
`CopierConfig.ready` imports the tasks), the signature goes through it, so eager
mode still runs the task in-process.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from copier.celery import app
from copier.models import FailedExit, LeaderEvent

# The names a person reads in Flower; messages already queued carry them, so they
# outlive any rename of the code behind them.
PROCESS_EVENT = "copier.process_event"
COPY_FOLLOWERS = "copier.copy_followers"
RETRY_FAILED_EXIT = "copier.retry_failed_exit"


def event_publish(event_id: int, *, event: LeaderEvent | None = None) -> None:
    """A stored leader event is to be copied. Raises when the broker (Redis) is away.

    `event`, when the caller has it, names the task in Flower without a query.
    """
    app.signature(PROCESS_EVENT).apply_async((event_id,), argsrepr=_event_repr(event_id, event))


def batch_publish(event_id: int, follower_ids: Sequence[int], *,
                  event: LeaderEvent | None = None) -> None:
    """One batch of an event's followers, for another worker process to copy."""
    ids = list(follower_ids)
    app.signature(COPY_FOLLOWERS).apply_async(
        (event_id, ids), argsrepr=f"{_event_repr(event_id, event)}, {len(ids)} followers")


def failed_exit_retry_publish(failed_exit_id: int, *, eta: dt.datetime | None = None,
                              failed_exit: FailedExit | None = None) -> None:
    """The next attempt at a queued exit, at its due time (now without `eta`).

    The backoff caps at 1 h, below the Redis visibility timeout, and a duplicate
    delivery finds the row claimed or not due: nothing happens twice.
    """
    app.signature(RETRY_FAILED_EXIT).apply_async(
        (failed_exit_id,), eta=eta, argsrepr=_failed_exit_repr(failed_exit_id, failed_exit))


# What Flower shows for a task instead of its bare ids. A publisher without the row at
# hand reads the few columns by primary key; a row that is gone shows the id alone.


def _event_repr(event_id: int, event: LeaderEvent | None) -> str:
    if event is not None and "account" in event._state.fields_cache:
        leader, symbol, side, qty = event.account.name, event.symbol, event.side, event.qty
    else:
        row = LeaderEvent.objects.filter(pk=event_id).values_list(
            "account__name", "symbol", "side", "qty").first()
        if row is None:
            return f"event {event_id}"
        leader, symbol, side, qty = row
    return f"event {event_id}: {leader} {side} {qty} {symbol}"


def _failed_exit_repr(failed_exit_id: int, fe: FailedExit | None) -> str:
    if fe is not None and "account" in fe._state.fields_cache:
        account, symbol, side, qty = fe.account.name, fe.symbol, fe.side, fe.qty
    else:
        row = FailedExit.objects.filter(pk=failed_exit_id).values_list(
            "account__name", "symbol", "side", "qty").first()
        if row is None:
            return f"failed exit {failed_exit_id}"
        account, symbol, side, qty = row
    return f"failed exit {failed_exit_id}: {account} {side} {qty} {symbol}"
