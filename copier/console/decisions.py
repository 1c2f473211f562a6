"""Decisions, events and orders as the console shows them: sentences, legs in words,
latencies, and the changelist links that join accounts, events, decisions and orders."""

from __future__ import annotations

from urllib.parse import urlencode

from django.db.models import QuerySet
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from copier.console.latency import SLOW_MS
from copier.console.sentences import DecisionFacts, decision_sentence, legs_text
from copier.models import Decision, LeaderEvent, Order
from core.trading import ANSWERED


def decision_facts(decision: Decision) -> DecisionFacts:
    """A leader event's decision (an operator action's has no leader move: `action_text`)."""
    event = decision.event
    assert event is not None, "an operator action's decision has no leader move"
    return DecisionFacts(
        follower=decision.account.name, symbol=decision.symbol, reason=decision.reason,
        held=decision.position_before or 0, expected_before=decision.expected_before or 0,
        expected_after=decision.expected_after or 0, leader_before=event.p0,
        leader_after=event.p1, planned=decision.planned_legs or (),
        placed=decision.placed_legs or (), held_after=decision.position_after,
        notes=decision.note_list(), close_only_event=event.close_only)


def action_text(decision: Decision) -> str:
    """A kill-switch action on one follower: who did what, and what it sent."""
    action = decision.action
    what = action.get_kind_display() if action is not None else "operator action"
    by = f" by {action.by}" if action is not None else ""
    where = f" {decision.symbol}" if decision.symbol else ""
    held = ("" if decision.position_before is None
            else f", held {decision.position_before:+d}{where}")
    legs = legs_text(decision.placed_legs or decision.planned_legs or (), outcomes=True)
    sent = f": {legs}" if legs else ": nothing sent"
    note = f" ({decision.detail})" if decision.detail else ""
    return f"{what}{by} on {decision.account.name}{held}{sent}{note}."


def decision_text(decision: Decision) -> str:
    if decision.event_id is None:
        return action_text(decision)
    return decision_sentence(decision_facts(decision))


def changelist_url(model: str, **filters: object) -> str:
    """The admin list of `model` ("copier.decision") filtered, e.g. account__id__exact=3."""
    app, name = model.split(".")
    query = urlencode({k: str(v) for k, v in filters.items()})
    return reverse(f"admin:{app}_{name}_changelist") + (f"?{query}" if query else "")


def change_url(obj: object) -> str:
    meta = obj._meta  # type: ignore[attr-defined]
    return reverse(f"admin:{meta.app_label}_{meta.model_name}_change",
                   args=[obj.pk])  # type: ignore[attr-defined]


def link(url: str, text: object, testid: str = "") -> SafeString:
    if testid:
        return format_html('<a href="{}" data-testid="{}">{}</a>', url, testid, text)
    return format_html('<a href="{}">{}</a>', url, text)


def links(pairs: list[tuple[str, str]]) -> SafeString:
    return format_html_join(" · ", '<a href="{}">{}</a>', pairs)


def order_latency_ms(order: Order, event: LeaderEvent | None) -> float | None:
    """Fill read -> this order's answer (the measure of copier.console.latency)."""
    if event is None or order.completed_at is None:
        return None
    return max(0.0, (order.completed_at - event.received_at).total_seconds() * 1000)


def latency_html(ms: float | None) -> SafeString:
    if ms is None:
        return mark_safe('<span class="latency none">-</span>')  # a constant
    slow = ms > SLOW_MS
    return format_html('<span class="latency{}" data-testid="latency"{}>{} ms</span>',
                       " slow" if slow else "",
                       format_html(' title="slower than {} ms"', SLOW_MS) if slow else "",
                       f"{ms:.0f}")


def event_follower_latencies(event: LeaderEvent) -> dict[int, float]:
    """Per follower account: its slowest order's latency for this event (when it was in
    line again, as far as the copier can tell)."""
    out: dict[int, float] = {}
    orders: QuerySet[Order] = Order.objects.filter(
        decision__event=event, completed_at__isnull=False,
        status__in=ANSWERED)
    for order in orders:
        ms = order_latency_ms(order, event)
        if ms is not None:
            out[order.account_id] = max(ms, out.get(order.account_id, 0.0))
    return out
