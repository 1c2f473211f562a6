"""A Rithmic login as the admin takes it (brokers.rithmic.credentials): TLS gateways, plain
WebSocket only on loopback, one spelling per gateway, the app name Rithmic approved."""

from __future__ import annotations

import pytest

from brokers.rithmic import credentials

LOGIN = {"system_name": " Rithmic Test ", "gateway": "wss://rituz00100.rithmic.com:443/",
         "user": "trader1", "password": "pw", "app_name": "abcd:copier"}


def test_a_login_is_kept_in_one_spelling_with_its_version_filled_in():
    assert credentials.login_clean(dict(LOGIN)) == {
        **LOGIN, "system_name": "Rithmic Test", "gateway": "wss://rituz00100.rithmic.com:443",
        "app_version": "1.0"}


@pytest.mark.parametrize(("gateway", "error"), [
    ("https://rituz00100.rithmic.com", "not a WebSocket address"),
    ("wss://", "not a WebSocket address"),
    ("ws://rituz00100.rithmic.com:443", "speak TLS"),
])
def test_a_gateway_that_is_not_a_tls_websocket_is_refused(gateway, error):
    with pytest.raises(ValueError, match=error):
        credentials.login_clean({**LOGIN, "gateway": gateway})


@pytest.mark.parametrize("gateway", ["ws://127.0.0.1:8765", "ws://localhost:8765",
                                     "ws://[::1]:8765"])
def test_plain_websocket_is_taken_on_loopback_for_the_local_server(gateway):
    assert credentials.login_clean({**LOGIN, "gateway": gateway})["gateway"] == gateway


def test_an_app_name_past_the_limit_is_refused():
    with pytest.raises(ValueError, match="app_name: at most 64"):
        credentials.login_clean({**LOGIN, "app_name": "x" * 65})


@pytest.mark.parametrize("value", ["", "  ", "APEX 1", "a/b", "x" * 65])
def test_an_account_id_not_as_the_account_list_names_it_is_refused(value):
    with pytest.raises(ValueError, match="the Rithmic account id"):
        credentials.external_id_clean(value)


def test_an_account_id_as_listed_is_taken():
    assert credentials.external_id_clean(" APEX-12345-01 ") == "APEX-12345-01"
    assert [f.name for f in credentials.FIELDS if f.secret] == ["password"]
    assert [f.name for f in credentials.FIELDS if f.address] == ["gateway"]
