"""The gateway between the workers and the listener holding a login's one session
(brokers.gateway), on the test run's real Redis: answers and errors cross as they were,
a request nobody took is never run later, one taken and not answered is in doubt, and a
login with no holder is refused at once."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from django.conf import settings

from brokers import gateway
from brokers.base import (
    OrderOutcomeUnknown,
    PermanentBrokerError,
    TransientBrokerError,
    UnknownContract,
)

pytestmark = pytest.mark.usefixtures("clean_redis")

LOGIN = gateway.login_key("wss://gw.example", "Rithmic Test", "trader1")


class Holder:
    """A real `GatewayHolder` on its own loop and thread, with a handler the test steers."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.delay = 0.0
        self.raises: Exception | None = None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.task: asyncio.Task[None] | None = None

    async def handle(self, op: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        self.calls.append((op, dict(args)))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.raises is not None:
            raise self.raises
        return {"op": op, "echo": dict(args)}

    def start(self) -> Holder:
        self.thread.start()

        async def begin() -> None:
            client = aioredis.Redis.from_url(settings.REDIS_URL)
            holder = gateway.GatewayHolder(client, LOGIN, self.handle, name="test")
            self.task = asyncio.create_task(holder.run())

        asyncio.run_coroutine_threadsafe(begin(), self.loop).result(5)
        deadline = time.monotonic() + 5
        client = redis.Redis.from_url(settings.REDIS_URL)
        while not client.exists(f"{gateway.PREFIX}:{LOGIN}:holder"):
            assert time.monotonic() < deadline, "the holder never took the login"
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        async def end() -> None:
            assert self.task is not None
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(end(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def holder() -> Iterator[Holder]:
    h = Holder().start()
    yield h
    h.stop()


@pytest.fixture
def asker() -> gateway.Gateway:
    return gateway.Gateway.from_url(settings.REDIS_URL)


def _ask(asker: gateway.Gateway, op: str = "order", timeout: float = 2.0, *,
         changes: bool = True, **args: Any) -> Mapping[str, Any]:
    return asker.ask(LOGIN, op, args, timeout=timeout, changes=changes, what="Rithmic F1")


def test_a_request_is_run_by_the_holder_and_answered(holder, asker):
    assert _ask(asker, "order", user_tag="cp1-7-1", qty=2) == {
        "op": "order", "echo": {"user_tag": "cp1-7-1", "qty": 2}}
    assert holder.calls == [("order", {"user_tag": "cp1-7-1", "qty": 2})]


@pytest.mark.parametrize(("raised", "cls"), [
    (PermanentBrokerError("rp_code 13: permission denied"), PermanentBrokerError),
    (UnknownContract("no contract ZZZ6"), UnknownContract),
    (OrderOutcomeUnknown("socket closed before 313"), OrderOutcomeUnknown),
    (TransientBrokerError("gateway busy", retry_after=4.5), TransientBrokerError),
    (RuntimeError("a bug"), OrderOutcomeUnknown),  # a handler's bug: the order may be out
])
def test_errors_cross_as_their_class_with_their_words(holder, asker, raised, cls):
    holder.raises = raised
    with pytest.raises(cls) as caught:
        _ask(asker)
    assert type(caught.value) is cls
    if isinstance(raised, TransientBrokerError) and not isinstance(raised, OrderOutcomeUnknown):
        assert caught.value.message == "gateway busy"
        assert caught.value.retry_after == 4.5  # type: ignore[attr-defined]
    elif not isinstance(raised, RuntimeError):
        assert caught.value.message == raised.args[0]
    else:
        assert "the listener failed: RuntimeError" in caught.value.message


def test_a_login_nobody_holds_is_refused_at_once_and_nothing_is_queued(asker):
    started = time.monotonic()
    with pytest.raises(gateway.NoHolder, match="no listener holds its session"):
        _ask(asker, timeout=5)
    assert time.monotonic() - started < 1
    assert not redis.Redis.from_url(settings.REDIS_URL).keys(f"{gateway.PREFIX}:*")


def test_a_request_nobody_took_in_time_is_not_sent_then_nor_later(asker):
    """The holder's key is there but it does not take requests (stuck): the asker gives up,
    and the holder that takes the request afterwards does not run it."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.set(f"{gateway.PREFIX}:{LOGIN}:holder", "stuck", ex=10)
    with pytest.raises(TransientBrokerError, match="nothing was sent") as caught:
        _ask(asker, timeout=0.3, user_tag="cp1-7-2")
    assert not isinstance(caught.value, OrderOutcomeUnknown)  # a retry is safe
    assert client.llen(f"{gateway.PREFIX}:{LOGIN}:requests") == 1
    late = Holder().start()
    try:
        deadline = time.monotonic() + 3
        while client.llen(f"{gateway.PREFIX}:{LOGIN}:requests"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.1)
        assert late.calls == []  # taken from the list, and dropped: its asker gave up
    finally:
        late.stop()


@pytest.mark.parametrize(("changes", "cls"), [(True, OrderOutcomeUnknown),
                                               (False, TransientBrokerError)])
def test_a_request_taken_and_not_answered_in_time_is_in_doubt_if_it_changes_something(
        holder, asker, changes, cls):
    holder.delay = 0.6
    with pytest.raises(cls, match="which took the request") as caught:
        _ask(asker, timeout=0.2, changes=changes)
    assert type(caught.value) is cls
    assert len(holder.calls) == 1  # it ran: once


def test_requests_are_run_together_not_one_after_the_other(holder, asker):
    holder.delay = 0.4
    results: list[Mapping[str, Any]] = []
    threads = [threading.Thread(target=lambda i=i: results.append(_ask(asker, n=i)))
               for i in range(4)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert sorted(r["echo"]["n"] for r in results) == [0, 1, 2, 3]
    assert time.monotonic() - started < 1.2  # four 0.4 s requests: not 1.6 s


def test_a_request_that_cannot_be_read_is_dropped_and_the_holder_goes_on(holder, asker):
    redis.Redis.from_url(settings.REDIS_URL).lpush(f"{gateway.PREFIX}:{LOGIN}:requests",
                                                   b"not json", json.dumps({"id": 1}))
    assert _ask(asker, "positions", changes=False) == {"op": "positions", "echo": {}}


def test_a_holder_that_stops_lets_its_login_go(asker):
    h = Holder().start()
    h.stop()
    with pytest.raises(gateway.NoHolder):
        _ask(asker)


def test_the_login_key_names_no_user():
    assert "trader1" not in LOGIN
    assert gateway.login_key("wss://gw.example", "Rithmic Test", "trader2") != LOGIN
