"""R|Protocol's messages: framing, the templates the copier speaks, and `rp_code`.

Rithmic's API is a WebSocket (TLS in production) of binary messages, each a 4-byte
big-endian length and then one protobuf message whose `template_id` (field 154467) names
its type; a session logs in to one "plant" per purpose (ORDER 2, PNL 4, TICKER 1,
HISTORY 3). A request's answer is one message, or data messages and then one that carries
`rp_code` (["0"] success, ["7", "no data"], else an error code and its words).

The message classes are the compiled ones the MIT-licensed PyPI package async-rithmic
ships. Rithmic's `.proto` sources are not redistributable, so none is in this repository
and none is compiled here; the classes are loaded from the package's files by path, which
keeps its client (and the packages it imports) out of the copier's processes. Nothing
here knows Django: the local R|Protocol server of the development package speaks it too.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError, Message

TICKER_PLANT, ORDER_PLANT, HISTORY_PLANT, PNL_PLANT = 1, 2, 3, 4
_PLANTS = {TICKER_PLANT: "TICKER", ORDER_PLANT: "ORDER", HISTORY_PLANT: "HISTORY",
           PNL_PLANT: "PNL"}
MAX_FRAME = 2**22  # a message longer than this is a broken frame, not an answer


class TemplateId(IntEnum):
    """The templates the copier sends or reads, by their R|Protocol numbers."""

    REQUEST_LOGIN = 10
    RESPONSE_LOGIN = 11
    REQUEST_LOGOUT = 12
    RESPONSE_LOGOUT = 13
    REQUEST_RITHMIC_SYSTEM_INFO = 16
    RESPONSE_RITHMIC_SYSTEM_INFO = 17
    REQUEST_HEARTBEAT = 18
    RESPONSE_HEARTBEAT = 19
    REJECT = 75
    FORCED_LOGOUT = 77
    REQUEST_LOGIN_INFO = 300
    RESPONSE_LOGIN_INFO = 301
    REQUEST_ACCOUNT_LIST = 302
    RESPONSE_ACCOUNT_LIST = 303
    REQUEST_ACCOUNT_RMS_INFO = 304
    RESPONSE_ACCOUNT_RMS_INFO = 305
    REQUEST_SUBSCRIBE_FOR_ORDER_UPDATES = 308
    RESPONSE_SUBSCRIBE_FOR_ORDER_UPDATES = 309
    REQUEST_TRADE_ROUTES = 310
    RESPONSE_TRADE_ROUTES = 311
    REQUEST_NEW_ORDER = 312
    RESPONSE_NEW_ORDER = 313
    REQUEST_CANCEL_ORDER = 316
    RESPONSE_CANCEL_ORDER = 317
    REQUEST_SHOW_ORDERS = 320
    RESPONSE_SHOW_ORDERS = 321
    REQUEST_CANCEL_ALL_ORDERS = 346
    RESPONSE_CANCEL_ALL_ORDERS = 347
    RITHMIC_ORDER_NOTIFICATION = 351
    EXCHANGE_ORDER_NOTIFICATION = 352
    REQUEST_PNL_POSITION_UPDATES = 400
    RESPONSE_PNL_POSITION_UPDATES = 401
    REQUEST_PNL_POSITION_SNAPSHOT = 402
    RESPONSE_PNL_POSITION_SNAPSHOT = 403
    INSTRUMENT_PNL_POSITION_UPDATE = 450
    ACCOUNT_PNL_POSITION_UPDATE = 451
    REQUEST_EXIT_POSITION = 3504
    RESPONSE_EXIT_POSITION = 3505
    REQUEST_REPLAY_EXECUTIONS = 3506
    RESPONSE_REPLAY_EXECUTIONS = 3507


# Each template's module and class in async-rithmic's protocol_buffers.
_CLASSES: dict[TemplateId, tuple[str, str]] = {
    TemplateId.REQUEST_LOGIN: ("request_login", "RequestLogin"),
    TemplateId.RESPONSE_LOGIN: ("response_login", "ResponseLogin"),
    TemplateId.REQUEST_LOGOUT: ("request_logout", "RequestLogout"),
    TemplateId.RESPONSE_LOGOUT: ("response_logout", "ResponseLogout"),
    TemplateId.REQUEST_RITHMIC_SYSTEM_INFO: ("request_rithmic_system_info",
                                             "RequestRithmicSystemInfo"),
    TemplateId.RESPONSE_RITHMIC_SYSTEM_INFO: ("response_rithmic_system_info",
                                              "ResponseRithmicSystemInfo"),
    TemplateId.REQUEST_HEARTBEAT: ("request_heartbeat", "RequestHeartbeat"),
    TemplateId.RESPONSE_HEARTBEAT: ("response_heartbeat", "ResponseHeartbeat"),
    TemplateId.REJECT: ("reject", "Reject"),
    TemplateId.FORCED_LOGOUT: ("forced_logout", "ForcedLogout"),
    TemplateId.REQUEST_LOGIN_INFO: ("request_login_info", "RequestLoginInfo"),
    TemplateId.RESPONSE_LOGIN_INFO: ("response_login_info", "ResponseLoginInfo"),
    TemplateId.REQUEST_ACCOUNT_LIST: ("request_account_list", "RequestAccountList"),
    TemplateId.RESPONSE_ACCOUNT_LIST: ("response_account_list", "ResponseAccountList"),
    TemplateId.REQUEST_ACCOUNT_RMS_INFO: ("request_account_rms_info", "RequestAccountRmsInfo"),
    TemplateId.RESPONSE_ACCOUNT_RMS_INFO: ("response_account_rms_info",
                                           "ResponseAccountRmsInfo"),
    TemplateId.REQUEST_SUBSCRIBE_FOR_ORDER_UPDATES: ("request_subscribe_for_order_updates",
                                                     "RequestSubscribeForOrderUpdates"),
    TemplateId.RESPONSE_SUBSCRIBE_FOR_ORDER_UPDATES: ("response_subscribe_for_order_updates",
                                                      "ResponseSubscribeForOrderUpdates"),
    TemplateId.REQUEST_TRADE_ROUTES: ("request_trade_routes", "RequestTradeRoutes"),
    TemplateId.RESPONSE_TRADE_ROUTES: ("response_trade_routes", "ResponseTradeRoutes"),
    TemplateId.REQUEST_NEW_ORDER: ("request_new_order", "RequestNewOrder"),
    TemplateId.RESPONSE_NEW_ORDER: ("response_new_order", "ResponseNewOrder"),
    TemplateId.REQUEST_CANCEL_ORDER: ("request_cancel_order", "RequestCancelOrder"),
    TemplateId.RESPONSE_CANCEL_ORDER: ("response_cancel_order", "ResponseCancelOrder"),
    TemplateId.REQUEST_SHOW_ORDERS: ("request_show_orders", "RequestShowOrders"),
    TemplateId.RESPONSE_SHOW_ORDERS: ("response_show_orders", "ResponseShowOrders"),
    TemplateId.REQUEST_CANCEL_ALL_ORDERS: ("request_cancel_all_orders",
                                           "RequestCancelAllOrders"),
    TemplateId.RESPONSE_CANCEL_ALL_ORDERS: ("response_cancel_all_orders",
                                            "ResponseCancelAllOrders"),
    TemplateId.RITHMIC_ORDER_NOTIFICATION: ("rithmic_order_notification",
                                            "RithmicOrderNotification"),
    TemplateId.EXCHANGE_ORDER_NOTIFICATION: ("exchange_order_notification",
                                             "ExchangeOrderNotification"),
    TemplateId.REQUEST_PNL_POSITION_UPDATES: ("request_pnl_position_updates",
                                              "RequestPnLPositionUpdates"),
    TemplateId.RESPONSE_PNL_POSITION_UPDATES: ("response_pnl_position_updates",
                                               "ResponsePnLPositionUpdates"),
    TemplateId.REQUEST_PNL_POSITION_SNAPSHOT: ("request_pnl_position_snapshot",
                                               "RequestPnLPositionSnapshot"),
    TemplateId.RESPONSE_PNL_POSITION_SNAPSHOT: ("response_pnl_position_snapshot",
                                                "ResponsePnLPositionSnapshot"),
    TemplateId.INSTRUMENT_PNL_POSITION_UPDATE: ("instrument_pnl_position_update",
                                                "InstrumentPnLPositionUpdate"),
    TemplateId.ACCOUNT_PNL_POSITION_UPDATE: ("account_pnl_position_update",
                                             "AccountPnLPositionUpdate"),
    TemplateId.REQUEST_EXIT_POSITION: ("request_exit_position", "RequestExitPosition"),
    TemplateId.RESPONSE_EXIT_POSITION: ("response_exit_position", "ResponseExitPosition"),
    TemplateId.REQUEST_REPLAY_EXECUTIONS: ("request_replay_executions",
                                           "RequestReplayExecutions"),
    TemplateId.RESPONSE_REPLAY_EXECUTIONS: ("response_replay_executions",
                                            "ResponseReplayExecutions"),
}


class ProtocolError(ValueError):
    """A frame that is not an R|Protocol message (too short, a wrong length, bad bytes)."""


@dataclass(frozen=True, slots=True)
class Unknown:
    """A message of a template the copier does not know: kept only to be logged and
    skipped (Rithmic adds templates; one new push must never break a session)."""

    template_id: int
    raw: bytes


@dataclass(frozen=True, slots=True)
class RpCode:
    """A message's `rp_code` read: its code ("" where it carries none) and words."""

    code: str
    text: str = ""

    @property
    def ok(self) -> bool:
        return self.code == "0"

    @property
    def no_data(self) -> bool:
        return self.code == "7"

    def __str__(self) -> str:
        return f"rp_code {self.code}" + (f" ({self.text})" if self.text else "")


