"""Tradovate's records as the copier reads them: order statuses, refusals, sides, numbers.

Shared by the adapter (REST answers) and the stream (the socket's entity pushes), which
carry the same entities: an order's `ordStatus`, a refusal's `failureReason`, a fill's
`action` (Buy / Sell), and the whole numbers (ids, quantities, positions) they hold.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Mapping
from typing import Any

from brokers.base import (
    BrokerError,
    OrderStatus,
    PermanentBrokerError,
    TransientBrokerError,
    venue_text,
)
from core import clock
from core.trading import Side

LABEL = "Tradovate"
CAPTCHA_WAIT = 3600.0  # a penalty with p-captcha: "try again in an hour"
# failureReasons a retry can clear without a person: the venue was busy, had no price, or
# the session was closed (it reopens). Everything else (AccountClosed, TradingLocked, the
# position and quantity limits, InvalidContract, Unauthorized, UnknownReason...) needs a
# person: a prop firm's TradingLocked lasts the day and a retry loop only burns requests.
TRANSIENT_FAILURES = frozenset({
    "AnotherCommandPending", "ExecutionProviderUnavailable", "RiskCheckTimeout", "NoQuote",
    "NotEnoughLiquidity", "SessionClosed", "TooLate",
})
# AccountRiskStatus adminActions under which the account can no longer open a position
# (liquidate-only, locked, being liquidated), and those under which it trades as usual.
STOPPING_ACTIONS = frozenset({
    "LiquidateOnlyModeImmediately", "LockTradingImmediately", "LiquidateImmediately",
    "AgreedOnLiqOnlyModeByAutoLiq", "AgreedOnLiquidationByAutoLiq",
})
TRADING_ACTIONS = frozenset({"Normal", "DisableAutoLiq", "PlaceAutoLiqOnHold"})


def risk_standing(status: Mapping[str, Any]) -> tuple[bool | None, str]:
    """Whether an `accountRiskStatus` lets the account trade, and why not: False under a
    stopping admin action or liquidate-only, True under a trading one, None (it says
    nothing) under an action the copier does not know, or one that is not a name at all.
    The adapter's read and the stream's push of the entity are judged alike."""
    action, since = status.get("adminAction"), status.get("liquidateOnly")
    named = action if isinstance(action, str) else ""
    if named in STOPPING_ACTIONS:
        return False, f"adminAction {named}"
    if since:
        who = " by the user" if status.get("userTriggeredLiqOnly") is True else ""
        return False, f"liquidate-only{who} since {venue_text(since, 40)}"
    if action is None or named in TRADING_ACTIONS:
        return True, ""
    return None, ""


DONE_STATUSES = frozenset({"Filled", "Completed", "Canceled", "Expired", "Rejected"})
# An order still able to fill: what a flatten cancels (PendingCancel is already going).
WORKING_STATUSES = frozenset({"Working", "PendingNew", "PendingReplace", "Suspended"})


def time_of(value: object) -> dt.datetime:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            at = dt.datetime.fromisoformat(value)
            return at if at.tzinfo else at.replace(tzinfo=dt.UTC)
    return clock.now()


def whole(value: object, what: str) -> int:
    """A venue field that must be a whole number; ValueError (the record is unreadable)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{LABEL}: {what} {value!r} is not a whole number")
    return value


def side_of(action: object) -> Side:
    if action == "Buy":
        return Side.BUY
    if action == "Sell":
        return Side.SELL
    raise PermanentBrokerError(f"{LABEL}: unknown action {action!r}")



def settlement(status: str, qty: int, filled: int) -> tuple[OrderStatus, int]:
    """The copier's status of an order of `ordStatus` `status` that filled `filled` of
    `qty`: all filled is filled whatever the status says; a done order short of its
    quantity was cancelled (what it filled stays filled); a rejected one filled nothing."""
    if (qty > 0 and filled >= qty) or status == "Filled":
        return OrderStatus.FILLED, max(filled, qty)
    if status == "Rejected" and not filled:
        return OrderStatus.REJECTED, 0
    if status in DONE_STATUSES:
        return OrderStatus.CANCELLED, filled
    return OrderStatus.ACCEPTED, filled


def accounts_named(listed: list[dict[str, Any]]) -> str:
    """The accounts a login lists, short: names cut, at most ten."""
    return ", ".join(f"{venue_text(a.get('name'), 40)} ({venue_text(a.get('id'), 20)})"
                     for a in listed[:10]) or "none"


def refusal(answer: dict[str, Any]) -> BrokerError | None:
    """The venue's refusal inside an HTTP 200, as the error kind a retry can or cannot fix."""
    reason = answer.get("failureReason")
    if (reason in (None, "", "Success")) and not answer.get("errorText"):
        return None
    text = venue_text(answer.get("failureText") or answer.get("errorText"))
    message = (f"{LABEL}: order refused: {venue_text(reason, 40) or 'error'}"
               + (f": {text}" if text else ""))
    if reason in TRANSIENT_FAILURES:
        return TransientBrokerError(message)
    return PermanentBrokerError(message)


