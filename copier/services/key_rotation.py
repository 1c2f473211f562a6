"""Key rotation: every stored secret encrypted again with the first key of the list.

`COPIER_ENCRYPTION_KEY` may list several keys (core.keys): the first encrypts,
every one decrypts. A key is replaced in three steps: the new key is put first in
every process's list (the old one after it) and the processes restarted; then
`manage.py copier_rotate_key` (this service) encrypts every stored secret again with
the new key; then the old key is removed. Every column of an `EncryptedTextField` of
every installed model is rotated (trading account credentials, venue sessions, alert
webhook URLs, the operators' authenticator keys, and any added later), in one
transaction: either every secret is under the first key afterwards, or nothing changed.
A token already under the first key is left as it is, so a second run changes nothing
(and the credentials' digest,
`TradingAccount.credentials_md5`, which the adapter cache compares, stays the same for
it). PostgreSQL recomputes that generated digest with the token it is made of.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.apps import apps
from django.conf import settings
from django.db import models, transaction
from django.db.models.functions import Cast

from core.fields import EncryptedTextField
from core.keys import keys_split, multi_fernet, primary_fernet


class UnreadableSecret(Exception):
    """A stored secret no key of the list decrypts: rotating would lose it."""


@dataclass(frozen=True, slots=True)
class Rotated:
    """One encrypted column: secrets encrypted again, and those already under the first key."""

    column: str  # "accounts.TradingAccount.credentials"
    rotated: int
    current: int


def encrypted_columns() -> list[tuple[type[models.Model], EncryptedTextField]]:
    """Every encrypted column of the installed models (a proxy shares its model's table)."""
    return [(model, field) for model in apps.get_models()
            if not model._meta.proxy and model._meta.managed
            for field in model._meta.concrete_fields if isinstance(field, EncryptedTextField)]


def keys_count() -> int:
    return len(keys_split(settings.COPIER_ENCRYPTION_KEY))


def secrets_rotate() -> list[Rotated]:
    """Encrypt every stored secret again with the first key; counts per column, never a value.

    Raises UnreadableSecret (naming the column and row, nothing changed) if a secret is
    under none of the keys: its key was removed too early, or never given."""
    keys = settings.COPIER_ENCRYPTION_KEY
    every, first = multi_fernet(keys), primary_fernet(keys)
    with transaction.atomic():
        return [_column_rotate(model, field, every, first)
                for model, field in encrypted_columns()]


def _column_rotate(model: type[models.Model], field: EncryptedTextField,
                   every: MultiFernet, first: Fernet) -> Rotated:
    # The token as stored: cast to plain text, the field's decryption is not applied.
    rows = (model._base_manager.select_for_update().exclude(**{f"{field.name}__isnull": True})
            .exclude(**{field.name: ""}).annotate(stored=Cast(field.name, models.TextField()))
            .order_by("pk").values_list("pk", "stored"))
    column = f"{model._meta.label}.{field.name}"
    rotated = current = 0
    for pk, token in rows:
        if _is_under(first, token):
            current += 1
            continue
        try:
            fresh = every.rotate(token.encode()).decode()
        except InvalidToken:
            raise UnreadableSecret(
                f"{column} of row {pk} cannot be decrypted with any key of "
                "COPIER_ENCRYPTION_KEY: nothing was changed. Put back the key it was "
                "encrypted with (after the new one), then run this again.") from None
        # A Value, not the string: the field would encrypt the token a second time.
        model._base_manager.filter(pk=pk).update(
            **{field.name: models.Value(fresh, output_field=models.TextField())})
        rotated += 1
    return Rotated(column, rotated, current)


def _is_under(key: Fernet, token: str) -> bool:
    try:
        key.decrypt(token.encode())
    except InvalidToken:
        return False
    return True
