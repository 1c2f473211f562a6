"""The `sim` paper broker: an adapter of its own, never a dry-run flag in a real one.

Orders fill at once at market. Every write goes through the `broker`
database connection in its own transaction, so the sim's books survive a
rollback or crash of the copier, like a real venue's. It deduplicates on
the client order id as real venues do, which is what makes a resent order
harmless. Fault injection (outage, fail / reject / time out the next N
orders) drives the copier's failure paths in tests, replay and the demo.
"""

from __future__ import annotations

import uuid

from django.db import transaction
from django.db.models import F

from brokers.base import (
    BrokerAdapter,
    BrokerError,
    BrokerEvent,
    Fill,
    OrderOutcomeUnknown,
    OrderRequest,
    OrderResult,
    PermanentBrokerError,
    Side,
    TransientBrokerError,
)
from brokers.models import SimAccount, SimOrder, SimPosition
from copier import clock

DB = "broker"


def _signed(side: str, qty: int) -> int:
    return qty if side == "buy" else -qty


def _result(order: SimOrder) -> OrderResult:
    return OrderResult(
        client_order_id=order.client_order_id or "",
        broker_order_id=f"SIM-{order.pk}",
        status="filled" if order.status == SimOrder.Status.FILLED else "rejected",
        filled_qty=order.qty if order.status == SimOrder.Status.FILLED else 0,
        message=order.message,
    )


