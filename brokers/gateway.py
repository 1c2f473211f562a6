"""Workers asking the listener that holds a venue session, over Redis.

Some venues allow one session per login: Rithmic forces the older session out when the
same user logs in again (ForcedLogout), and several quick logins cascade into a loop of
them. There, a Celery worker must not log in to send an order: the login's one session
is held by the listener that streams its accounts (copier_listen), and the workers ask
that listener. This module is the asking: a request on the login's Redis list, the
answer on the request's own.

The claim is what keeps an order from being sent twice or sent late. A request is
wanted while its `pending` key exists (it expires with the asker's timeout); the holder
deletes that key before doing anything, and only goes on if the delete removed it. An
asker that times out deletes it too: whoever deletes it first decides. If the asker
did, the request was never started and never will be (a plain TransientBrokerError: a
retry is safe); if the holder did, it may have run (`OrderOutcomeUnknown` for a request
that changes something at the venue: look the order up before anything else). No clock
is compared: Redis decides who was first.

A login with no holder (no listener, or one that lost it) is refused at once rather than
queued: its `holder` key is refreshed by the holder every second and expires after
`HOLDER_TTL`. Redis is the Celery broker already: a worker that cannot reach it cannot
take tasks either.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import redis
import redis.asyncio as aioredis

from brokers.base import (
    BrokerError,
    OrderOutcomeUnknown,
    PermanentBrokerError,
    TransientBrokerError,
    UnknownContract,
)

log = logging.getLogger(__name__)

PREFIX = "copier:gateway"
HOLDER_TTL = 3  # seconds: a holder refreshes its key every second
ANSWER_TTL = 30  # seconds an answer waits for an asker that gave up
POLL_SECONDS = 1.0  # how long the holder's blocking pop waits before refreshing its key
# How long a request outlives its asker's wait (the asker deletes it when it gives up; a
# killed asker cannot, and its request may still run this long after).
PENDING_GRACE_MS = 2000
DRAIN_SECONDS = 2.0  # how long a holder that stops lets its claimed requests answer

Handler = Callable[[str, Mapping[str, Any]], Awaitable[Mapping[str, Any]]]

# An error crosses Redis as its kind and message, and is raised again on the asker's side
# as the same class: the copier's retries and look-ups depend on which it is.
_KINDS: dict[str, type[BrokerError]] = {
    "transient": TransientBrokerError, "unknown_outcome": OrderOutcomeUnknown,
    "permanent": PermanentBrokerError, "unknown_contract": UnknownContract,
}


def login_key(*parts: str) -> str:
    """The Redis name of one login (its gateway, system and user, hashed: user names are
    not secrets, but nothing about an account needs to sit in Redis keys)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]


def _requests(login: str) -> str:
    return f"{PREFIX}:{login}:requests"


def _holder(login: str) -> str:
    return f"{PREFIX}:{login}:holder"


def _pending(request_id: str) -> str:
    return f"{PREFIX}:pending:{request_id}"


def _answer(request_id: str) -> str:
    return f"{PREFIX}:answer:{request_id}"


def _kind(exc: BrokerError) -> str:
    for kind, cls in (("unknown_contract", UnknownContract), ("permanent", PermanentBrokerError),
                      ("unknown_outcome", OrderOutcomeUnknown)):
        if isinstance(exc, cls):
            return kind
    return "transient"


def _raised(error: Mapping[str, Any]) -> BrokerError:
    cls = _KINDS.get(str(error.get("kind")), TransientBrokerError)
    if issubclass(cls, TransientBrokerError):
        return cls(str(error.get("message")), retry_after=error.get("retry_after"))
    return cls(str(error.get("message")))


class NoHolder(TransientBrokerError):
    """No listener holds the login's session now: nothing was sent."""


