"""A Rithmic login: the fields the admin asks for and their checks.

Rithmic approves each application: it assigns a 4-character prefix for the app name and
checks a login on its test system ("Rithmic Test") before it gives production gateways
(README, *Connecting a real account*). An open-source copier has no app name of its own
to ship, so each person enters the one Rithmic approved for them, with the system and the
gateway their firm gave them. The gateway is a venue address: the password is bound to it
(`BrokerAdapter.credentials_read`). Production gateways speak TLS (wss://); plain ws:// is
taken only on loopback, where the development package's local R|Protocol server runs.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from brokers.base import CredentialField

DEFAULT_APP_VERSION = "1.0"
APP_NAME_LIMIT = 64  # R|Protocol sends it as a string; Rithmic's names are short

FIELDS: tuple[CredentialField, ...] = (
    CredentialField("system_name", "System",
                    help_text="As your firm names it, e.g. Rithmic Test, Rithmic Paper "
                              "Trading, Apex, Rithmic 01 (the test connection lists those "
                              "the gateway offers)."),
    CredentialField("gateway", "Gateway", address=True,
                    help_text="The WebSocket address your firm gave you, e.g. "
                              "wss://rituz00100.rithmic.com:443"),
    CredentialField("user", "User name"),
    CredentialField("password", "Password", secret=True),
    CredentialField("app_name", "Application name",
                    help_text="The application name Rithmic approved for you, with its "
                              "4-character prefix. Rithmic refuses logins of apps it did not "
                              "approve (permission denied)."),
    CredentialField("app_version", "Application version", required=False,
                    help_text=f"Default {DEFAULT_APP_VERSION}"),
)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def login_clean(cleaned: dict[str, str]) -> dict[str, str]:
    """The login in one spelling (so that the same gateway typed two ways binds the password
    once), its version filled in; ValueError saying what is wrong."""
    url = cleaned["gateway"].strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("wss", "ws") or not parts.hostname:
        raise ValueError(f"gateway: not a WebSocket address (wss://host:port): {url!r}")
    if parts.scheme == "ws" and not _loopback(parts.hostname):
        raise ValueError("gateway: Rithmic's gateways speak TLS (wss://); plain ws:// is "
                         "only for a local server on this machine")
    cleaned["gateway"] = url
    for name in ("system_name", "user", "app_name"):
        cleaned[name] = cleaned[name].strip()
    if len(cleaned["app_name"]) > APP_NAME_LIMIT:
        raise ValueError(f"app_name: at most {APP_NAME_LIMIT} characters")
    cleaned["app_version"] = cleaned.get("app_version", "").strip() or DEFAULT_APP_VERSION
    return cleaned


def external_id_clean(value: str) -> str:
    """A Rithmic account id as RequestAccountList lists it (e.g. APEX-12345-01): letters,
    digits and the punctuation firms use, never blank."""
    value = value.strip()
    if not value or len(value) > 64 or not all(c.isalnum() or c in "-_." for c in value):
        raise ValueError(f"the Rithmic account id is as the account list names it (letters, "
                         f"digits, '-', '_' or '.'; 'test connection' shows it), not {value!r}")
    return value
