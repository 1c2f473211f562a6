"""Scenario replay: drive the real services and Celery tasks against a broker.

Each step acts at the broker (the sim, or a local venue server: see
`devkit.replay_brokers`) the way a trader or an outage would, then
lets the copier's listener see it (`broker_events_pump`), exactly as in
production. Time is a controlled clock: `advance` runs every retry that falls
due, at its due time and in order, then the periodic tasks. The tasks run
eagerly in-process by default, or through a real worker and Redis (`live`),
in which case each step waits until every task it caused has finished.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from celery import signals
from django.conf import settings
from django.db import transaction

from accounts.models import TradingAccount
from copier import tasks
from copier.domain import guard
from copier.models import (
    AccountGuard,
    CopyGroup,
    Decision,
    FailedExit,
    Follower,
    LeaderEvent,
    Order,
    Quarantine,
    SymbolMapping,
)
from copier.services import engine, failed_exits
from copier.services import guard as guard_service
from copier.services.failed_exits import WAITING_NOTE
from copier.services.ingest import events_redispatch
from copier.services.quarantine import quarantine_lift
from copier.shell.celery import app
from core import clock
from devkit.replay_brokers import SimBrokerDriver, VenueBrokerDriver
from devkit.scenario import Scenario, ScenarioError, Step

if TYPE_CHECKING:
    from devkit.localvenue import LocalVenue

EPOCH = dt.datetime(2026, 1, 5, 14, 30, tzinfo=dt.UTC)
MAX_RETRIES_PER_ADVANCE = 10_000


class TaskTracker:
    """Tracks the tasks this process published until each has run, to wait for quiet (live mode).

    Only our own task ids count, so a stray message already in the queue cannot
    fool the wait.
    """

    def __init__(self) -> None:
        self.pending: set[str] = set()
        self.published = 0
        self._lock = threading.Lock()

    def _on_publish(self, headers: dict[str, Any] | None = None, **_: Any) -> None:
        task_id = (headers or {}).get("id")
        if task_id:
            with self._lock:
                self.pending.add(task_id)
                self.published += 1

    def _on_finish(self, task_id: str | None = None, **_: Any) -> None:
        with self._lock:
            self.pending.discard(task_id or "")

    def connect(self) -> None:
        signals.before_task_publish.connect(self._on_publish, weak=False)
        signals.task_postrun.connect(self._on_finish, weak=False)

    def disconnect(self) -> None:
        signals.before_task_publish.disconnect(self._on_publish)
        signals.task_postrun.disconnect(self._on_finish)

    def wait_quiet(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        quiet_checks = 0
        while quiet_checks < 3:
            if time.monotonic() > deadline:
                raise TimeoutError(f"tasks still running after {timeout}s "
                                   f"({len(self.pending)} of {self.published} not finished)")
            with self._lock:
                quiet = not self.pending
            quiet_checks = quiet_checks + 1 if quiet else 0
            time.sleep(0.01)


@contextmanager
def eager_tasks() -> Iterator[None]:
    """Run tasks in-process: deterministic, and the replay needs no server."""
    old = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    try:
        yield
    finally:
        app.conf.task_always_eager, app.conf.task_eager_propagates = old


def replay_run(scenario: Scenario, *, broker: str = "sim", venue: LocalVenue | None = None,
               tracker: TaskTracker | None = None) -> dict[str, Any]:
    """Replay `scenario` with its accounts at `broker`: the sim, or a local server of that
    venue (`venue`, already started and shared by several replays; else one of its own,
    started and stopped here)."""
    if broker == "sim":
        return Replay(scenario, tracker=tracker, broker=SimBrokerDriver()).run()
    from devkit.localvenue import venue_start

    own = venue is None
    server = venue_start(broker) if venue is None else venue
    if server.kind != broker:
        raise ValueError(f"a {server.kind} venue cannot replay on {broker}")
    driver = VenueBrokerDriver(server, scenario.symbols)
    try:
        return Replay(scenario, tracker=tracker, broker=driver).run()
    finally:
        driver.close()
        if own:
            server.stop()


class _Crash(Exception):
    """The worker dying mid-copy (`crash` op)."""


class Replay:
    def __init__(self, scenario: Scenario, *, tracker: TaskTracker | None = None,
                 broker: SimBrokerDriver | VenueBrokerDriver | None = None) -> None:
        self.scenario = scenario
        self.tracker = tracker
        self.broker = broker or SimBrokerDriver()
        self.accounts: dict[str, TradingAccount] = {}
        self.crash_next = False
        self.guarded = False  # a follower has an account guard

    # --- running ---------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        clock.freeze(EPOCH)
        try:
            self._setup()
            for step in self.scenario.steps:
                try:
                    getattr(self, f"_op_{step.op}")(step)
                except ScenarioError:
                    raise
                except Exception as exc:
                    raise RuntimeError(f"step {step.index} ({step.op}) failed: {exc}") from exc
                self._settle()
            return self.output()
        finally:
            clock.release()

    def _settle(self) -> None:
        if self.tracker is not None:
            self.tracker.wait_quiet()

    def _setup(self) -> None:
        taken = TradingAccount.objects.filter(name__in=self.scenario.accounts).first()
        if taken is not None:
            raise ScenarioError(
                f"accounts: {taken.name} already exists in this database; "
                "replay on a fresh one (run without --keep)"
            )
        for name in self.scenario.accounts:
            self.accounts[name] = self.broker.account_create(name)
        for spec in self.scenario.groups:
            group = CopyGroup.objects.create(
                name=spec.name, leader=self.accounts[spec.leader], reverse=spec.reverse,
                exit_mode=spec.exit_mode,
            )
            for f in spec.followers:
                follower = Follower.objects.create(
                    group=group, account=self.accounts[f.account], multiplier=f.multiplier,
                    enabled=f.enabled, micro=f.symbols.micro.value, **f.risk_fields())
                SymbolMapping.objects.bulk_create([
                    SymbolMapping(follower=follower, leader_symbol=rule.leader,
                                  follower_symbol=rule.follower, ratio=rule.ratio)
                    for rule in f.symbols.rules])
                if f.guard is not None:
                    self._guard_create(self.accounts[f.account], f.guard, f.guard_line)
        for account in self.accounts.values():
            self._pump(account)  # the listener's first connect
        self._settle()

    def _guard_create(self, account: TradingAccount, profile: guard.GuardRules,
                      line_now: Decimal | None) -> None:
        """A follower's account guard, its starting balance the sim account's cash."""
        self.broker.cash_set(account, profile.starting_balance)
        row = AccountGuard.objects.create(account=account,
                                          **AccountGuard.profile_fields(profile))
        if line_now is not None:
            guard_service.line_set(row, line_now, by="scenario")
        self.guarded = True

    def _guards_check(self) -> None:
        """The periodic check of every guard, at each advance (a fill and a price step
        have the guards of the accounts they move read at once)."""
        if self.guarded:
            self._run(tasks.check_guards)

    def _pump(self, account: TradingAccount) -> None:
        self.broker.pump(account)

    def _account(self, step: Step) -> TradingAccount:
        return self.accounts[step.args["account"]]

    # --- ops -------------------------------------------------------------------------------
    def _op_fill(self, step: Step) -> None:
        account = self._account(step)
        a = step.args
        # no fill_id: a fill of its own, never a duplicate of another step's
        self.broker.fill(account, a["symbol"], a["side"], a["qty"], a.get("fill_id"),
                         a.get("price"))
        if self.crash_next and account.led_groups.exists():
            self.crash_next = False
            self._crash_copy(account)
        self._pump(account)

    def _crash_copy(self, leader: TradingAccount) -> None:
        """The leader's fill is stored, then its copy dies after the broker executed the
        followers' orders: every row of the copier's rolls back, the broker keeps what it
        did, and the event waits for its re-run (`recover`, or the periodic re-dispatch)."""
        with transaction.atomic():
            self._pump(leader)
            transaction.get_connection().run_on_commit.clear()  # the publish is lost too
        for event in LeaderEvent.objects.filter(account=leader, runs=0).order_by("id"):
            started = engine.event_start(event_id=event.pk)
            if started is None:
                continue
            try:
                with transaction.atomic():
                    for batch in started.batches:
                        engine.seats_copy(event=started.event, seats=batch)
                    raise _Crash
            except _Crash:
                pass

    def _op_price(self, step: Step) -> None:
        """The market moves: the broker's orders in the symbol fill there from now on."""
        self.broker.price_set(step.args["symbol"], step.args["price"])
        if self.guarded:  # the guards of the accounts holding it read them now
            guard_service.market_moved(step.args["symbol"])
            self._settle()

    def _op_outage(self, step: Step) -> None:
        account = self._account(step)
        self.broker.reachable_set(account, False)
        self._pump(account)

    def _op_restore(self, step: Step) -> None:
        """A reconnect, on an account that is connected too: a new session, positions
        compared, queued exits attempted at once."""
        account = self._account(step)
        self.broker.reachable_set(account, True)
        self.broker.reconnect(account)

    def _op_fail_orders(self, step: Step) -> None:
        self.broker.inject(self._account(step), "fail", step.args["count"])

    def _op_reject_orders(self, step: Step) -> None:
        self.broker.inject(self._account(step), "reject", step.args["count"])

    def _op_hold_orders(self, step: Step) -> None:
        """The broker acknowledges the follower's next orders as working, filling none."""
        self.broker.inject(self._account(step), "hold", step.args["count"])

    def _op_fill_held(self, step: Step) -> None:
        """The broker fills the follower's oldest held order (or part of it); its stream
        then says so, as a follower's fills reach the copier."""
        account = self._account(step)
        try:
            self.broker.held_fill(account, step.args.get("qty"))
        except ValueError as exc:  # nothing held, or more than is left
            raise ScenarioError(f"step {step.index} (fill_held): {exc}") from None
        self._pump(account)

    def _op_cancel_held(self, step: Step) -> None:
        """The broker cancels what is left of the follower's oldest held order."""
        account = self._account(step)
        try:
            self.broker.held_cancel(account)
        except ValueError as exc:
            raise ScenarioError(f"step {step.index} (cancel_held): {exc}") from None
        self._pump(account)

    def _op_release(self, step: Step) -> None:
        quarantine_lift(account=self.accounts[step.args["account"]], symbol=step.args["symbol"],
                        by="replay")

    def _op_enable(self, step: Step) -> None:
        Follower.objects.filter(account=self.accounts[step.args["account"]]).update(
            enabled=step.args["enabled"]
        )

    def _op_crash(self, step: Step) -> None:
        self.crash_next = True

    def _op_recover(self, step: Step) -> None:
        """The periodic re-dispatch runs now: events whose copy died are run again."""
        events_redispatch(older_than_seconds=0)
        self._settle()

    def _op_reverse(self, step: Step) -> None:
        group = CopyGroup.objects.get(name=step.args["group"])
        group.reverse = step.args["reverse"]
        group.save()

    def _op_join(self, step: Step) -> None:
        """A follower joins a group (moved from another, or added): as the admin saves it."""
        account = self.accounts[step.args["account"]]
        group = CopyGroup.objects.get(name=step.args["group"])
        follower = Follower.objects.filter(account=account).first() or Follower(account=account)
        follower.group, follower.multiplier = group, step.args["multiplier"]
        follower.save()

    def _op_leave(self, step: Step) -> None:
        Follower.objects.filter(account=self.accounts[step.args["account"]]).delete()

    def _op_mode(self, step: Step) -> None:
        """A person sets a follower's mode: active, exits only, or off (not enabled)."""
        mode = step.args["mode"]
        Follower.objects.filter(account=self.accounts[step.args["account"]]).update(
            enabled=mode != "off", **({} if mode == "off" else {"mode": mode}))

    def _op_group_mode(self, step: Step) -> None:
        mode = step.args["mode"]
        CopyGroup.objects.filter(name=step.args["group"]).update(
            enabled=mode != "off", **({} if mode == "off" else {"mode": mode}))

    def _op_flatten(self, step: Step) -> None:
        """A person flattens a group or a follower (the kill switch); the followers' streams
        then say what filled, as the listener would see it."""
        from copier.services import killswitch

        if "group" in step.args:
            group = CopyGroup.objects.get(name=step.args["group"])
            result = killswitch.flatten(groups=[group], by="replay")
        else:
            follower = Follower.objects.get(account=self.accounts[step.args["account"]])
            result = killswitch.flatten(followers=[follower], by="replay")
        for account_id in sorted({d.account_id for d in result.decisions}):
            self._pump(TradingAccount.objects.get(pk=account_id))

    def _op_advance(self, step: Step) -> None:
        """Every retry and working-order timeout that falls due inside the span runs at its
        due time, in time order; then the periodic tasks."""
        target = clock.now() + dt.timedelta(seconds=step.args["seconds"])
        for _ in range(MAX_RETRIES_PER_ADVANCE):
            due = self._next_due(target)
            if due is None:
                break
            at, run = due
            clock.advance_to(max(at, clock.now()))
            run()
        else:
            raise RuntimeError("too many retries inside one advance")
        clock.advance_to(target)
        for periodic in (tasks.dispatch_due, tasks.settle_positions, tasks.heal_paused,
                         tasks.prune_failed_exits, tasks.check_loss_limits):
            self._run(periodic)
        self._guards_check()

    def _next_due(self, target: dt.datetime) -> tuple[dt.datetime, Callable[[], None]] | None:
        """The earliest of: a queued exit's next attempt, a working order's timeout."""
        accounts = self.accounts.values()
        fe = (FailedExit.objects.filter(
            failed_exits.NOT_HELD_BY_PAUSE, status=FailedExit.Status.PENDING,
            next_attempt_at__lte=target, account__in=accounts,
        ).exclude(last_error=WAITING_NOTE).order_by("next_attempt_at", "id").first())
        timeout = dt.timedelta(seconds=settings.COPIER_WORKING_ORDER_SECONDS)
        order = (Order.objects.filter(status=Order.Status.ACCEPTED, account__in=accounts,
                                      submitted_at__lte=target - timeout)
                 .order_by("submitted_at", "id").first())
        candidates: list[tuple[dt.datetime, int, Callable[[], None]]] = []
        if fe is not None:
            candidates.append((fe.next_attempt_at, 1, lambda: self._retry(fe)))
        if order is not None and order.submitted_at is not None:
            order_id = order.pk
            candidates.append((order.submitted_at + timeout, 0,
                               lambda: self._expire(order_id)))
        if not candidates:
            return None
        at, _rank, run = min(candidates, key=lambda c: (c[0], c[1]))
        return at, run

    def _retry(self, due: FailedExit) -> None:
        self._run(tasks.retry_failed_exit, due.pk)
        due.refresh_from_db()
        if due.status == FailedExit.Status.PENDING and due.next_attempt_at <= clock.now() \
                and due.last_error != WAITING_NOTE:
            raise RuntimeError(f"failed exit {due.pk} did not move forward")

    def _expire(self, order_id: int) -> None:
        self._run(tasks.working_order_expire, order_id)
        order = Order.objects.select_related("account").get(pk=order_id)
        self._pump(order.account)  # what the cancel pushed on the follower's stream
        if Order.objects.filter(pk=order_id, status=Order.Status.ACCEPTED).exists():
            raise RuntimeError(f"working order {order.client_order_id} did not settle "
                               f"at its timeout")

    def _run(self, task: Any, *args: Any) -> None:
        task.delay(*args)
        self._settle()

    # --- output ----------------------------------------------------------------------------
    def output(self) -> dict[str, Any]:
        out = self._output()
        if self.guarded:
            out["guards"] = [
                {"account": g.account.name, "state": g.state,
                 "equity": None if g.equity is None else str(g.equity),
                 "line": None if g.line is None else str(g.line),
                 "findings": [guard.Finding.from_json(f).text for f in g.findings]}
                for g in AccountGuard.objects.filter(account__name__in=self.scenario.accounts)
                .select_related("account").order_by("account__name")]
        return out

    def _output(self) -> dict[str, Any]:
        names = self.scenario.accounts
        positions = self.broker.positions(names)
        event_numbers = {
            pk: n for n, pk in enumerate(
                LeaderEvent.objects.filter(account__name__in=names).order_by("id")
                .values_list("id", flat=True), start=1)
        }
        return {
            "positions": positions,
            "quarantines": [
                {"account": a, "symbol": s}
                for a, s in Quarantine.objects.filter(
                    account__name__in=names, lifted_at__isnull=True
                ).order_by("account__name", "symbol").values_list("account__name", "symbol")
            ],
            "paused": list(
                TradingAccount.objects.filter(name__in=names, copy_paused=True)
                .order_by("name").values_list("name", flat=True)
            ),
            "failed_exits": [
                {"account": fe.account.name, "symbol": fe.symbol, "side": fe.side,
                 "qty": fe.qty, "status": fe.status, "attempts": fe.attempts}
                for fe in FailedExit.objects.filter(account__name__in=names)
                .select_related("account").order_by("account__name", "symbol", "id")
            ],
            "orders": [_order_json(o) for o in Order.objects.filter(
                account__name__in=names,
                status__in=[Order.Status.FILLED, Order.Status.REJECTED, Order.Status.ACCEPTED,
                            Order.Status.CANCELLED],
            ).select_related("account").order_by("id")],
            "decisions": [
                {"event": event_numbers[event_id], "account": account, "symbol": symbol,
                 "reason": reason}
                for event_id, account, symbol, reason in Decision.objects.filter(
                    account__name__in=names, event__isnull=False
                ).order_by("event_id", "account__name").values_list(
                    "event_id", "account__name", "symbol", "reason")
            ] + self._action_decisions(names),
        }

    @staticmethod
    def _action_decisions(names: Sequence[str]) -> list[dict[str, Any]]:
        """An operator action's decisions (kill switch, flatten) after the events', each
        numbered by the action's place among this replay's actions."""
        rows = list(Decision.objects.filter(account__name__in=names, action__isnull=False)
                    .order_by("action_id", "account__name", "symbol")
                    .values_list("action_id", "account__name", "symbol", "reason"))
        numbers = {pk: n for n, pk in enumerate(sorted({row[0] for row in rows}), start=1)}
        return [{"action": numbers[action_id], "account": account, "symbol": symbol,
                 "reason": reason} for action_id, account, symbol, reason in rows]


def _order_json(order: Order) -> dict[str, Any]:
    """An order as the contract prints it: a part-filled one says what filled (`qty`) and
    what was asked (`ordered`)."""
    row: dict[str, Any] = {"account": order.account.name, "symbol": order.symbol,
                           "side": order.side, "qty": order.qty, "status": order.status}
    if order.status == Order.Status.FILLED and order.filled_qty != order.qty:
        row["qty"], row["ordered"] = order.filled_qty, order.qty
    return row
