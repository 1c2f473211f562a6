"""Trading accounts, their connection state and the copier's confirmed positions."""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.db.models.functions import MD5

from accounts.symbols import normalise_symbol
from brokers.base import BOUND_KEY, addresses_digest
from brokers.registry import BROKERS, adapter_class, broker_choices
from core.fields import EncryptedTextField, Secret


class ConnectionState(models.TextChoices):
    UNKNOWN = "unknown", "Unknown"
    CONNECTED = "connected", "Connected"
    DISCONNECTED = "disconnected", "Disconnected"


class TradingAccount(models.Model):
    """One account at one broker; a leader or a follower, never both (see copier.Follower)."""

    name = models.CharField(max_length=64, unique=True)
    broker = models.CharField(max_length=32, choices=broker_choices, default="sim")
    external_id = models.CharField(
        "broker-side account id", max_length=128, blank=True,
        help_text="The account's id at the broker (empty for sim: the name is used).",
    )
    credentials = EncryptedTextField(
        blank=True, default="",
        help_text="Broker login or API token, JSON. Encrypted at rest, never logged.",
    )
    # The stored token's digest, computed by PostgreSQL: whether the credentials changed,
    # known without reading (and decrypting) them. The copy's lock statement leaves the
    # credentials out; the adapter cache (`brokers.registry.adapter_for`) compares this.
    credentials_md5 = models.GeneratedField(
        expression=MD5("credentials"), output_field=models.CharField(max_length=32),
        db_persist=True,
    )
    connection_state = models.CharField(
        max_length=16, choices=ConnectionState.choices, default=ConnectionState.UNKNOWN
    )
    connection_changed_at = models.DateTimeField(null=True, blank=True)
    last_connected_at = models.DateTimeField(null=True, blank=True)
    last_disconnected_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    copy_paused = models.BooleanField(
        default=False, help_text="Set by the Sync Divergence Guard; clears by itself on heal."
    )
    pause_reason = models.TextField(blank=True, default="")
    pause_details = models.JSONField(default=dict, blank=True)
    paused_since = models.DateTimeField(null=True, blank=True)
    # A reconnect found the broker different while a run of the copier's own was in flight
    # for the account (its order may be the difference): the comparison waits until that run
    # is decided (copier.services.sync_guard, `comparisons_deferred_run`); meanwhile nothing
    # new is sent to the account and its queued exits wait.
    compare_pending_since = models.DateTimeField(
        null=True, blank=True, editable=False,
        help_text="A reconnect's comparison of positions waits for a copy in flight since.",
    )
    # Where the last reconnect's (or re-read's) positions stand on the broker's stream:
    # a fill it delivers later, numbered at or below the cursor (or, unnumbered, from
    # before the read), is in those positions already and is not counted again.
    reconciled_fill_seq = models.BigIntegerField(
        null=True, blank=True, editable=False,
        help_text="The broker's number of the newest fill in the positions last re-read.",
    )
    reconciled_at = models.DateTimeField(
        null=True, blank=True, editable=False,
        help_text="When the positions were last re-read from the broker.",
    )
    # Which listener holds the account's stream (its lease is a PostgreSQL advisory lock
    # held by that listener's session; these two say who, for the operator).
    stream_owner = models.CharField(
        max_length=128, blank=True, default="", editable=False,
        help_text="The copier_listen process that holds this account's stream.",
    )
    stream_owned_since = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    # The secret fields a person typed in this edit (the admin's form says so): one typed
    # again may equal the stored value, and is then bound to the addresses saved with it.
    # Not a column; cleared by each save.
    secrets_entered: frozenset[str] = frozenset()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        fields = kwargs.get("update_fields")
        if ("credentials" not in self.get_deferred_fields()
                and (fields is None or "credentials" in fields)):
            self.credentials_bind()
        super().save(*args, **kwargs)
        self.secrets_entered = frozenset()

    def clean(self) -> None:
        self.name = self.name.strip()
        if not self.name:
            raise ValidationError({"name": "An account needs a name."})
        self.credentials_bind()

    def credentials_bind(self) -> None:
        """Bind the login's secrets to the venue addresses they were entered for.

        A secret is only ever sent where it was typed for: the adapters refuse a login
        whose addresses are not the ones its binding names (`BrokerAdapter.credentials_read`).
        Secrets new in this save (a different value, a new account, or typed again:
        `secrets_entered`) are bound to the addresses saved with them; a secret kept from
        the stored row keeps its binding, so a changed address with a kept secret is
        refused here (ValidationError, nothing stored), whoever writes the row.
        """
        if self.broker not in BROKERS:
            return
        adapter = adapter_class(self.broker)
        secrets = [f for f in adapter.credential_fields if f.secret]
        new = _login(self.credentials)
        if not secrets or new is None:
            return  # no login to bind: the adapter refuses what is not one, at its use
        try:
            bound = adapter.credentials_bound(new)
        except ValueError:
            # not a valid login: refused at its use; it carries no binding of its own
            new.pop(BOUND_KEY, None)
            self.credentials = Secret(json.dumps(new))
            return
        old = self._login_stored()
        kept = [f.label for f in secrets if new.get(f.name) and new.get(f.name) ==
                old.get(f.name) and f.name not in self.secrets_entered]
        if kept and _binding_of(adapter, old) != bound[BOUND_KEY]:
            raise ValidationError(
                f"The venue address changed, so the stored {' and '.join(kept)} must be typed "
                "again: a secret is only ever sent to the address it was entered for.")
        self.credentials = Secret(json.dumps(bound))

    def _login_stored(self) -> dict[str, str]:
        """The login as the database holds it for this account and kind ({} if none)."""
        if self.pk is None:
            return {}
        stored = (TradingAccount.objects.filter(pk=self.pk, broker=self.broker)
                  .values_list("credentials", flat=True).first())
        return _login(stored) or {}

    @property
    def is_connected(self) -> bool:
        return self.connection_state == ConnectionState.CONNECTED


