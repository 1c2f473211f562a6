"""Reset a user's second factor from the command line: a lost phone, no superuser at hand.

`manage.py copier_reset_2fa alice` removes alice's authenticator app and recovery codes:
her next login asks for no code (and, where two-factor login is required, for a new
enrolment first). Recorded in the audit log as cli:<login> (or --by).
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from copier.management.commands._killswitch_args import actor
from copier.services.second_factor import enrolment_required, second_factor_reset


class Command(BaseCommand):
    help = ("Remove a user's two-factor devices (authenticator app and recovery codes); "
            "recorded in the audit log.")

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("username", help="The user whose second factor is reset.")
        parser.add_argument("--by", default="", help="Who acts (default: cli:<login user>).")

    def handle(self, *args: Any, **options: Any) -> None:
        model = get_user_model()
        user = model._default_manager.filter(
            **{model.USERNAME_FIELD: options["username"]}).first()
        if user is None:
            raise CommandError(f"no such user: {options['username']}")
        removed = second_factor_reset(user=user, by=actor(options))
        then = (" and to set up two-factor login again before anything else"
                if enrolment_required(user) else "")
        self.stdout.write(f"{user.get_username()}: {removed} device(s) removed. The next "
                          f"login asks for no code{then}.")
