"""Celery tasks: thin interfaces that load by id and call one service.

Named for what a person reads in Flower. None of them calls `retry()` (a
chain can lose its tail after a retry, celery issue 6631): failures become
rows (the Failed Exit Queue, a not-done event) that the periodic tasks pick
up again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from celery import Task
from django.conf import settings

from copier import alerts, publisher
from copier.periodic import BY_TASK
from copier.services import (
    engine,
    failed_exits,
    guard,
    ingest,
    lockout,
    losslimit,
    stream_events,
    sync_guard,
    working,
)
from copier.shell.celery import app
from copier.shell.logs import log_context

P = ParamSpec("P")
R = TypeVar("R")


def periodic(fn: Callable[P, R]) -> Task[P, R]:
    """A periodic task: named "copier." + its function's name, and refused unless the
    table (copier.periodic.PERIODIC) defines it, which routes and schedules it."""
    name = f"copier.{fn.__name__}"
    if name not in BY_TASK:
        raise LookupError(f"{name} is not in copier.periodic.PERIODIC: it would be neither "
                          "scheduled nor routed to the housekeeping queue")
    return app.task(name=name)(fn)


@app.task(name=publisher.PROCESS_EVENT)
def process_event(event_id: int) -> None:
    """Fan a leader event out: extra batches to other workers, the first one here."""
    with log_context(event_id=event_id, task=publisher.PROCESS_EVENT):
        started = engine.event_start(event_id=event_id)
        if started is None:
            return
        for batch in started.batches[1:]:
            ev = started.event
            publisher.batch_publish(
                event_id, [seat.follower_id for seat in batch],
                about=publisher.event_about(ev.account.name, ev.side, ev.qty, ev.symbol))
        engine.seats_copy(event=started.event, seats=started.batches[0])


@app.task(name=publisher.COPY_FOLLOWERS)
def copy_followers(event_id: int, follower_ids: list[int]) -> None:
    with log_context(event_id=event_id, task=publisher.COPY_FOLLOWERS):
        engine.fanned_out_batch_copy(event_id=event_id, follower_ids=follower_ids)


@app.task(name=publisher.RETRY_FAILED_EXIT)
def retry_failed_exit(failed_exit_id: int) -> str | None:
    with log_context(failed_exit_id=failed_exit_id, task=publisher.RETRY_FAILED_EXIT):
        return failed_exits.failed_exit_attempt(failed_exit_id=failed_exit_id)


@app.task(name=publisher.ORDERS_SETTLED)
def orders_settled(account_id: int, symbol: str) -> None:
    """An order settled: its decision, the legs that waited for it, then later events."""
    with log_context(task=publisher.ORDERS_SETTLED):
        working.orders_settled_continue(account_id=account_id, symbol=symbol)


@app.task(name=publisher.GUARD_READ)
def guard_read(account_ids: list[int]) -> dict[str, int]:
    """Guarded accounts' equity read and acted on together (their fills, the market)."""
    with log_context(task=publisher.GUARD_READ):
        outcomes = guard.guards_read(account_ids)
        return {"read": len(outcomes),
                "locked": sum(o.state.value == "locked" for o in outcomes)}


@app.task(name=publisher.WORKING_ORDER_EXPIRE)
def working_order_expire(order_id: int) -> str:
    with log_context(task=publisher.WORKING_ORDER_EXPIRE):
        return working.working_order_expire(order_id=order_id)


@periodic
def sweep_working_orders() -> dict[str, int]:
    """Working orders past their time whose expiry task was lost; continuations lost."""
    return working.working_orders_sweep()


@periodic
def dispatch_due() -> dict[str, int]:
    """The outbox sweep: events never processed, retries whose task was lost."""
    events = ingest.events_redispatch(older_than_seconds=settings.COPIER_REDISPATCH_AFTER_SECONDS)
    exits = failed_exits.failed_exits_dispatch_due()
    return {"events": len(events), "failed_exits": len(exits)}


@periodic
def prune_failed_exits() -> int:
    return failed_exits.failed_exits_prune()


@periodic
def prune_follower_fills() -> int:
    return stream_events.follower_fills_prune()


@periodic
def prune_login_records() -> int:
    """django-axes' records of logins and failed logins older than 30 days."""
    return lockout.login_records_prune()


@periodic
def heal_paused() -> list[str]:
    return sync_guard.paused_heal_all()


@periodic
def settle_positions() -> int:
    """Position statements no fill explained within the grace: applied now."""
    return sync_guard.position_disagreements_settle()


@periodic
def send_alerts() -> int:
    """The alerts' outbox: due alerts sent, one message per channel and interval."""
    return alerts.alerts_send()


@periodic
def check_disconnects() -> int:
    """Accounts disconnected longer than their group allows: an alert each."""
    return alerts.disconnects_check()


@periodic
def check_loss_limits() -> dict[str, int]:
    """Each follower's realised P&L this session against its daily loss limit."""
    done = losslimit.loss_limits_check()
    return {"read": done.read, "failed": done.failed, "reached": done.reached,
            "locked": done.locked}


@periodic
def check_guards() -> dict[str, int]:
    """Each guarded account's equity against its firm's drawdown line."""
    done = guard.guards_check()
    return {"read": done.read, "failed": done.failed, "locked": done.locked}


