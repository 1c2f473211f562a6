"""Bind every stored login's secrets to the venue addresses it names now.

From here on the adapters refuse a login whose addresses are not the ones its
secrets were entered for (`BrokerAdapter.credentials_read`); the logins stored
before had no binding, and were entered for what they hold, so they are bound to
that. Needs `COPIER_ENCRYPTION_KEY` when there are logins to read (as every
process does); an empty table needs nothing. Going back leaves the binding in
place: older code ignores the key.
"""

from __future__ import annotations

import json
from typing import Any

from django.db import migrations


def logins_bind(apps: Any, schema_editor: Any) -> None:
    from brokers.base import BOUND_KEY
    from brokers.registry import BROKERS, adapter_class

    kinds = [kind for kind in BROKERS if adapter_class(kind).credential_fields]
    account_model = apps.get_model("accounts", "TradingAccount")
    rows = (account_model.objects.using(schema_editor.connection.alias)
            .filter(broker__in=kinds).exclude(credentials="").only("id", "broker", "credentials"))
    for row in rows:
        try:
            login = json.loads(str(row.credentials))
        except ValueError:
            continue  # not a login: refused at its use, as before
        if not isinstance(login, dict) or BOUND_KEY in login:
            continue
        try:
            bound = adapter_class(row.broker).credentials_bound(
                {str(k): str(v) for k, v in login.items() if v is not None})
        except ValueError:
            continue
        row.credentials = json.dumps(bound)
        row.save(update_fields=["credentials"])


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0007_venue_numbers_64bit"),
    ]

    operations = [
        migrations.RunPython(logins_bind, migrations.RunPython.noop, elidable=True),
    ]