def _package_dir() -> Path:
    spec = importlib.util.find_spec("async_rithmic")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the async-rithmic package (R|Protocol's message classes) is not "
                          "installed: pip install async-rithmic")
    return Path(next(iter(spec.submodule_search_locations))) / "protocol_buffers"


@functools.cache
def message_class(template: int) -> type[Message]:
    """The template's message class, loaded by path from async-rithmic's files (its own
    package would import its client first: 0.4 s and its dependencies, for nothing)."""
    module_name, class_name = _CLASSES[TemplateId(template)]
    qualified = f"brokers.rithmic._pb.{module_name}_pb2"
    module = sys.modules.get(qualified)
    if module is None:
        spec = importlib.util.spec_from_file_location(
            qualified, _package_dir() / f"{module_name}_pb2.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[qualified] = module
    cls: type[Message] = getattr(module, class_name)
    return cls


def name_of(template: int) -> str:
    """A template's name for the logs and errors ("RequestNewOrder (312)")."""
    try:
        return f"{_CLASSES[TemplateId(template)][1]} ({int(template)})"
    except ValueError:
        return f"template {template}"


def plant_name(infra_type: int) -> str:
    return _PLANTS.get(infra_type, f"plant {infra_type}")


def request(template: int, **fields: Any) -> Message:
    """A message of the template with these fields set (repeated ones from lists); a field
    the template does not have is a ValueError naming it, not a silent drop."""
    cls = message_class(template)
    message = cls()
    names = cls.DESCRIPTOR.fields_by_name
    for name, value in fields.items():
        if name not in names:
            raise ValueError(f"{name_of(template)} has no field {name!r}")
        if value is None:
            continue
        target = getattr(message, name)
        if isinstance(value, (list, tuple)):
            target.extend(value)
        else:
            setattr(message, name, value)
    message.template_id = int(template)
    return message


def encode(message: Message) -> bytes:
    """The message as one frame: its length (4 bytes, big-endian), then its bytes."""
    body = bytes(message.SerializeToString())
    return len(body).to_bytes(4, "big") + body


@functools.cache
def _base() -> type[Message]:
    return message_class(TemplateId.REJECT)  # any class: template_id is field 154467 in all


def decode(frame: bytes) -> Message | Unknown:
    """The message of one frame, as its template's class; a template the copier does not
    know is `Unknown`, never an error; a broken frame is a ProtocolError."""
    if len(frame) < 4:
        raise ProtocolError(f"a frame of {len(frame)} bytes has no length")
    length = int.from_bytes(frame[:4], "big")
    body = frame[4:]
    if length != len(body) or length > MAX_FRAME:
        raise ProtocolError(f"the frame says {length} bytes and carries {len(body)}")
    try:
        probe = _base().FromString(body)
    except DecodeError as exc:
        raise ProtocolError(f"not a protobuf message: {exc}") from None
    template = int(probe.template_id)
    if template not in TemplateId._value2member_map_:
        return Unknown(template, bytes(body))
    try:
        return message_class(template).FromString(body)
    except DecodeError as exc:
        raise ProtocolError(f"{name_of(template)}: {exc}") from None


def rp_code(message: Message) -> RpCode:
    """The message's `rp_code` (the code that ends an answer): ["0"], ["7", "no data"],
    [code, words]; RpCode("") for a message that carries none (a data part)."""
    codes = list(getattr(message, "rp_code", ()))
    return RpCode(codes[0], ", ".join(codes[1:])) if codes else RpCode("")
