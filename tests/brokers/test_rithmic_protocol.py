"""R|Protocol's framing and messages (brokers.rithmic.protocol): every template the copier
speaks goes out and comes back as itself; a template it does not know is `Unknown`, a
broken frame a ProtocolError, a field a template lacks a ValueError naming it; and the
message classes come from async-rithmic's files without its client."""

from __future__ import annotations

import subprocess
import sys

import pytest

from brokers.rithmic import protocol
from brokers.rithmic.protocol import TemplateId


@pytest.mark.parametrize("template", list(TemplateId), ids=lambda t: t.name)
def test_every_template_goes_out_and_comes_back_as_itself(template):
    message = protocol.request(template, user_msg=["req-1"]) if "user_msg" in (
        protocol.message_class(template).DESCRIPTOR.fields_by_name) else protocol.request(template)
    back = protocol.decode(protocol.encode(message))
    assert type(back) is protocol.message_class(template)
    assert back.template_id == template
    assert back == message


def test_a_frame_is_its_length_big_endian_then_the_message():
    order = protocol.request(TemplateId.REQUEST_NEW_ORDER, user_msg=["r7"], user_tag="cp1-9-2",
                             account_id="APEX-1-01", symbol="MNQZ6", exchange="CME",
                             quantity=3, transaction_type=1, price_type=2, manual_or_auto=2,
                             trade_route="simulator")
    frame = protocol.encode(order)
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    back = protocol.decode(frame)
    assert (back.user_tag, back.quantity, back.symbol, back.manual_or_auto, list(back.user_msg)
            ) == ("cp1-9-2", 3, "MNQZ6", 2, ["r7"])


def test_a_template_the_copier_does_not_know_is_unknown_not_an_error():
    message = protocol.request(TemplateId.REJECT)
    message.template_id = 358  # seen on Rithmic 01, newer than the classes
    back = protocol.decode(protocol.encode(message))
    assert isinstance(back, protocol.Unknown)
    assert back.template_id == 358


@pytest.mark.parametrize(("frame", "error"), [
    (b"\x00\x00", "has no length"),
    (b"\x00\x00\x00\x09abc", "says 9 bytes and carries 3"),
    (b"\x00\x00\x00\x03\xff\xff\xff", "not a protobuf message"),
])
def test_a_broken_frame_is_a_protocol_error(frame, error):
    with pytest.raises(protocol.ProtocolError, match=error):
        protocol.decode(frame)


def test_a_field_the_template_lacks_is_refused_by_name():
    with pytest.raises(ValueError, match=r"RequestNewOrder \(312\) has no field 'qty'"):
        protocol.request(TemplateId.REQUEST_NEW_ORDER, qty=2)


@pytest.mark.parametrize(("codes", "ok", "no_data", "text"), [
    (["0"], True, False, "rp_code 0"),
    (["7", "no data"], False, True, "rp_code 7 (no data)"),
    (["13", "permission denied"], False, False, "rp_code 13 (permission denied)"),
    ([], False, False, "rp_code "),
])
def test_rp_code_reads_the_code_and_its_words(codes, ok, no_data, text):
    code = protocol.rp_code(protocol.request(TemplateId.RESPONSE_LOGIN, rp_code=codes))
    assert (code.ok, code.no_data, str(code)) == (ok, no_data, text)


def test_the_message_classes_load_without_async_rithmics_client():
    """Its package imports its client (0.4 s, pytz, tzlocal, pattern_kit): the copier's
    processes never run it."""
    script = ("import sys; from brokers.rithmic import protocol as p; "
              "p.decode(p.encode(p.request(p.TemplateId.REQUEST_LOGIN, user='u'))); "
              "print(sorted(m for m in sys.modules if m.startswith(('async_rithmic', 'pytz', "
              "'pattern_kit'))))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_plants_are_named_as_rithmic_names_them():
    assert [protocol.plant_name(i) for i in (1, 2, 3, 4, 5)] == [
        "TICKER", "ORDER", "HISTORY", "PNL", "plant 5"]
