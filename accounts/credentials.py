"""The admin's account form: a section of login fields per broker kind, write-only.

Each adapter declares what its venue's login needs (`credential_fields`); the
form asks for exactly that, checks it with the adapter's own rules, and stores
one JSON object, encrypted. A secret field never renders its stored value and
a blank one keeps it, so editing an account's name does not need the API key
again; switching the broker kind drops the old kind's login. A changed venue
address (any URL the login goes to) drops the stored secrets: they must be typed
again in the same save, since a secret is only ever sent to the address it was
entered for (`TradingAccount.credentials_bind` holds the same rule for every writer).
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from django import forms

from accounts.models import TradingAccount
from brokers.base import BrokerAdapter, CredentialField
from brokers.registry import BROKERS, adapter_class

KEEP = "Stored encrypted; leave blank to keep the current value."


def field_name(kind: str, credential: CredentialField) -> str:
    return f"cred_{kind}_{credential.name}"


def stored_credentials(account: TradingAccount) -> dict[str, str]:
    """The account's login as a dict; {} when none is stored or it is not a JSON object."""
    try:
        value = json.loads(str(account.credentials or "") or "{}")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _form_field(credential: CredentialField) -> forms.Field:
    help_text = credential.help_text
    if credential.choices:
        return forms.ChoiceField(label=credential.label, required=False, help_text=help_text,
                                 choices=[("", "---------"), *credential.choices])
    if credential.secret:
        return forms.CharField(label=credential.label, required=False, strip=False,
                               widget=forms.PasswordInput(render_value=False),
                               help_text=f"{help_text} {KEEP}".strip())
    return forms.CharField(label=credential.label, required=False, help_text=help_text)


class TradingAccountFormBase(forms.ModelForm):
    class Meta:
        model = TradingAccount
        fields = ["name", "broker", "external_id"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            stored = stored_credentials(self.instance)
            for credential in adapter_class(self.instance.broker).credential_fields:
                if not credential.secret:
                    self.initial[field_name(self.instance.broker, credential)] = \
                        stored.get(credential.name, "")

    def clean_external_id(self) -> str:
        value = self.cleaned_data.get("external_id") or ""
        broker = self.data.get(self.add_prefix("broker")) or self.instance.broker
        if broker not in BROKERS:
            return str(value)
        try:
            return adapter_class(broker).external_id_clean(str(value))
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        kind = cleaned.get("broker")
        if kind not in BROKERS:
            return cleaned
        adapter = adapter_class(kind)
        if not adapter.credential_fields:
            return cleaned  # the venue needs no login (sim): whatever is stored stays
        typed = {c.name: str(cleaned.get(field_name(kind, c)) or "")
                 for c in adapter.credential_fields}
        values = self._login_values(adapter, kind, typed)
        if values is None:
            return cleaned
        try:
            self.instance.credentials = json.dumps(adapter.credentials_clean(values))
        except ValueError as exc:
            self.add_error(None, f"{adapter.label} login: {exc}")
            return cleaned
        self.instance.secrets_entered = frozenset(
            c.name for c in adapter.credential_fields if c.secret and typed[c.name])
        return cleaned

    def _login_values(self, adapter: type[BrokerAdapter], kind: str,
                      typed: dict[str, str]) -> dict[str, str] | None:
        """The login to store: the plain fields as typed, each secret as typed or else kept
        (a blank secret keeps the stored one, unless the venue address moved). None, with
        the form's error added, when the address moved and a stored secret was not typed
        again."""
        stored = self._stored_login(kind)
        plain = {c.name: typed[c.name] for c in adapter.credential_fields if not c.secret}
        kept = {c.name: stored.get(c.name, "") for c in adapter.credential_fields if c.secret}
        moved = _address_moved(adapter, stored, {**kept, **plain})
        if moved and not self._secrets_retyped(adapter, typed):
            return None
        return {**plain, **{name: typed[name] or ("" if moved else value)
                            for name, value in kept.items()}}

    def _stored_login(self, kind: str) -> dict[str, str]:
        """The login stored for `kind`: {} for a new account, and when the broker kind
        changes (the old kind's login is dropped, not carried over)."""
        same_kind = bool(self.instance.pk) and self.instance.broker == kind
        return stored_credentials(self.instance) if same_kind else {}

    def _secrets_retyped(self, adapter: type[BrokerAdapter], typed: dict[str, str]) -> bool:
        """After the venue address moved, whether every secret was typed again (else the
        form's error names those that must be). A stored secret never goes to an address
        other than the one it was typed for: a new address clears them, and they must be
        typed again in the same save."""
        missing = [c.label for c in adapter.credential_fields if c.secret and not typed[c.name]]
        if missing:
            self.add_error(None, f"{adapter.label} login: the venue address changed, so "
                           f"the stored {' and '.join(missing)} must be typed again (a "
                           "secret is only sent to the address it was entered for)")
        return not missing


def _address_moved(adapter: type[BrokerAdapter], stored: dict[str, str],
                   login: dict[str, str]) -> bool:
    """Whether the login as typed goes to another venue address than the stored one: its
    secrets are bound to the address they were entered for. A login that is not valid
    yet (no addresses to tell) has not moved; its own error says why."""
    addresses = adapter.credentials_addresses_of(login)
    return bool(stored) and addresses is not None and (
        addresses != adapter.credentials_addresses_of(stored))


@cache
def trading_account_form() -> type[TradingAccountFormBase]:
    """The form class with every broker kind's fields declared (the admin needs them on
    the class, not added per instance)."""
    attrs: dict[str, Any] = {"__module__": __name__}
    for kind in BROKERS:
        for credential in adapter_class(kind).credential_fields:
            attrs[field_name(kind, credential)] = _form_field(credential)
    return type("TradingAccountForm", (TradingAccountFormBase,), attrs)


def credential_fieldsets(account: TradingAccount | None) -> list[tuple[str, dict[str, Any]]]:
    """One admin section per kind that has a login; the account's own kind open."""
    sections: list[tuple[str, dict[str, Any]]] = []
    for kind, (_path, label) in BROKERS.items():
        fields = [field_name(kind, c) for c in adapter_class(kind).credential_fields]
        if not fields:
            continue
        own = account is not None and account.broker == kind
        sections.append((f"{label} login", {
            "fields": fields,
            "classes": [] if own else ["collapse"],
            "description": f"Fill this section when the account's broker is {label}.",
        }))
    return sections
