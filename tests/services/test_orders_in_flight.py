"""Issue 18, items 1 and 2, at the local venues: orders the venue acknowledges before they
fill (`late_fill`), and exits it fills in part and cancels (`cancel_rest`).

Each test failed on 190145e: the copier judged the next leader event on a position its
working order was still changing (the follower ended short 2 with its leader flat, or long
3 unmanaged), and an exit cancelled after a part filled was recorded `filled` with nothing
queued (the follower kept 2 with its leader flat). Everything runs through the real
adapters and streams against the venue's own books.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from accounts.models import TradingAccount
from copier.models import Decision, FailedExit, Order
from core import clock
from devkit.localvenue import LocalVenue, venue_start
from devkit.replay import EPOCH, Replay, eager_tasks
from devkit.replay_brokers import VenueBrokerDriver
from devkit.scenario import Step, load

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__")]


@pytest.fixture(scope="module", params=["projectx", "tradovate"])
def venue(request: pytest.FixtureRequest) -> Iterator[LocalVenue]:
    started = venue_start(request.param)
    yield started
    started.stop()


class World:
    def __init__(self, venue: LocalVenue, prefix: str) -> None:
        self.venue = venue
        self.prefix = prefix
        doc = {"accounts": [{"name": f"{prefix}L"}, {"name": f"{prefix}F"}],
               "groups": [{"name": f"{prefix}g", "leader": f"{prefix}L",
                           "followers": [{"account": f"{prefix}F", "multiplier": "1"}]}],
               "steps": []}
        self.driver = VenueBrokerDriver(venue, ["ES"])
        self.replay = Replay(load(json.dumps(doc)), broker=self.driver)
        self.n = 0

    def start(self) -> None:
        self.replay._setup()

    def step(self, op: str, **args: object) -> None:
        self.n += 1
        getattr(self.replay, f"_op_{op}")(Step(self.n, op, dict(args)))

    def leader(self, side: str, qty: int) -> None:
        self.step("fill", account=f"{self.prefix}L", symbol="ES", side=side, qty=qty)

    @property
    def follower(self) -> TradingAccount:
        return TradingAccount.objects.get(name=f"{self.prefix}F")

    def fault(self, name: str) -> None:
        self.venue.inject(name, account_external_id=self.follower.external_id)

    def late_fills_arrive(self) -> None:
        """The venue's delayed fills land (its `late_fill_delay`), and the follower's
        stream brings them to the copier."""
        time.sleep(0.6)
        self.replay._pump(self.follower)

    def held(self) -> dict[str, int]:
        return self.driver.positions([self.follower.name]).get(self.follower.name, {})


@pytest.fixture
def world(venue: LocalVenue, request: pytest.FixtureRequest) -> Iterator[World]:
    made = World(venue, f"t{abs(hash(request.node.name)) % 10**6}x")
    clock.freeze(EPOCH)
    try:
        with eager_tasks():
            made.start()
            yield made
    finally:
        clock.release()
        made.driver.close()


def test_a_working_exit_holds_the_leaders_next_exit_until_it_filled(world):
    """Leader 3 -> 1 -> 0; the follower's sell 2 is still working when the leader's exit
    to flat comes: that exit is judged once the sell 2 filled (C = 1), not on C = 3."""
    world.leader("buy", 3)
    world.fault("late_fill")
    world.leader("sell", 2)
    world.leader("sell", 1)
    assert not Decision.objects.filter(account=world.follower, event__p1=0).exists()
    world.late_fills_arrive()
    assert world.held() == {}
    sells = list(Order.objects.filter(account=world.follower, side="sell").order_by("id")
                 .values_list("qty", "filled_qty", "status"))
    assert sells == [(2, 2, "filled"), (1, 1, "filled")]


def test_a_working_entry_holds_the_leaders_exit_until_it_filled(world):
    """Leader 0 -> 3 -> 0 with the buy 3 still working at the exit: the exit is judged
    once the buy filled (C = 3: sell 3), not on C = 0 (`nothing_to_close`, long 3 left)."""
    world.fault("late_fill")
    world.leader("buy", 3)
    world.leader("sell", 3)
    world.late_fills_arrive()
    assert world.held() == {}
    reasons = list(Decision.objects.filter(account=world.follower).order_by("event_id")
                   .values_list("reason", flat=True))
    assert reasons == ["copied", "copied"]


def test_an_exit_filled_in_part_and_cancelled_leaves_its_rest_queued(world):
    """Leader 3 -> 0; the venue fills 1 of the sell 3 and cancels 2: the rest is a failed
    attempt in the Failed Exit Queue, and its retry closes the follower."""
    world.leader("buy", 3)
    world.fault("cancel_rest")
    world.leader("sell", 3)
    world.replay._pump(world.follower)
    exit_order = Order.objects.get(account=world.follower, side="sell")
    assert (exit_order.status, exit_order.filled_qty, exit_order.qty) == ("filled", 1, 3)
    [queued] = FailedExit.objects.filter(account=world.follower)
    assert (queued.side, queued.qty, queued.status, queued.attempts) == ("sell", 2, "pending", 1)
    assert Decision.objects.get(account=world.follower, event__p1=0).reason == "exit_queued"
    world.step("advance", seconds=10)
    queued.refresh_from_db()
    assert queued.status == "done"
    assert world.held() == {}
