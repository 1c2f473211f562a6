"""The adapter cache: one adapter per account and process, replaced when its credentials
change, and never a database read per order to find that out."""

from __future__ import annotations

import json

import pytest

from accounts.models import TradingAccount
from brokers.registry import adapter_for
from copier import sql

pytestmark = pytest.mark.django_db(transaction=True)


def _projectx(name: str, key: str) -> TradingAccount:
    return TradingAccount.objects.create(
        name=name, broker="projectx", external_id="7",
        credentials=json.dumps({"username": "u", "api_key": key,
                                "api_url": "http://127.0.0.1:9/"}))


def test_an_account_read_without_its_credentials_reuses_the_adapter_without_a_query(
        django_assert_num_queries):
    """The copy's lock statement reads accounts without their credentials (`sql.ACCOUNT`):
    the first order reads and decrypts them once, no later one does."""
    assert "credentials" not in sql.ACCOUNT.names
    assert "credentials_md5" in sql.ACCOUNT.names
    acct = _projectx("P1", "k1")
    row = TradingAccount.objects.defer("credentials").get(pk=acct.pk)
    with django_assert_num_queries(1):  # the credentials, once
        first = adapter_for(row)
    for _ in range(3):
        row = TradingAccount.objects.defer("credentials").get(pk=acct.pk)
        with django_assert_num_queries(0):
            assert adapter_for(row) is first
            assert json.loads(row.credentials)["api_key"] == "k1"
    whole = TradingAccount.objects.get(pk=acct.pk)
    with django_assert_num_queries(0):  # a row read whole is compared by its credentials
        assert adapter_for(whole) is first


def test_changed_credentials_give_a_new_adapter():
    acct = _projectx("P2", "k1")
    first = adapter_for(TradingAccount.objects.get(pk=acct.pk))
    acct.credentials = json.dumps({"username": "u", "api_key": "k2",
                                   "api_url": "http://127.0.0.1:9/"})
    acct.save()
    fresh = adapter_for(TradingAccount.objects.defer("credentials").get(pk=acct.pk))
    assert fresh is not first
    assert json.loads(fresh.account.credentials)["api_key"] == "k2"
    assert adapter_for(acct) is fresh  # the instance saved here knows its new digest too
