"""Seed the demo: a sim leader, three followers (x1, x2, x0.5) and a reverse group. Idempotent."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.models import TradingAccount
from copier.models import CopyGroup, Follower
from copier.services.stream_events import broker_events_pump

LEADER = "DEMO-LEADER"
GROUPS = {
    "demo": (False, {"DEMO-F1": "1", "DEMO-F2": "2", "DEMO-F3": "0.5"}),
    "demo-reverse": (True, {"DEMO-R1": "1"}),
}


class Command(BaseCommand):
    help = "Create the demo group of sim accounts (does nothing if it exists)."

    def handle(self, *args: Any, **options: Any) -> None:
        created = 0
        with transaction.atomic():
            leader, new = TradingAccount.objects.get_or_create(name=LEADER,
                                                               defaults={"broker": "sim"})
            created += new
            for name, (reverse, followers) in GROUPS.items():
                group, new = CopyGroup.objects.get_or_create(
                    name=name, defaults={"leader": leader, "reverse": reverse}
                )
                created += new
                for account_name, multiplier in followers.items():
                    account, new = TradingAccount.objects.get_or_create(
                        name=account_name, defaults={"broker": "sim"}
                    )
                    created += new
                    _, new = Follower.objects.get_or_create(
                        account=account,
                        defaults={"group": group, "multiplier": Decimal(multiplier)},
                    )
                    created += new
        for account in TradingAccount.objects.filter(name__startswith="DEMO-"):
            broker_events_pump(account=account)  # the listener's first connect
        if created:
            self.stdout.write(f"demo seeded: {created} rows created (leader {LEADER}, "
                              f"groups {', '.join(GROUPS)})")
        else:
            self.stdout.write("demo already there: nothing changed")
