"""One logged-in R|Protocol plant (ORDER or PNL) of one Rithmic login, over one WebSocket.

What the copier keeps from the real clients and what it does not (BROKERS.md, "Rithmic"):
each request carries its own id in `user_msg`, which the answer echoes; an answer of many
parts is data messages, then one with `rp_code` that ends it ("0" success, "7" no data,
anything else an error with its words). Order and P&L notifications carry no `user_msg`:
they go to `notices`, in the order they came. A heartbeat goes out every half of the
interval the login answered (not 29 s after login whatever was asked). A `ForcedLogout`
(the same user logged in elsewhere, or the session limit) ends the session and is said
as `ForcedOut`, which the listener answers by waiting, not by logging in again at once:
two sessions of one user reconnecting at once evict each other in a loop. A template the
copier does not know is logged and skipped. A timed-out request is the caller's to judge
(an order's is in doubt); nothing is ever resent here. The password is never logged.

Only the ORDER and PNL plants are ever opened: a TICKER login would force a trader's own
market-data session out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect

from brokers.base import PermanentBrokerError, TransientBrokerError
from brokers.rithmic import protocol
from brokers.rithmic.protocol import TemplateId

log = logging.getLogger(__name__)

TEMPLATE_VERSION = "3.9"  # the protocol version the message classes were built from
CONNECT_TIMEOUT = 10.0
REQUEST_TIMEOUT = 10.0
LOGOUT_TIMEOUT = 2.0
# Login errors that only a person can end (a wrong password, an app Rithmic did not
# approve or a firm did not permit, agreements unsigned): waiting does not help.
PERMANENT_LOGIN_CODES = frozenset({"13", "1033", "1038", "1039"})


class ForcedOut(TransientBrokerError):
    """Rithmic ended the session (ForcedLogout): the same user logged in elsewhere, or
    the session limit was reached. A new login would evict the other session in turn."""


class PlantClosed(TransientBrokerError):
    """The plant's socket closed (or was never open): nothing more can be asked of it."""


class PlantTimeout(TransientBrokerError):
    """No end to a request's answer in time: it may have run at the venue."""


@dataclass(frozen=True, slots=True)
class Login:
    """What a plant logs in with (brokers.rithmic.credentials); the password is not shown."""

    gateway: str
    system_name: str
    user: str
    password: str = field(repr=False)
    app_name: str
    app_version: str


@dataclass(slots=True)
class _Pending:
    parts: list[Any]
    done: asyncio.Future[list[Any]]


