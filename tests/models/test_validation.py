"""Model-level validation: each bad input gives a clear error and writes nothing."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from accounts.models import Position, TradingAccount
from accounts.symbols import normalise_symbol
from copier.models import CopyGroup, FailedExit, Follower, LeaderEvent, Order, Quarantine
from copier.services.ingest import FillInput
from core.fields import Secret
from tests.factories import account, group

pytestmark = pytest.mark.django_db


def test_symbols_are_normalised_upper_case_and_trimmed():
    assert normalise_symbol(" mnq ") == "MNQ"
    assert normalise_symbol("ES.Z26") == "ES.Z26"


@pytest.mark.parametrize("bad", ["", "  ", "$$", "A" * 40, None, 5, "MN Q"])
def test_bad_symbols_are_refused(bad):
    with pytest.raises(ValidationError):
        normalise_symbol(bad)


def test_position_rows_store_the_normalised_symbol():
    p = Position.objects.create(account=account("A"), symbol="mnq")
    assert p.symbol == "MNQ"


@pytest.mark.parametrize("multiplier", ["0", "-1", "-0.5"])
def test_multiplier_must_be_greater_than_zero(multiplier):
    g = group("g", account("L"), {})
    f = Follower(group=g, account=account("F"), multiplier=Decimal(multiplier))
    with pytest.raises(ValidationError, match="greater than 0"):
        f.full_clean()
    with pytest.raises(IntegrityError), transaction.atomic():
        f.save()
    assert not Follower.objects.exists()


def test_a_leader_cannot_follow_its_own_group():
    leader = account("L")
    g = group("g", leader, {})
    with pytest.raises(ValidationError, match="cannot follow its own group"):
        Follower(group=g, account=leader).full_clean()


def test_an_account_leading_a_group_cannot_follow_another():
    a, b = account("A"), account("B")
    group("ga", a, {})
    gb = group("gb", b, {})
    with pytest.raises(ValidationError, match="leader or a follower"):
        Follower(group=gb, account=a).full_clean()


def test_a_follower_cannot_become_a_leader():
    f = account("F")
    group("g", account("L"), {f: "1"})
    with pytest.raises(ValidationError, match="leader or a follower"):
        CopyGroup(name="g2", leader=f).full_clean()


def test_an_account_follows_at_most_one_group():
    f = account("F")
    group("g1", account("L1"), {f: "1"})
    g2 = group("g2", account("L2"), {})
    with pytest.raises(ValidationError):
        Follower(group=g2, account=f).full_clean()
    with pytest.raises(IntegrityError), transaction.atomic():
        Follower.objects.create(group=g2, account=f)
    assert Follower.objects.count() == 1


def test_account_names_are_unique_and_required():
    account("A")
    with pytest.raises(ValidationError):
        TradingAccount(name="A", broker="sim").full_clean()
    with pytest.raises(ValidationError):
        TradingAccount(name="  ", broker="sim").full_clean()


def test_unknown_broker_kind_is_refused():
    with pytest.raises(ValidationError, match="broker"):
        TradingAccount(name="X", broker="nope").full_clean()


def test_leader_event_quantity_must_be_positive_in_the_database():
    a = account("L")
    with pytest.raises(IntegrityError), transaction.atomic():
        LeaderEvent.objects.create(account=a, fill_id="x", symbol="ES", side="buy", qty=0,
                                   p0=0, p1=0, received_at="2026-01-01T00:00Z")
    assert not LeaderEvent.objects.exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fill_id": "", "symbol": "ES", "side": "buy", "qty": 1}, "fill id"),
        ({"fill_id": "f", "symbol": "ES", "side": "long", "qty": 1}, "side"),
        ({"fill_id": "f", "symbol": "ES", "side": "buy", "qty": -3}, "quantity"),
        ({"fill_id": "f", "symbol": "ES", "side": "buy", "qty": 0}, "quantity"),
        ({"fill_id": "f", "symbol": "ES", "side": "buy", "qty": "2"}, "quantity"),
        ({"fill_id": "f", "symbol": "ES", "side": "buy", "qty": True}, "quantity"),
        ({"fill_id": "f", "symbol": "!!", "side": "buy", "qty": 1}, "symbol"),
        ({"fill_id": "f", "symbol": "ES", "side": "buy", "qty": 10**9}, "beyond"),
    ],
)
def test_malformed_leader_fills_are_refused_before_anything_is_written(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        FillInput.parse(**kwargs)


def test_one_active_quarantine_per_symbol():
    a = account("F")
    Quarantine.objects.create(account=a, symbol="ES", reason="rejected",
                              created_at="2026-01-01T00:00Z")
    with pytest.raises(IntegrityError), transaction.atomic():
        Quarantine.objects.create(account=a, symbol="ES", reason="rejected",
                                  created_at="2026-01-01T00:00Z")


def test_order_state_machine_refuses_invalid_transitions():
    from copier.models import InvalidTransition

    o = Order(client_order_id="x", status=Order.Status.FILLED)
    with pytest.raises(InvalidTransition, match="filled -> submitting"):
        o.move_to(Order.Status.SUBMITTING)
    o = Order(client_order_id="y")  # submitting: the broker is being asked
    o.move_to(Order.Status.UNKNOWN)
    o.move_to(Order.Status.FILLED)


def test_an_order_the_broker_cancelled_unfilled_is_cancelled_and_stays_so():
    from copier.models import InvalidTransition

    # a placement's own answer may already say the venue ended it unfilled (submitting)
    for before in (Order.Status.ACCEPTED, Order.Status.UNKNOWN, Order.Status.SUBMITTING):
        o = Order(client_order_id="c", status=before)
        o.move_to(Order.Status.CANCELLED)
    with pytest.raises(InvalidTransition, match="cancelled -> filled"):
        o.move_to(Order.Status.FILLED)
    with pytest.raises(InvalidTransition, match="failed -> cancelled"):
        Order(client_order_id="s", status=Order.Status.FAILED).move_to(Order.Status.CANCELLED)


def test_an_order_is_never_stored_while_the_broker_is_being_asked():
    a = account("F")
    with pytest.raises(IntegrityError, match="order_stored_with_an_answer"), \
            transaction.atomic():
        Order.objects.create(client_order_id="z", account=a, symbol="ES", side="buy", qty=1,
                             kind="entry", created_at="2026-01-01T00:00Z")  # submitting


def test_failed_exit_state_machine_refuses_invalid_transitions():
    from copier.models import InvalidTransition

    s = FailedExit.Status
    fe = FailedExit(status=s.DONE)
    with pytest.raises(InvalidTransition, match="done -> pending"):
        fe.move_to(s.PENDING)
    fe = FailedExit()  # queued: pending
    for step in (s.IN_FLIGHT, s.PENDING, s.IN_FLIGHT, s.IN_FLIGHT, s.RESOLVED):
        fe.move_to(step)
    assert not fe.can_move_to(s.IN_FLIGHT)
    with pytest.raises(InvalidTransition, match="pending -> resolved"):
        FailedExit().move_to(s.RESOLVED)  # only an attempt finds nothing left to close


def test_failed_exit_conditional_updates_filter_on_the_same_table():
    s = FailedExit.Status
    assert set(FailedExit.moving_to(s.IN_FLIGHT)) == {s.PENDING, s.IN_FLIGHT}
    assert set(FailedExit.moving_to(s.DONE)) == {s.PENDING, s.IN_FLIGHT}
    assert FailedExit.moving_to(s.RESOLVED) == [s.IN_FLIGHT]


def test_credentials_are_encrypted_at_rest_and_masked_in_repr():
    from django.db import connection

    a = account("A", credentials='{"password": "hunter2-secret"}')
    with connection.cursor() as cur:
        cur.execute("SELECT credentials FROM accounts_tradingaccount WHERE id = %s", [a.pk])
        raw = cur.fetchone()[0]
    assert "hunter2" not in raw
    fresh = TradingAccount.objects.get(pk=a.pk)
    assert fresh.credentials == '{"password": "hunter2-secret"}'
    assert isinstance(fresh.credentials, Secret)
    assert "hunter2" not in repr(fresh.credentials)
