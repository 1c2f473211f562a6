"""The models and the migrations agree (what `makemigrations --check` would say)."""

from __future__ import annotations

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_no_missing_migrations():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


@pytest.mark.django_db(transaction=True)
def test_a_decision_recorded_as_text_keeps_its_text_whole_as_a_legacy_note():
    """0023: an old decision's "; "-joined text becomes one `legacy_text` note, unsplit,
    so that it reads exactly as it did and nothing parses it."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    from copier.models import Decision

    before, after = [("copier", "0022_second_factor_devices")], [("copier", "0023_decision_notes")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    account = old.get_model("accounts", "TradingAccount").objects.create(name="F")
    action = old.get_model("copier", "OperatorAction").objects.create(
        kind="flatten", by="ops", created_at="2026-01-05T14:30:00Z")
    text = "diverged (C=1, E0=4): reduce by 2; exit sell 2: HTTP 503"
    row = old.get_model("copier", "Decision").objects.create(
        action=action, account=account, symbol="ES", reason="flattened", detail=text,
        created_at="2026-01-05T14:30:00Z")
    MigrationExecutor(connection).migrate(after)
    decision = Decision.objects.get(pk=row.pk)
    assert decision.notes == [{"kind": "legacy_text", "text": text}]
    assert decision.detail == text
    MigrationExecutor(connection).migrate(executor.loader.graph.leaf_nodes())