def _login(value: object) -> dict[str, str] | None:
    """A stored login as a dict; None when empty or not a JSON object."""
    try:
        parsed = json.loads(str(value or "") or "null")
    except ValueError:
        return None
    if not isinstance(parsed, dict):
        return None
    return {str(k): str(v) for k, v in parsed.items() if v is not None}


def _binding_of(adapter: Any, login: dict[str, str]) -> str | None:
    """What a stored login's secrets are bound to. A row bound before bindings existed is
    bound to its own addresses (the migration binds every row; this covers a restore)."""
    if BOUND_KEY in login:
        return login[BOUND_KEY]
    addresses = adapter.credentials_addresses_of(login)
    return None if addresses is None else addresses_digest(adapter.kind, addresses)


class Position(models.Model):
    """The copier's confirmed position (account, symbol): `C` for a follower, `P` for a leader.

    It moves only on what the broker confirmed (our fills, fills seen on the
    stream, a reconnect's position fetch). Its row is also the lock that
    serialises every evaluation of (account, symbol), and `last_event_id` is
    the watermark of the leader events already decided for it, so that a
    redelivered or reordered task can neither skip nor repeat an event.
    """

    account = models.ForeignKey(TradingAccount, on_delete=models.CASCADE, related_name="positions")
    symbol = models.CharField(max_length=32)
    # 64-bit: a 32-bit column stored a venue's 3,000,000,000 as -1,294,967,296 (server-side
    # binding). What a venue states is range-checked before it is stored
    # (copier.domain.rules.MAX_VENUE_QTY); the width holds whatever the copier adds up from it.
    qty = models.BigIntegerField(default=0)
    last_event_id = models.BigIntegerField(null=True, blank=True)
    # What the broker's stream last said the position is, while that disagrees with
    # `qty`: a venue may state a position before the fill that made it. Cleared as
    # soon as the fills bring `qty` there; applied if they do not within the grace.
    broker_qty = models.BigIntegerField(null=True, blank=True, editable=False)
    broker_qty_since = models.DateTimeField(null=True, blank=True, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    # Read with the row by the engine's lock statement, never stored: whether an active
    # quarantine covers the symbol, whether an order of it has an unknown outcome or is
    # still working at the broker, and (set by the engine) why nothing may be sent now.
    quarantined: bool = False
    unknown_orders: bool = False
    working_orders: bool = False
    blocked: str = ""

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "symbol"], name="position_account_symbol")
        ]
        indexes = [
            models.Index(fields=["broker_qty_since"], condition=Q(broker_qty__isnull=False),
                         name="position_disagreement")
        ]
        ordering = ["account", "symbol"]

    def __str__(self) -> str:
        return f"{self.account}:{self.symbol}={self.qty:+d}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.symbol = normalise_symbol(self.symbol)
        super().save(*args, **kwargs)


class FollowerFill(models.Model):
    """A fill counted from a follower's stream, by the broker's fill id.

    A broker may deliver a fill twice: the second delivery finds this row and
    moves nothing. Kept for the fills no recorded order of the copier's owns (the
    trader's) and for the parts of our own orders that were still working when the
    venue answered.
    """

    account = models.ForeignKey(TradingAccount, on_delete=models.CASCADE, related_name="+")
    fill_id = models.CharField("broker fill id", max_length=128)
    seen_at = models.DateTimeField()
    # A fill counted as the trader's (no recorded order of the copier's owned it), with the
    # ids of the order that made it: an order of ours whose row a crash rolled back, looked
    # up and recorded later, finds here what of it the position already holds
    # (copier.services.placement, `_fills_claimed`). Empty for our own orders' fills.
    client_order_id = models.CharField(max_length=64, blank=True, default="")
    broker_order_id = models.CharField(max_length=64, blank=True, default="")
    side = models.CharField(max_length=4, blank=True, default="")
    qty = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "fill_id"], name="followerfill_unique")
        ]

    def __str__(self) -> str:
        return f"{self.account_id}:{self.fill_id}"
