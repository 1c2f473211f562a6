"""The `sim` paper broker's books.

They live in the project's database so that the web, the worker and the CLI
see the same accounts, but the sim writes them on its own connection
(`using="broker"`): what it executed stays executed even when the copier's
transaction rolls back, exactly as at a real broker.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from core.fields import EncryptedTextField


class SimAccount(models.Model):
    """Fault injection switches and reachability of one account at the sim broker."""

    account = models.OneToOneField(
        "accounts.TradingAccount", on_delete=models.CASCADE, related_name="sim_book"
    )
    reachable = models.BooleanField(default=True)
    fail_next = models.PositiveIntegerField(
        default=0, help_text="Fail this many next orders with a transient error (HTTP 503)."
    )
    reject_next = models.PositiveIntegerField(
        default=0, help_text="Reject this many next orders for good."
    )
    timeout_next = models.PositiveIntegerField(
        default=0, help_text="Execute this many next orders but lose the answer (timeout)."
    )
    closed = models.BooleanField(default=False, help_text="Reject every order: account closed.")
    lookup_fail_next = models.PositiveIntegerField(
        default=0, help_text="Fail this many next order look-ups with a transient error."
    )
    cash = models.DecimalField(
        max_digits=14, decimal_places=2, default=50000,
        help_text="The account's balance before its first fill (its equity adds every fill's "
        "P&L): what a prop firm's starting balance is.")
    hold_next = models.PositiveIntegerField(
        default=0, help_text="Acknowledge this many next orders as working and fill none of "
        "them until told (fill_held / cancel_held)."
    )

    def __str__(self) -> str:
        return f"sim book of {self.account}"


class SimPosition(models.Model):
    book = models.ForeignKey(SimAccount, on_delete=models.CASCADE, related_name="positions")
    symbol = models.CharField(max_length=32)
    qty = models.BigIntegerField(default=0)  # the sim states what a test makes it hold

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["book", "symbol"], name="simposition_book_symbol")
        ]

    def __str__(self) -> str:
        return f"{self.symbol}={self.qty:+d}"


class SimOrder(models.Model):
    """An order or manual fill at the sim broker; filled ones are the stream's fills.

    A held order (`SimAccount.hold_next`) is a row of its own that is no fill: `working`
    while open, `complete` once all of it filled, `cancelled` when its rest was cancelled.
    Each part that fills is a `filled` row of its own (`parent`: the held order, whose
    client order id the part's fill carries), so every part has its own fill id, price and
    place in the book's order numbering (`fills_cursor`). A held order that settles is
    made undelivered again: the stream then says so (`OrderUpdate`), after its fills.
    """

    class Status(models.TextChoices):
        FILLED = "filled"
        REJECTED = "rejected"
        WORKING = "working", "Held: working"
        COMPLETE = "complete", "Held: filled (in its parts)"
        CANCELLED = "cancelled", "Held: rest cancelled"

    book = models.ForeignKey(SimAccount, on_delete=models.CASCADE, related_name="orders")
    client_order_id = models.CharField(max_length=64, null=True, blank=True)
    fill_id = models.CharField(max_length=64)
    symbol = models.CharField(max_length=32)
    side = models.CharField(max_length=4)
    qty = models.PositiveBigIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices)
    message = models.TextField(blank=True, default="")
    # A held order: what of it has filled (None: not a held order).
    filled_qty = models.PositiveBigIntegerField(null=True, blank=True)
    # A part fill of a held order. No index: the part is found through its parent's row.
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE,
                               related_name="parts", db_index=False)
    created_at = models.DateTimeField()
    # Where it filled: a trade made at the sim may say (`execute_fill(price=...)`), an order
    # fills at the symbol's last price (SimQuote). None: no price known, its P&L unvalued.
    price = models.DecimalField(max_digits=18, decimal_places=6, null=True, blank=True)
    # Stream bookkeeping: `missed` fills happened while the stream was down.
    delivered = models.BooleanField(default=False)
    missed = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["book", "client_order_id"],
                condition=Q(client_order_id__isnull=False),
                name="simorder_unique_client_order_id",
            ),
            models.UniqueConstraint(fields=["book", "fill_id"], name="simorder_unique_fill_id"),
        ]
        indexes = [
            models.Index(
                fields=["book", "id"],
                condition=Q(delivered=False, missed=False),
                name="simorder_undelivered",
            )
        ]
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.side} {self.qty} {self.symbol} ({self.status})"



class SimQuote(models.Model):
    """The sim's market: the last price of a symbol, set by a priced trade or by hand
    (`SimBroker.price_set`). Orders of every book fill there."""

    symbol = models.CharField(max_length=32, unique=True)
    price = models.DecimalField(max_digits=18, decimal_places=6)
    updated_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.symbol} @ {self.price}"


class BrokerSession(models.Model):
    """A venue login of one account: obtained and renewed by the account's owning listener,
    read by the workers that place its orders (one session per account, not per order).

    The token is encrypted at rest like the credentials; `data` holds what the venue
    answered with it that orders need (user id, the venue's account id), never a secret.
    """

    account = models.OneToOneField(
        "accounts.TradingAccount", on_delete=models.CASCADE, related_name="broker_session"
    )
    token = EncryptedTextField()
    expires_at = models.DateTimeField()
    data = models.JSONField(default=dict, blank=True)
    obtained_at = models.DateTimeField()
    obtained_by = models.CharField(
        max_length=128, blank=True, default="", help_text="The listener that logged in."
    )

    def __str__(self) -> str:
        return f"session of account {self.account_id} until {self.expires_at:%Y-%m-%d %H:%M}"
