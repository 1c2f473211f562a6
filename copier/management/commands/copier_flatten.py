"""Flatten followers from the command line: the kill switch when the admin is out of reach.

`manage.py copier_flatten --group g [--follower F1 ...] [--all] [--yes]` prints every
order it would send (from the copier's confirmed positions), asks unless `--yes`,
flattens, and prints what was sent. The followers are left exits only. Stopping or
resuming entries without flattening is `copier_kill`.
"""

from __future__ import annotations

import sys
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from copier.management.commands._killswitch_args import actor, targets_add, targets_parse
from copier.services import killswitch


class Command(BaseCommand):
    help = ("Close every position of the chosen followers with market orders and leave them "
            "exits only (asks for confirmation unless --yes).")
    stealth_options = ("stdin",)

    def add_arguments(self, parser: ArgumentParser) -> None:
        targets_add(parser, followers=True)
        parser.add_argument("--yes", action="store_true", help="Do not ask for confirmation.")

    def handle(self, *args: Any, **options: Any) -> None:
        groups, followers = targets_parse(options)
        plan = killswitch.flatten_plan(groups=groups, followers=followers)
        if plan:
            self.stdout.write(f"{len(plan)} order(s) to send:")
            for order in plan:
                self.stdout.write(f"  {order.describe()}")
        else:
            self.stdout.write("Nothing is open: no order to send.")
        self.stdout.write("Their working orders at the broker are cancelled first; "
                          "the followers are then left exits only.")
        if not options["yes"]:
            stdin = options.get("stdin") or sys.stdin
            self.stdout.write("Flatten and stop entries? [y/N] ", ending="")
            self.stdout.flush()
            if stdin.readline().strip().lower() not in ("y", "yes"):
                raise CommandError("not confirmed: nothing was sent")
        result = killswitch.flatten(groups=groups, followers=followers, by=actor(options))
        lines = result.lines()
        self.stdout.write(f"Flatten #{result.action.pk} by {result.action.by}:")
        for line in lines or ["nothing was open"]:
            self.stdout.write(f"  {line}")
