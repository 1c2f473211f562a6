"""A Tradovate login: the fields the admin asks for, their checks, and where they go.

An API key is a user name and password with an app id, version, cid and sec; the
environment (demo or live) names the REST and WebSocket hosts, which a login may
override (its secrets are bound to the addresses, `BrokerAdapter.credentials_read`).
"""

from __future__ import annotations

from collections.abc import Mapping

from brokers.base import CredentialField, numeric_account_id

ENVIRONMENTS: dict[str, tuple[str, str]] = {
    "demo": ("https://demo.tradovateapi.com/v1", "wss://demo.tradovateapi.com/v1/websocket"),
    "live": ("https://live.tradovateapi.com/v1", "wss://live.tradovateapi.com/v1/websocket"),
}

FIELDS: tuple[CredentialField, ...] = (
    CredentialField("name", "user name"),
    CredentialField("password", "password", secret=True),
    CredentialField("app_id", "app id", help_text="The API key's application id."),
    CredentialField("app_version", "app version", help_text="e.g. 1.0"),
    CredentialField("cid", "cid", help_text="The API key's client id (a number)."),
    CredentialField("sec", "sec", secret=True, help_text="The API key's secret."),
    CredentialField("environment", "environment", choices=(("demo", "demo"),
                                                           ("live", "live"))),
    CredentialField("api_url", "REST URL", required=False, address=True,
                    help_text="Only to override the environment's."),
    CredentialField("ws_url", "WebSocket URL", required=False, address=True,
                    help_text="Only to override the environment's."),
)


def check(cleaned: dict[str, str]) -> dict[str, str]:
    """The login as the base cleaned it, checked where the venue would only refuse it at
    the first login: ValueError saying what is wrong."""
    if cleaned["environment"] not in ENVIRONMENTS:
        raise ValueError(f"environment must be one of: {', '.join(ENVIRONMENTS)}")
    if not cleaned["cid"].isdigit():
        raise ValueError("cid must be a number (the API key's client id)")
    for key, schemes in (("api_url", ("http://", "https://")),
                         ("ws_url", ("ws://", "wss://"))):
        if key in cleaned and not cleaned[key].startswith(schemes):
            raise ValueError(f"{key} must start with {' or '.join(schemes)}")
    return cleaned


def addresses(cleaned: Mapping[str, str]) -> tuple[str, str]:
    """The REST and socket URLs the login goes to: the environment's unless overridden,
    so a switch of environment is a change of address too."""
    api, ws = ENVIRONMENTS[cleaned["environment"]]
    return cleaned.get("api_url", api).rstrip("/"), cleaned.get("ws_url", ws)


def external_id_clean(value: str) -> str:
    return numeric_account_id(value, venue="Tradovate", listed_by="account/list")
