"""Celery tasks: thin interfaces that load by id and call one service.

Named for what a person reads in Flower. None of them calls `retry()` (a
chain can lose its tail after a retry, celery issue 6631): failures become
rows (the Failed Exit Queue, a not-done event) that the periodic tasks pick
up again.
"""

from __future__ import annotations

from django.conf import settings

from copier import alerts, publisher
from copier.celery import app
from copier.logs import log_context
from copier.services import (
    engine,
    failed_exits,
    ingest,
    listener,
    lockout,
    losslimit,
    sync_guard,
    working,
)


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


@app.task(name=publisher.WORKING_ORDER_EXPIRE)
def working_order_expire(order_id: int) -> str:
    with log_context(task=publisher.WORKING_ORDER_EXPIRE):
        return working.working_order_expire(order_id=order_id)


@app.task(name="copier.sweep_working_orders")
def sweep_working_orders() -> dict[str, int]:
    """Working orders past their time whose expiry task was lost; continuations lost."""
    return working.working_orders_sweep()


@app.task(name="copier.dispatch_due")
def dispatch_due() -> dict[str, int]:
    """The outbox sweep: events never processed, retries whose task was lost."""
    events = ingest.events_redispatch(older_than_seconds=settings.COPIER_REDISPATCH_AFTER_SECONDS)
    exits = failed_exits.failed_exits_dispatch_due()
    return {"events": len(events), "failed_exits": len(exits)}


@app.task(name="copier.prune_failed_exits")
def prune_failed_exits() -> int:
    return failed_exits.failed_exits_prune()


@app.task(name="copier.prune_follower_fills")
def prune_follower_fills() -> int:
    return listener.follower_fills_prune()


@app.task(name="copier.prune_login_records")
def prune_login_records() -> int:
    """django-axes' records of logins and failed logins older than 30 days."""
    return lockout.login_records_prune()


@app.task(name="copier.heal_paused")
def heal_paused() -> list[str]:
    return sync_guard.paused_heal_all()


@app.task(name="copier.settle_positions")
def settle_positions() -> int:
    """Position statements no fill explained within the grace: applied now."""
    return sync_guard.position_disagreements_settle()


@app.task(name="copier.send_alerts")
def send_alerts() -> int:
    """The alerts' outbox: due alerts sent, one message per channel and interval."""
    return alerts.alerts_send()


@app.task(name="copier.check_disconnects")
def check_disconnects() -> int:
    """Accounts disconnected longer than their group allows: an alert each."""
    return alerts.disconnects_check()


@app.task(name="copier.check_loss_limits")
def check_loss_limits() -> dict[str, int]:
    """Each follower's realised P&L this session against its daily loss limit."""
    done = losslimit.loss_limits_check()
    return {"read": done.read, "failed": done.failed, "reached": done.reached,
            "locked": done.locked}


PERIODIC_TASKS: dict[str, tuple[str, int]] = {
    # name shown in the admin: (task, every N seconds)
    "copier: re-dispatch lost events and due exit retries": ("copier.dispatch_due", 10),
    "copier: heal paused accounts": ("copier.heal_paused", 60),
    "copier: prune failed exits older than 7 days": ("copier.prune_failed_exits", 3600),
    "copier: apply position statements no fill explained": ("copier.settle_positions", 5),
    "copier: forget follower fill ids older than 30 days": ("copier.prune_follower_fills", 86400),
    "copier: forget login records older than 30 days": ("copier.prune_login_records", 86400),
    "copier: send due alerts": ("copier.send_alerts", 10),
    "copier: alert on long disconnects": ("copier.check_disconnects", 15),
    "copier: cancel working orders past their time": ("copier.sweep_working_orders", 5),
    "copier: check daily loss limits": ("copier.check_loss_limits",
                                        settings.COPIER_LOSS_CHECK_SECONDS),
}