class SimBroker(BrokerAdapter):
    kind = "sim"
    label = "Sim (paper broker)"

    # --- the book -------------------------------------------------------------
    def _book(self, *, lock: bool) -> SimAccount:
        book, _ = SimAccount.objects.using(DB).get_or_create(account_id=self.account.pk)
        if lock:
            book = SimAccount.objects.using(DB).select_for_update().get(pk=book.pk)
        return book

    def _apply_fill(
        self, book: SimAccount, symbol: str, side: Side, qty: int, *,
        client_order_id: str | None, fill_id: str | None, delivered: bool = False,
    ) -> SimOrder:
        position, _ = SimPosition.objects.using(DB).get_or_create(book=book, symbol=symbol)
        SimPosition.objects.using(DB).filter(pk=position.pk).update(
            qty=F("qty") + _signed(side, qty)
        )
        return SimOrder.objects.using(DB).create(
            book=book, client_order_id=client_order_id,
            fill_id=fill_id or f"simfill-{uuid.uuid4().hex[:16]}",
            symbol=symbol, side=side, qty=qty, status=SimOrder.Status.FILLED,
            created_at=clock.now(), missed=not book.reachable, delivered=delivered,
        )

    # --- BrokerAdapter ----------------------------------------------------------
    def connect(self) -> None:
        """A new session streams from now on; what happened before is in `positions()`."""
        with transaction.atomic(using=DB):
            book = self._book(lock=True)
            if not book.reachable:
                raise TransientBrokerError("sim: broker unreachable (outage)")
            SimOrder.objects.using(DB).filter(book=book, delivered=False, missed=False).update(
                missed=True
            )

    def disconnect(self) -> None:
        """Nothing to close: the sim has no socket."""

    def place_order(self, request: OrderRequest) -> OrderResult:
        if request.qty <= 0:
            raise PermanentBrokerError(f"sim: invalid quantity {request.qty}")
        outcome: BrokerError | None = None
        with transaction.atomic(using=DB):
            book = self._book(lock=True)
            if not book.reachable:
                raise TransientBrokerError("sim: broker unreachable (outage)")
            existing = (
                SimOrder.objects.using(DB)
                .filter(book=book, client_order_id=request.client_order_id).first()
            )
            if existing is not None:
                return _result(existing)
            if book.fail_next:
                book.fail_next -= 1
                book.save(using=DB, update_fields=["fail_next"])
                outcome = TransientBrokerError("sim: HTTP 503 Service Unavailable (injected)")
            elif book.reject_next or book.closed:
                if book.reject_next:
                    book.reject_next -= 1
                    book.save(using=DB, update_fields=["reject_next"])
                reason = "account closed" if book.closed else "order rejected (injected)"
                order = SimOrder.objects.using(DB).create(
                    book=book, client_order_id=request.client_order_id,
                    fill_id=f"simrej-{uuid.uuid4().hex[:16]}", symbol=request.symbol,
                    side=request.side, qty=request.qty, status=SimOrder.Status.REJECTED,
                    message=f"sim: {reason}", created_at=clock.now(), delivered=True,
                )
                outcome = PermanentBrokerError(order.message)
            else:
                order = self._apply_fill(
                    book, request.symbol, request.side, request.qty,
                    client_order_id=request.client_order_id, fill_id=None,
                )
                if book.timeout_next:
                    book.timeout_next -= 1
                    book.save(using=DB, update_fields=["timeout_next"])
                    outcome = OrderOutcomeUnknown("sim: timeout waiting for the order (injected)")
                else:
                    return _result(order)
        raise outcome

    def find_order(self, client_order_id: str) -> OrderResult | None:
        if not self._book(lock=False).reachable:
            raise TransientBrokerError("sim: broker unreachable (outage)")
        order = (
            SimOrder.objects.using(DB)
            .filter(book__account_id=self.account.pk, client_order_id=client_order_id).first()
        )
        return _result(order) if order else None

    def positions(self) -> dict[str, int]:
        book = self._book(lock=False)
        if not book.reachable:
            raise TransientBrokerError("sim: broker unreachable (outage)")
        return dict(
            SimPosition.objects.using(DB).filter(book=book).exclude(qty=0)
            .order_by("symbol").values_list("symbol", "qty")
        )

    def poll_events(self) -> list[BrokerEvent]:
        with transaction.atomic(using=DB):
            book = self._book(lock=True)
            if not book.reachable:
                raise TransientBrokerError("sim: stream down (outage)")
            rows = list(
                SimOrder.objects.using(DB).select_for_update()
                .filter(book=book, delivered=False, missed=False, status=SimOrder.Status.FILLED)
                .order_by("id")
            )
            SimOrder.objects.using(DB).filter(pk__in=[r.pk for r in rows]).update(delivered=True)
        return [
            Fill(fill_id=r.fill_id, symbol=r.symbol, side=r.side, qty=r.qty,  # type: ignore[arg-type]
                 time=r.created_at, client_order_id=r.client_order_id)
            for r in rows
        ]

    # --- the sim's own controls (demo, replay, tests) ------------------------------
    def execute_fill(self, symbol: str, side: Side, qty: int, fill_id: str | None = None) -> str:
        """A trade made at the broker outside the copier (the leader's or a manual one).

        While the broker is unreachable the trade still happens, unseen by the
        copier's stream. Returns the fill id.
        """
        if qty <= 0:
            raise ValueError(f"quantity must be > 0, got {qty}")
        with transaction.atomic(using=DB):
            book = self._book(lock=True)
            if fill_id is not None:
                # The same fill id again is the stream delivering that fill twice,
                # not a second trade: the book does not move.
                again = SimOrder.objects.using(DB).filter(book=book, fill_id=fill_id)
                if again.update(delivered=False, missed=not book.reachable):
                    return fill_id
            return self._apply_fill(
                book, symbol, side, qty, client_order_id=None, fill_id=fill_id
            ).fill_id

    def set_reachable(self, reachable: bool) -> None:
        SimAccount.objects.using(DB).filter(pk=self._book(lock=False).pk).update(
            reachable=reachable
        )

    def inject(self, *, fail: int = 0, reject: int = 0, timeout: int = 0) -> None:
        """Make the next orders fail (transient), be rejected (permanent) or time out."""
        if min(fail, reject, timeout) < 0:
            raise ValueError("fault counts must be >= 0")
        SimAccount.objects.using(DB).filter(pk=self._book(lock=False).pk).update(
            fail_next=F("fail_next") + fail,
            reject_next=F("reject_next") + reject,
            timeout_next=F("timeout_next") + timeout,
        )

