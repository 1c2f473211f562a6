"""What the copier refused from a broker: kept for a person, never dropped silently.

A fill or a position statement it cannot take (a contract the venue's look-up does not
know, a number no account holds, a malformed record) is one `RefusedFill` row with its
reason (docs/rules.md#refused-and-duplicate-fills). The stream and the
positions read that carried it go on with the rest.
"""

from __future__ import annotations

import logging

from accounts.models import TradingAccount
from brokers.base import Unreadable
from copier.models import RefusedFill
from core import clock

log = logging.getLogger(__name__)


def refused_record(*, account: TradingAccount, record: Unreadable) -> RefusedFill:
    """One refused fill or statement, with its reason (and logged)."""
    log.error("%s: %s refused (%s): %s", account.name,
              "fill" if record.kind == "fill" else "position statement", record.reason,
              record.payload)
    return RefusedFill.objects.create(
        account=account, kind=record.kind, fill_id=record.fill_id[:128],
        payload=dict(record.payload), reason=record.reason, received_at=clock.now())
