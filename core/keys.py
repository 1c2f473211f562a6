"""The encryption keys of stored secrets: `COPIER_ENCRYPTION_KEY`, one key or several.

Several keys, separated by commas, let a key be replaced without a moment when some
secret cannot be read: the first key encrypts, every key decrypts (cryptography's
MultiFernet). Rotating is: put the new key first (the old one after it), restart, run
`manage.py copier_rotate_key` (every stored secret encrypted again with the first key),
then remove the old key. Django-free: the settings check the list before Django starts
(copier.shell.envcheck), and the encrypted fields build their MultiFernet here.
"""

from __future__ import annotations

import binascii
import re

from cryptography.fernet import Fernet, MultiFernet

MAKE_FERNET_KEY = ("python -c 'from cryptography.fernet import Fernet; "
                   "print(Fernet.generate_key().decode())'")

FERNET_KEY = re.compile(r"[A-Za-z0-9_-]{43}=")


class KeyListError(ValueError):
    """What is wrong with the key list, by position: a message never holds a key."""


def keys_split(value: str) -> list[str]:
    """The keys in order (spaces around the commas ignored); KeyListError if one is empty,
    not a Fernet key, or there twice (a copy-paste slip that leaves the old key out)."""
    keys = [part.strip() for part in value.split(",")]
    if keys == [""]:
        raise KeyListError(f"COPIER_ENCRYPTION_KEY is not set: generate one with "
                           f"{MAKE_FERNET_KEY}")
    problems = []
    for n, key in enumerate(keys, start=1):
        which = f"COPIER_ENCRYPTION_KEY: key {n} of {len(keys)}" if len(keys) > 1 else (
            "COPIER_ENCRYPTION_KEY")
        if not key:
            problems.append(f"{which} is empty (keys are separated by single commas)")
            continue
        if not _is_fernet_key(key):
            problems.append(f"{which} is not a Fernet key (32 url-safe base64-encoded bytes)")
            continue
        if keys.index(key) != n - 1:
            problems.append(f"{which} is the same as key {keys.index(key) + 1}")
    if problems:
        raise KeyListError("; ".join(problems) + f": generate a key with {MAKE_FERNET_KEY}")
    return keys


def _is_fernet_key(key: str) -> bool:
    """Strictly 44 characters of the url-safe alphabet: base64's lenient decoding would take
    `NEW;OLD` for NEW alone (it stops at the padding), and the old key would be lost."""
    if not FERNET_KEY.fullmatch(key):
        return False
    try:
        Fernet(key.encode())
    except (ValueError, binascii.Error):
        return False
    return True


def multi_fernet(value: str) -> MultiFernet:
    """Encrypts with the first key of the list, decrypts with any."""
    return MultiFernet([Fernet(key.encode()) for key in keys_split(value)])


def primary_fernet(value: str) -> Fernet:
    """The first key alone: what a token already rotated decrypts with."""
    return Fernet(keys_split(value)[0].encode())