class Plant:
    """A plant session: `open` connects and logs in, `ask` sends a request and returns its
    answer's messages (the last one the one with `rp_code`), `notices` holds what came
    unasked, `close` logs out. Safe to `ask` from several tasks at once."""

    def __init__(self, login: Login, infra_type: int, *, label: str,
                 ssl_context: ssl.SSLContext | None = None,
                 request_timeout: float = REQUEST_TIMEOUT,
                 observe: Callable[[Any], None] | None = None) -> None:
        if infra_type not in (protocol.ORDER_PLANT, protocol.PNL_PLANT):
            raise ValueError("the copier opens only the ORDER and PNL plants")
        self.login, self.infra_type, self.label = login, infra_type, label
        self._ssl = ssl_context
        self.request_timeout = request_timeout
        self.notices: asyncio.Queue[Any] = asyncio.Queue()
        # Called with each notice as it is read, before any later answer ends its request:
        # what a snapshot's messages (which carry no user_msg) said is known by then.
        self._observe = observe
        self.heartbeat_interval = 0.0
        self.fcm_id = self.ib_id = ""
        self.closed_why = ""
        self._ws: ClientConnection | None = None
        self._pending: dict[str, _Pending] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._forced = False
        self._send_lock = asyncio.Lock()

    @property
    def is_open(self) -> bool:
        return self._ws is not None and not self.closed_why

    async def open(self) -> None:
        """Connect and log in; PermanentBrokerError for a login only a person can mend."""
        secure = self.login.gateway.startswith("wss://")
        try:
            self._ws = await asyncio.wait_for(connect(
                self.login.gateway, ssl=(self._ssl or ssl.create_default_context())
                if secure else None, max_size=2**22, ping_interval=None,
                open_timeout=CONNECT_TIMEOUT), CONNECT_TIMEOUT)
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            raise TransientBrokerError(f"{self.label}: cannot reach the gateway "
                                       f"({type(exc).__name__})") from None
        self._tasks.append(asyncio.create_task(self._read(), name=f"{self.label}-read"))
        answer = await self.ask(
            TemplateId.REQUEST_LOGIN, template_version=TEMPLATE_VERSION,
            user=self.login.user, password=self.login.password,
            app_name=self.login.app_name, app_version=self.login.app_version,
            system_name=self.login.system_name, infra_type=self.infra_type, login=True)
        response = answer[-1]
        self.heartbeat_interval = float(getattr(response, "heartbeat_interval", 0) or 60)
        self.fcm_id, self.ib_id = response.fcm_id, response.ib_id
        self._tasks.append(asyncio.create_task(self._beat(), name=f"{self.label}-heartbeat"))
        log.info("%s: logged in to %s (%s plant, heartbeat %.0f s)", self.label,
                 self.login.system_name, protocol.plant_name(self.infra_type),
                 self.heartbeat_interval)

    async def ask(self, template: int, *, timeout: float | None = None, login: bool = False,
                  **fields: Any) -> list[Any]:
        """The answer's messages, the last the one that ended it. An error `rp_code` is a
        BrokerError with the venue's words (permanent where only a person can help); no end
        in time is `PlantTimeout`."""
        if self._ws is None or self.closed_why:
            raise ForcedOut(self.closed_why) if self._forced else PlantClosed(
                f"{self.label}: not connected ({self.closed_why or 'never opened'})")
        request_id = uuid.uuid4().hex
        message = protocol.request(template, user_msg=[request_id], **fields)
        done: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = _Pending([], done)
        try:
            await self._send(protocol.encode(message))
            parts = await asyncio.wait_for(asyncio.shield(done), timeout or self.request_timeout)
        except TimeoutError:
            raise PlantTimeout(f"{self.label}: no answer to {protocol.name_of(template)} "
                               f"within {timeout or self.request_timeout:g} s") from None
        finally:
            self._pending.pop(request_id, None)
        code = protocol.rp_code(parts[-1])
        if code.ok or code.no_data:
            return parts
        what = f"{self.label}: {protocol.name_of(template)} refused: {code}"
        if code.code in PERMANENT_LOGIN_CODES or (login and code.code != "0"):
            raise PermanentBrokerError(what)
        raise TransientBrokerError(what)

    async def send(self, template: int, **fields: Any) -> None:
        """A request whose answer nobody waits for (a heartbeat, a logout)."""
        await self._send(protocol.encode(protocol.request(template, **fields)))

    async def close(self) -> None:
        """Log out (as far as the socket lets) and close; every task with it."""
        if self._ws is not None and not self.closed_why:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.send(TemplateId.REQUEST_LOGOUT), LOGOUT_TIMEOUT)
        self._end("closed by the copier")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), LOGOUT_TIMEOUT)

    async def _send(self, data: bytes) -> None:
        assert self._ws is not None
        try:
            async with self._send_lock:
                await self._ws.send(data)
        except websockets.ConnectionClosed:
            self._end("the gateway closed the socket")
            raise PlantClosed(f"{self.label}: the gateway closed the socket") from None

    async def _beat(self) -> None:
        while not self.closed_why:
            await asyncio.sleep(max(0.05, self.heartbeat_interval / 2))
            with contextlib.suppress(TransientBrokerError):
                await self.send(TemplateId.REQUEST_HEARTBEAT)

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for data in self._ws:
                if isinstance(data, str):
                    log.warning("%s: a text frame from the gateway was skipped", self.label)
                    continue
                self._take(data)
        except websockets.ConnectionClosed:
            pass
        self._end("the gateway closed the socket")

    def _take(self, data: bytes) -> None:
        try:
            message = protocol.decode(data)
        except protocol.ProtocolError as exc:
            log.warning("%s: a frame that cannot be read was skipped: %s", self.label, exc)
            return
        if isinstance(message, protocol.Unknown):
            log.info("%s: template %s is not one the copier knows; skipped", self.label,
                     message.template_id)
            return
        template = message.template_id
        if template == TemplateId.FORCED_LOGOUT:
            self._forced = True
            self._end(f"{self.label}: Rithmic logged this session out (ForcedLogout: the same "
                      f"user logged in elsewhere, or the session limit was reached)")
            return
        ids: Sequence[str] = getattr(message, "user_msg", ())
        pending = self._pending.get(ids[0]) if ids else None
        if pending is None:
            if template not in (TemplateId.RESPONSE_HEARTBEAT, TemplateId.RESPONSE_LOGOUT):
                if self._observe is not None:
                    self._observe(message)
                self.notices.put_nowait(message)
            return
        pending.parts.append(message)
        ends = template == TemplateId.REJECT or bool(list(getattr(message, "rp_code", ())))
        if ends and not pending.done.done():
            pending.done.set_result(pending.parts)

    def _end(self, why: str) -> None:
        """The session is over: every waiting request fails, and `notices` says so last."""
        if self.closed_why:
            return
        self.closed_why = why
        error: TransientBrokerError = ForcedOut(why) if self._forced else PlantClosed(
            f"{self.label}: {why}")
        for pending in self._pending.values():
            if not pending.done.done():
                pending.done.set_exception(error)
        self.notices.put_nowait(error)
