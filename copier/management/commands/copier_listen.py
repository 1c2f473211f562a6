"""`manage.py copier_listen`: keep every copied account's broker stream (copier.stream.process).

Run one or more: each takes the accounts no other listener holds, and takes over
those of a listener that dies. SIGTERM or SIGINT closes the streams, marks the
accounts disconnected, releases their leases and exits 0.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from copier.shell.celery import heap_freeze
from copier.stream.process import SCAN_SECONDS, Listener

# A turn touches the heartbeat every second; a lease connection lost takes ~4 s to notice
# and a reconnect backs off, so this is generous without hiding a stuck listener.
HEALTH_MAX_AGE = 60.0


class Command(BaseCommand):
    help = "Keep the broker stream of every account of every enabled copy group."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", default=None,
                            help="this listener's name on the accounts it streams "
                                 "(default: host:pid)")
        parser.add_argument("--heartbeat", type=Path, default=None,
                            help="a file to touch after each scan with a live lease "
                                 "connection (for --health)")
        parser.add_argument("--health", type=Path, default=None, metavar="HEARTBEAT",
                            help="do not listen: exit 0 if the listener touched this "
                                 "heartbeat file within --max-age seconds (health check)")
        parser.add_argument("--max-age", type=float, default=HEALTH_MAX_AGE,
                            help=f"for --health (default {HEALTH_MAX_AGE:.0f} s)")
        parser.add_argument("--scan-seconds", type=float, default=SCAN_SECONDS,
                            help=f"how often to look for account changes (default "
                                 f"{SCAN_SECONDS} s)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["health"] is not None:
            self._health(options["health"], options["max_age"])
            return
        listener = Listener(options["name"], scan_seconds=options["scan_seconds"],
                            heartbeat=options["heartbeat"])
        heap_freeze()  # the head of the copy path: no full collection walks its startup heap

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, listener.stop)
            await listener.run()

        asyncio.run(main())

    def _health(self, heartbeat: Path, max_age: float) -> None:
        """The container's health check: the listener's own turns say it works (it reached
        PostgreSQL and scanned), which its process merely existing does not."""
        try:
            age = time.time() - heartbeat.stat().st_mtime
        except FileNotFoundError:
            raise CommandError(f"no heartbeat at {heartbeat}: the listener never "
                               f"completed a turn") from None
        if age > max_age:
            raise CommandError(f"the listener's last turn was {age:.0f} s ago "
                               f"(lease connection lost or the listener stuck)")
        self.stdout.write(f"listener alive: last turn {age:.1f} s ago")
