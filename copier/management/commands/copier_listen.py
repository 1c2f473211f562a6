"""`manage.py copier_listen`: keep every copied account's broker stream (copier.listen).

Run one or more: each takes the accounts no other listener holds, and takes over
those of a listener that dies. SIGTERM or SIGINT closes the streams, marks the
accounts disconnected, releases their leases and exits 0.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from copier.listen import SCAN_SECONDS, Listener


class Command(BaseCommand):
    help = "Keep the broker stream of every account of every enabled copy group."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", default=None,
                            help="this listener's name on the accounts it streams "
                                 "(default: host:pid)")
        parser.add_argument("--scan-seconds", type=float, default=SCAN_SECONDS,
                            help=f"how often to look for account changes (default "
                                 f"{SCAN_SECONDS} s)")

    def handle(self, *args: Any, **options: Any) -> None:
        listener = Listener(options["name"], scan_seconds=options["scan_seconds"])

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, listener.stop)
            await listener.run()

        asyncio.run(main())
