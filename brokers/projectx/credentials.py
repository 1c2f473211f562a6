"""A ProjectX login: the fields the admin asks for, their checks, and the token's expiry.

A prop firm on the Gateway runs it at its own hosts: the API and realtime URLs are part
of the login (their secrets are bound to them, `BrokerAdapter.credentials_read`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from urllib.parse import urlsplit

from brokers.base import CredentialField, numeric_account_id

DEFAULT_API_URL = "https://api.topstepx.com"
DEFAULT_RTC_URL = "https://rtc.topstepx.com"
TOKEN_LIFETIME_DEFAULT = dt.timedelta(hours=24)  # when the token carries no `exp`

FIELDS: tuple[CredentialField, ...] = (
    CredentialField("username", "User name"),
    CredentialField("api_key", "API key", secret=True),
    CredentialField("api_url", "API URL", required=False, address=True,
                    help_text=f"The firm's gateway, default {DEFAULT_API_URL}"),
    CredentialField("rtc_url", "Realtime URL", required=False, address=True,
                    help_text=f"The firm's realtime host, default {DEFAULT_RTC_URL}"),
)
# Auth/loginKey's errorCode -> its name; UnknownError (8) may clear, the rest need a person.
LOGIN_ERRORS = {1: "UserNotFound", 2: "PasswordVerificationFailed", 3: "InvalidCredentials",
                4: "AppNotFound", 5: "AppVerificationFailed", 6: "InvalidDevice",
                7: "AgreementsNotSigned", 8: "UnknownError", 9: "ApiSubscriptionNotFound",
                10: "ApiKeyAuthenticationDisabled"}
LOGIN_TRANSIENT = {8}


def urls_clean(cleaned: dict[str, str]) -> dict[str, str]:
    """The login with both URLs filled in and in one spelling, so that the same host
    typed two ways binds its secrets once; ValueError for one that is not http(s)."""
    for name, default in (("api_url", DEFAULT_API_URL), ("rtc_url", DEFAULT_RTC_URL)):
        url = cleaned.get(name, default).rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{name}: not an http(s) URL: {url!r}")
        if name == "api_url" and url.endswith("/api"):
            url = url[:-4]  # the endpoints' paths carry /api themselves
        if name == "rtc_url" and url.endswith("/hubs/user"):
            url = url[:-10]
        cleaned[name] = url
    return cleaned


def external_id_clean(value: str) -> str:
    return numeric_account_id(value, venue="ProjectX", listed_by="Account/search")


def token_expiry(token: str) -> dt.datetime:
    """The JWT's `exp` claim (the venue's word), else the documented 24 h from now."""
    try:
        claims = token.split(".")[1]
        payload = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
        return dt.datetime.fromtimestamp(int(payload["exp"]), dt.UTC)
    except (IndexError, ValueError, KeyError, TypeError, binascii.Error):
        return dt.datetime.now(dt.UTC) + TOKEN_LIFETIME_DEFAULT
