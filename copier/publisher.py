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

from copier.shell.celery import app

# The names a person reads in Flower; messages already queued carry them, so they
# outlive any rename of the code behind them.
PROCESS_EVENT = "copier.process_event"
COPY_FOLLOWERS = "copier.copy_followers"
RETRY_FAILED_EXIT = "copier.retry_failed_exit"
ORDERS_SETTLED = "copier.orders_settled"
WORKING_ORDER_EXPIRE = "copier.working_order_expire"
GUARD_READ = "copier.guard_read"


def event_publish(event_id: int, *, about: str = "") -> None:
    """A stored leader event is to be copied. Raises when the broker (Redis) is away.

    `about` ('L buy 2 MNQ', see `event_about`) is what Flower shows for the task
    instead of its bare id; the caller has it at hand, so publishing costs no query.
    """
    app.signature(PROCESS_EVENT).apply_async(
        (event_id,), argsrepr=f"event {event_id}: {about}" if about else None)


def batch_publish(event_id: int, follower_ids: Sequence[int], *, about: str = "") -> None:
    """One batch of an event's followers, for another worker process to copy."""
    ids = list(follower_ids)
    app.signature(COPY_FOLLOWERS).apply_async(
        (event_id, ids),
        argsrepr=f"event {event_id}: {about}, {len(ids)} followers" if about else None)


def failed_exit_retry_publish(failed_exit_id: int, *, eta: dt.datetime | None = None,
                              about: str = "") -> None:
    """The next attempt at a queued exit, at its due time (now without `eta`).

    The backoff caps at 1 h, below the Redis visibility timeout, and a duplicate
    delivery finds the row claimed or not due: nothing happens twice. `about`
    ('F1 sell 2 MNQ') names it in Flower.
    """
    app.signature(RETRY_FAILED_EXIT).apply_async(
        (failed_exit_id,), eta=eta,
        argsrepr=f"failed exit {failed_exit_id}: {about}" if about else None)


def event_about(who: str, side: str, qty: int, symbol: str) -> str:
    """How Flower names a copy task or an exit's retry: account, side, quantity, symbol."""
    return f"{who} {side} {qty} {symbol}"


def orders_settled_publish(account_id: int, symbol: str) -> None:
    """An order of (account, symbol) settled at the broker: what waited for it goes on."""
    app.signature(ORDERS_SETTLED).apply_async(
        (account_id, symbol), argsrepr=f"account {account_id} {symbol}")


def working_order_expire_publish(order_id: int, *, countdown: float) -> None:
    """Cancel the order at the broker if it is still working when its time is up."""
    app.signature(WORKING_ORDER_EXPIRE).apply_async(
        (order_id,), countdown=countdown, argsrepr=f"order {order_id}")


def guard_read_publish(account_ids: Sequence[int], *, about: str = "") -> None:
    """The accounts' equity changed (their fills, the market): their guards read them now,
    together (one flatten for all that cross), on the copy queue, not at the next
    periodic check."""
    ids = list(account_ids)
    app.signature(GUARD_READ).apply_async(
        (ids,), argsrepr=f"accounts {ids[:5]}{'...' if len(ids) > 5 else ''}: {about}"
        if about else None)
