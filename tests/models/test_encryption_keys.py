"""COPIER_ENCRYPTION_KEY as a list (issue 19, "Key rotation"): the first key encrypts, every
key decrypts, and a list given wrong is said by position, never by showing a key."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet, InvalidToken

from core.keys import KeyListError, keys_split, multi_fernet, primary_fernet

# Fixed keys (test-only): parametrized ids must be the same in every pytest-xdist worker.
A = "a" * 43 + "="
B = "b" * 43 + "="


def test_the_first_key_encrypts_and_every_key_decrypts():
    token = multi_fernet(f"{A}, {B}").encrypt(b"secret")
    assert Fernet(A.encode()).decrypt(token) == b"secret"
    with pytest.raises(InvalidToken):
        Fernet(B.encode()).decrypt(token)
    assert multi_fernet(f"{A},{B}").decrypt(Fernet(B.encode()).encrypt(b"old")) == b"old"
    assert primary_fernet(f"{A},{B}").decrypt(token) == b"secret"


@pytest.mark.parametrize(("value", "message"), [
    ("", "COPIER_ENCRYPTION_KEY is not set"),
    ("not-a-key", "COPIER_ENCRYPTION_KEY is not a Fernet key"),
    (f"{A},not-a-key", "COPIER_ENCRYPTION_KEY: key 2 of 2 is not a Fernet key"),
    (f"{A},", "COPIER_ENCRYPTION_KEY: key 2 of 2 is empty"),
    (f"{A},,{B}", "COPIER_ENCRYPTION_KEY: key 2 of 3 is empty"),
    (f"{A};{B}", "COPIER_ENCRYPTION_KEY is not a Fernet key"),
    (f"{A},{A}", "COPIER_ENCRYPTION_KEY: key 2 of 2 is the same as key 1"),
])
def test_a_malformed_key_list_is_a_clear_error_without_the_keys(value, message):
    with pytest.raises(KeyListError) as err:
        keys_split(value)
    assert str(err.value).startswith(message)
    assert A not in str(err.value)
    assert B not in str(err.value)