@dataclass(frozen=True, slots=True)
class Gateway:
    """The asking side, for the workers (synchronous)."""

    client: redis.Redis

    @classmethod
    def from_url(cls, url: str) -> Gateway:
        return cls(redis.Redis.from_url(url, socket_connect_timeout=2, health_check_interval=30))

    def ask(self, login: str, op: str, args: Mapping[str, Any], *, timeout: float,
            changes: bool, what: str) -> Mapping[str, Any]:
        """`op` run by the login's holder with `args`; its answer, or its error raised here
        as the class the holder raised. `changes`: whether the request changes something at
        the venue (an order, a cancel): one that timed out after the holder claimed it is
        then `OrderOutcomeUnknown`, else a plain TransientBrokerError. `what` names the
        account in the errors ("Rithmic account APEX-1")."""
        if not self.client.exists(_holder(login)):
            raise NoHolder(f"{what}: no listener holds its session now (is copier_listen "
                           f"running, and logged in?); nothing was sent")
        request_id = uuid.uuid4().hex
        wait_ms = max(1, int(timeout * 1000))
        body = json.dumps({"id": request_id, "op": op, "args": dict(args)})
        with self.client.pipeline(transaction=True) as pipe:
            # the asker decides when it gives up; the expiry only clears a dead asker's
            pipe.set(_pending(request_id), 1, px=wait_ms + PENDING_GRACE_MS)
            pipe.lpush(_requests(login), body)
            pipe.pexpire(_requests(login), wait_ms + HOLDER_TTL * 1000)
            pipe.execute()
        got = self._pop(request_id, timeout)
        if got is None:
            if self.client.delete(_pending(request_id)):
                raise TransientBrokerError(f"{what}: its session's listener did not take the "
                                           f"request within {timeout:g} s; nothing was sent")
            got = self._pop(request_id, 0.05)  # answered just now?
            if got is None:
                cls = OrderOutcomeUnknown if changes else TransientBrokerError
                raise cls(f"{what}: no answer within {timeout:g} s from its session's "
                          f"listener, which took the request")
        answer = json.loads(got[1])
        if "error" in answer:
            raise _raised(answer["error"])
        result: Mapping[str, Any] = answer["result"]
        return result


    def _pop(self, request_id: str, timeout: float) -> list[bytes] | None:
        return cast("list[bytes] | None",
                    self.client.blpop([_answer(request_id)], timeout=timeout))


class GatewayHolder:
    """The holding side, in the listener: takes the login's requests while it holds the
    session and runs each with `handler` (concurrently: one order waiting for its answer
    does not hold up the next)."""

    def __init__(self, client: aioredis.Redis, login: str, handler: Handler, *,
                 name: str) -> None:
        self._client, self._login, self._handler = client, login, handler
        self._token = f"{name}:{uuid.uuid4().hex[:8]}"
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Hold the login until cancelled; the holder key goes with it."""
        try:
            while True:
                await self._client.set(_holder(self._login), self._token, ex=HOLDER_TTL)
                got = await cast("Awaitable[list[bytes] | None]", self._client.blpop(
                    [_requests(self._login)], timeout=POLL_SECONDS))
                if got is not None:
                    task = asyncio.create_task(self._serve(got[1]))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        finally:
            with contextlib.suppress(Exception):
                if await self._client.get(_holder(self._login)) == self._token.encode():
                    await self._client.delete(_holder(self._login))
            await self._drain()

    async def _drain(self) -> None:
        """The requests already claimed are let answer for a moment, then cancelled (their
        askers then find them in doubt, and look them up)."""
        if not self._tasks:
            return
        _done, late = await asyncio.wait(set(self._tasks), timeout=DRAIN_SECONDS)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    async def _serve(self, raw: bytes) -> None:
        try:
            request = json.loads(raw)
            request_id, op, args = request["id"], request["op"], request["args"]
        except (ValueError, KeyError, TypeError):
            log.error("gateway %s: a request that cannot be read was dropped", self._login)
            return
        if not await self._client.delete(_pending(request_id)):
            log.info("gateway %s: %s %s given up by its asker before it was taken; not run",
                     self._login, op, request_id)
            return
        try:
            answer: dict[str, Any] = {"result": dict(await self._handler(op, args))}
        except BrokerError as exc:
            answer = {"error": {"kind": _kind(exc), "message": exc.message,
                                "retry_after": getattr(exc, "retry_after", None)}}
        except Exception as exc:  # a bug in a handler must answer, not leave the asker waiting
            log.exception("gateway %s: %s failed", self._login, op)
            answer = {"error": {"kind": "unknown_outcome",
                                "message": f"the listener failed: {type(exc).__name__}"}}
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.lpush(_answer(request_id), json.dumps(answer))
            pipe.expire(_answer(request_id), ANSWER_TTL)
            await pipe.execute()
