"""Stop or resume the copying of entries from the command line (the kill switch).

`manage.py copier_kill stop --group g` (or `--all`): the groups go exits only, their
followers still follow the leader's exits until flat. `copier_kill resume ...` sets
them active again. To also close what is held, `copier_flatten`.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from copier.management.commands._killswitch_args import actor, targets_add, targets_parse
from copier.services import killswitch


class Command(BaseCommand):
    help = "Stop (exits only) or resume the copying of entries for copy groups."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("what", choices=["stop", "resume"],
                            help="stop: exits only; resume: active again.")
        targets_add(parser, followers=False)

    def handle(self, *args: Any, **options: Any) -> None:
        groups, _followers = targets_parse(options)
        switch = killswitch.entries_stop if options["what"] == "stop" else (
            killswitch.entries_resume)
        action = switch(groups=groups, by=actor(options))
        self.stdout.write(f"#{action.pk} by {action.by}: {action.detail}")
