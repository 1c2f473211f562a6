"""Encrypt every stored secret again with the first key of COPIER_ENCRYPTION_KEY.

Rotating a key (README, "Production"): put the new key first in COPIER_ENCRYPTION_KEY,
the old one after it (`NEW,OLD`), restart every process; run `manage.py
copier_rotate_key`; then remove the old key and restart again. Says how many secrets
of each kind were encrypted again, never a value; running it twice changes nothing.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from copier.services import key_rotation


class Command(BaseCommand):
    help = ("Encrypt every stored secret (account credentials, venue sessions, webhook URLs, "
            "authenticator keys) again with the first key of COPIER_ENCRYPTION_KEY, in one "
            "transaction.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            counts = key_rotation.secrets_rotate()
        except key_rotation.UnreadableSecret as exc:
            raise CommandError(str(exc)) from None
        for row in counts:
            self.stdout.write(f"{row.column}: {row.rotated} encrypted again, "
                              f"{row.current} already under the first key")
        rotated = sum(row.rotated for row in counts)
        current = sum(row.current for row in counts)
        self.stdout.write(f"{rotated} secrets encrypted again with the first key, {current} "
                          "already under it.")
        if key_rotation.keys_count() > 1:
            self.stdout.write("Every stored secret is now under the first key: remove the "
                              "other keys from COPIER_ENCRYPTION_KEY, then restart every "
                              "process.")
        else:
            self.stdout.write("COPIER_ENCRYPTION_KEY has one key: to rotate it, put a new "
                              "key before it (NEW,OLD), restart, and run this again.")
