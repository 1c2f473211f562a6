"""Unlock a login that django-axes locked after repeated failures, and say which are locked.

`manage.py copier_unlock alice` clears alice's failed logins from every address;
`--ip 203.0.113.9` those from one address (for every user); both: that one pair.
`--list` shows who failed from where within the lock-out window. An unlock is recorded in
the audit log as cli:<login> (or --by). django-axes' own `axes_reset_username` and
`axes_reset_ip` do the same, unrecorded.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from copier.console.display import time_display
from copier.management.commands._killswitch_args import actor
from copier.services.lockout import lockouts_current, login_unlock


class Command(BaseCommand):
    help = ("Unlock a login locked after repeated failures (a user, an address, or both); "
            "--list shows the current ones. Recorded in the audit log.")

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("username", nargs="?", default="",
                            help="The user to unlock (from every address unless --ip).")
        parser.add_argument("--ip", default="", help="The client address to unlock.")
        parser.add_argument("--list", action="store_true",
                            help="Show the failed logins still counted, then stop.")
        parser.add_argument("--by", default="", help="Who acts (default: cli:<login user>).")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["list"]:
            self._list()
            return
        username, ip = options["username"], options["ip"]
        if not (username or ip):
            raise CommandError("say whom to unlock: a user name, --ip ADDRESS, or both "
                               "(--list shows who is locked)")
        cleared = login_unlock(username=username or None, ip=ip or None, by=actor(options))
        who = " from ".join(p for p in (username, ip) if p)
        if cleared:
            self.stdout.write(f"{who}: unlocked ({cleared} failed-login record(s) cleared).")
        else:
            self.stdout.write(f"{who}: nothing was locked or counted.")

    def _list(self) -> None:
        found = lockouts_current()
        if not found:
            self.stdout.write("No failed logins are counted now.")
            return
        limit = settings.AXES_FAILURE_LIMIT
        for lk in found:
            state = "LOCKED" if lk.locked else f"{lk.failures} of {limit}"
            self.stdout.write(f"{lk.username or '?'} from {lk.ip_address or '?'}: {state} "
                              f"(last {time_display(lk.last_attempt)})")
