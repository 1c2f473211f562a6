"""Encrypted text field for broker credentials.

Credentials are stored as Fernet tokens so that a database dump or backup
does not leak broker logins; the key lives only in the environment
(`COPIER_ENCRYPTION_KEY`; several while one is rotated, see core.keys). The
field's repr never shows the plaintext, and neither do Django's serializers
(`dumpdata`): they get a token too.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from cryptography.fernet import InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models

from core.keys import KeyListError, multi_fernet


@cache
def _fernet(key: str) -> MultiFernet:
    """One or several keys (core.keys): the first encrypts, every one decrypts."""
    if not key:
        raise ImproperlyConfigured(
            "COPIER_ENCRYPTION_KEY is not set, so broker credentials can be neither stored nor "
            "read. Locally, start the copier with `make run`: it generates a key, kept in "
            ".stack/encryption-key. In production, set it in .env."
        )
    try:
        return multi_fernet(key)
    except KeyListError as exc:
        raise ImproperlyConfigured(str(exc)) from None


class Secret(str):
    """A decrypted secret whose repr is masked, so it never lands in logs or tracebacks."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('***')" if self else "Secret('')"


def encrypt(plaintext: str) -> str:
    return _fernet(settings.COPIER_ENCRYPTION_KEY).encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> Secret:
    try:
        return Secret(_fernet(settings.COPIER_ENCRYPTION_KEY).decrypt(token.encode()).decode())
    except InvalidToken as exc:
        raise ImproperlyConfigured(
            "Stored credentials cannot be decrypted with any key of COPIER_ENCRYPTION_KEY: "
            "a key removed before `manage.py copier_rotate_key` ran?"
        ) from exc


# How a token is marked in serialized data (dumpdata, fixtures), so that loading it tells a
# token from a plaintext value (a dump made before tokens were written) and decrypts it
# rather than encrypting it a second time.
SERIALIZED_PREFIX = "fernet:"


class EncryptedTextField(models.TextField):
    """Stores `encrypt(value)`; reads give a `Secret`. Empty stays empty."""

    def value_to_string(self, obj: models.Model) -> str:
        """What serializers write: a token, never the plaintext (dumps travel)."""
        value = self.value_from_object(obj)
        if not value:
            return ""
        return SERIALIZED_PREFIX + encrypt(str(value))

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> Secret | None:
        if value is None or value == "":
            return Secret("") if value == "" else None
        return decrypt(value)

    def to_python(self, value: Any) -> Any:
        """Also what deserializers call: a marked token is decrypted with today's key, and one
        made under another key is refused rather than stored as what it is not."""
        if value is None or isinstance(value, Secret):
            return value
        if isinstance(value, str) and value.startswith(SERIALIZED_PREFIX):
            return decrypt(value.removeprefix(SERIALIZED_PREFIX))
        return Secret(value)

    def get_prep_value(self, value: Any) -> str | None:
        if value is None or value == "":
            return value
        return encrypt(str(value))
