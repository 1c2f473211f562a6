"""Alerts: a person is told when copying stopped doing its job for an account.

An outbox. The service that changes the state (a quarantine, a pause, an exit given
up) writes an `Alert` row in its own transaction, so an alert exists exactly when
its change was committed: never for a change that rolled back, never lost with a
crash. The periodic `alerts_send` (Celery task `copier.send_alerts`, on the
housekeeping queue) sends the due rows later, grouped per channel and rate-limited
(at most one message per channel per `COPIER_ALERT_INTERVAL_SECONDS`; a storm
becomes one summary), by email (Django's mail, `EMAIL_*` settings) and to a
Slack/Discord compatible webhook. A delivery that fails is retried after a backoff
and blocks nothing: copying never waits for an alert.

A channel is a copy group's `AlertConfig`; a group without one, and an alert about
no group, goes to the operator's destinations from the environment
(`COPIER_ALERT_EMAILS`, `COPIER_ALERT_WEBHOOK_URL`). Webhook URLs are tokens: they
are never logged, nor written into an error kept on a row. A webhook is posted to
only at a public address, judged at each send (copier.outbound): the person who
typed the URL may not point the worker at loopback or the operator's network.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import httpx
from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.db import IntegrityError, transaction
from django.db.models import Q

from accounts.models import ConnectionState, TradingAccount
from copier import outbound
from copier.models import (
    Alert,
    AlertConfig,
    AlertKind,
    AlertThrottle,
    CopyGroup,
    Follower,
    alert_emails_split,
    webhook_policy,
)
from core import clock

log = logging.getLogger(__name__)

OPERATOR = "operator"
# A sender that claimed alerts and died before marking them: taken over after this.
STALE_CLAIM = dt.timedelta(minutes=5)
MAX_BACKOFF = dt.timedelta(hours=1)
SUMMARY_LINES = 20  # detail lines in one message; the rest are counted
DISCORD_MAX = 2000  # Discord refuses a longer `content`

_PLURAL = {
    AlertKind.QUARANTINE: "quarantines", AlertKind.PAUSE: "pauses",
    AlertKind.ABANDONED_EXIT: "abandoned exits", AlertKind.REJECTION: "rejections",
    AlertKind.DISCONNECT: "disconnects", AlertKind.KILL_SWITCH: "kill switch alerts",
    AlertKind.LOSS_LIMIT: "daily loss limit alerts",
}


# --- raising (inside the caller's transaction) ---------------------------------------------


def alert_raise(
    *, kind: str, text: str, group: CopyGroup | None = None,
    account: TradingAccount | None = None, about: str = "", dedupe_key: str | None = None,
) -> list[Alert]:
    """Record an alert for sending; call it inside the transaction of the change it reports.

    Without `group`, the alert goes to every group the account leads or follows (the
    operator's channel when it is in none). `about` names it in a summary ('F1 MNQ');
    `dedupe_key` makes a repeated raise of the same occurrence a no-op (per group).
    Returns the rows written (none for a duplicate).
    """
    kind = AlertKind(kind).value  # an unknown kind is a bug: ValueError here, not at send
    groups: Sequence[CopyGroup | None] = [group] if group is not None else _groups_of(account)
    return _rows_write(_rows(AlertSpec(kind, text, account, about, dedupe_key), groups,
                             clock.now()))


@dataclass(frozen=True, slots=True)
class AlertSpec:
    """One account's alert for `alerts_raise`, as `alert_raise` takes it."""

    kind: str
    text: str
    account: TradingAccount | None
    about: str = ""
    dedupe_key: str | None = None


def alerts_raise(specs: Sequence[AlertSpec]) -> list[Alert]:
    """`alert_raise` of many accounts' alerts together (each to every group its account
    leads or follows), inside the caller's transaction: the groups of all read in one
    statement, the rows written in one. The account guard raises one per account a
    market move crossed, and the next batch waits for them."""
    for spec in specs:
        AlertKind(spec.kind)  # an unknown kind is a bug: ValueError here, not at send
    groups = _groups_of_many([s.account.pk for s in specs if s.account is not None])
    now = clock.now()
    rows = [row for spec in specs for row in _rows(
        spec, groups.get(spec.account.pk, [None]) if spec.account else [None], now)]
    return _rows_write(rows)


def _rows(spec: AlertSpec, groups: Sequence[CopyGroup | None], now: dt.datetime
          ) -> list[Alert]:
    return [
        Alert(kind=AlertKind(spec.kind).value, group=g, account=spec.account,
              about=(spec.about or str(spec.account or ""))[:100], text=spec.text,
              created_at=now, next_attempt_at=now,
              dedupe_key=f"{spec.dedupe_key}:{g.pk if g else ''}" if spec.dedupe_key else None)
        for g in groups
    ]


def _rows_write(rows: list[Alert]) -> list[Alert]:
    """The rows not raised already (their dedupe key), written in one statement; a
    concurrent twin (the insert's IntegrityError) sends them one by one, each in a
    savepoint that leaves the caller's transaction usable."""
    keys = [r.dedupe_key for r in rows if r.dedupe_key is not None]
    seen = set(Alert.objects.filter(dedupe_key__in=keys).values_list("dedupe_key", flat=True)
               ) if keys else set()
    fresh, unique = [], set()
    for row in rows:
        if row.dedupe_key is not None:
            if row.dedupe_key in seen or row.dedupe_key in unique:
                continue
            unique.add(row.dedupe_key)
        fresh.append(row)
    try:
        with transaction.atomic():
            written = Alert.objects.bulk_create(fresh)
    except IntegrityError:
        written = []
        for row in fresh:
            row.pk = None
            try:
                with transaction.atomic():
                    row.save()
            except IntegrityError:
                continue
            written.append(row)
    for alert in written:
        log.info("alert raised: %s %s", alert.kind, alert.about,
                 extra={"alert_kind": alert.kind,
                        "account": alert.account.name if alert.account else ""})
    return written


def _groups_of(account: TradingAccount | None) -> list[CopyGroup | None]:
    if account is None:
        return [None]
    groups: list[CopyGroup | None] = list(CopyGroup.objects.filter(
        Q(leader=account) | Q(followers__account=account)).distinct().order_by("id"))
    return groups or [None]


def _groups_of_many(account_ids: Iterable[int]) -> dict[int, list[CopyGroup | None]]:
    """`_groups_of` of each account in two statements, by account id."""
    ids = set(account_ids)
    pairs = [*CopyGroup.objects.filter(leader_id__in=ids).values_list("leader_id", "id"),
             *Follower.objects.filter(account_id__in=ids).values_list("account_id", "group_id")]
    groups = CopyGroup.objects.in_bulk({g for _a, g in pairs})
    out: dict[int, list[CopyGroup | None]] = {}
    for account_id, group_id in sorted(set(pairs), key=lambda p: (p[0], p[1])):
        out.setdefault(account_id, []).append(groups[group_id])
    return out


def disconnects_check() -> int:
    """Accounts disconnected longer than their group's threshold raise one alert each time.

    Periodic. One alert per disconnection and group (its `last_disconnected_at` keys it),
    however often this runs; a follower or group that is switched off is not watched.
    """
    now = clock.now()
    raised = 0
    accounts = TradingAccount.objects.filter(
        connection_state=ConnectionState.DISCONNECTED, last_disconnected_at__isnull=False)
    for account in accounts:
        assert account.last_disconnected_at is not None
        away = now - account.last_disconnected_at
        for group in _watched_groups(account):
            config = AlertConfig.objects.filter(group=group).first()
            threshold = (config.disconnect_after_seconds if config
                         else settings.COPIER_ALERT_DISCONNECT_SECONDS)
            if away.total_seconds() < threshold:
                continue
            raised += len(alert_raise(
                kind=AlertKind.DISCONNECT, group=group, account=account, about=account.name,
                text=(f"{account.name} has been disconnected from its broker for "
                      f"{int(away.total_seconds())} s (since "
                      f"{account.last_disconnected_at:%Y-%m-%d %H:%M:%S} UTC): "
                      f"{account.last_error or 'no reason given'}"),
                dedupe_key=f"disconnect:{account.pk}:{account.last_disconnected_at.isoformat()}",
            ))
    return raised


def _watched_groups(account: TradingAccount) -> list[CopyGroup]:
    led = list(CopyGroup.objects.filter(leader=account, enabled=True))
    followed = [f.group for f in Follower.objects.select_related("group").filter(
        account=account, enabled=True, group__enabled=True)]
    return led + followed


# --- sending (the periodic task) ---------------------------------------------------------


def alerts_send() -> int:
    """Send what is due, one message per channel at most per interval. Returns alerts sent.

    Safe under concurrent senders: a channel is claimed under its throttle row's lock
    (SKIP LOCKED: a second sender moves on to other channels), and its alerts are
    marked `sending` before anything leaves; the network is spoken to outside any
    transaction.
    """
    now = clock.now()
    sent = 0
    for key in _due_channels(now):
        batch = _claim(key, now)
        if batch:
            sent += _deliver(key, batch)
    return sent


def _due(now: dt.datetime) -> Q:
    return (Q(status=Alert.Status.PENDING, next_attempt_at__lte=now)
            | Q(status=Alert.Status.SENDING, claimed_at__lte=now - STALE_CLAIM))


def _channel(group_id: int | None) -> str:
    return f"group:{group_id}" if group_id is not None else OPERATOR


def _channel_filter(key: str) -> Q:
    return Q(group__isnull=True) if key == OPERATOR else Q(group_id=int(key.split(":")[1]))


def _due_channels(now: dt.datetime) -> list[str]:
    group_ids = Alert.objects.filter(_due(now)).values_list("group_id", flat=True).distinct()
    return sorted({_channel(g) for g in group_ids})


def _claim(key: str, now: dt.datetime) -> list[Alert]:
    """The channel's due alerts, marked `sending`; none while the channel is rate-limited
    or another sender holds it."""
    interval = dt.timedelta(seconds=settings.COPIER_ALERT_INTERVAL_SECONDS)
    AlertThrottle.objects.bulk_create([AlertThrottle(key=key)], ignore_conflicts=True)
    with transaction.atomic():
        throttle = AlertThrottle.objects.select_for_update(skip_locked=True).filter(
            key=key).first()
        if throttle is None:  # another sender is on this channel now
            return []
        if throttle.last_sent_at is not None and now - throttle.last_sent_at < interval:
            return []
        batch = list(Alert.objects.select_for_update(skip_locked=True, of=("self",))
                     .filter(_due(now), _channel_filter(key)).select_related("group")
                     .order_by("id"))
        if not batch:
            return []
        Alert.objects.filter(pk__in=[a.pk for a in batch]).update(
            status=Alert.Status.SENDING, claimed_at=now)
        throttle.last_sent_at = now
        throttle.save(update_fields=["last_sent_at"])
    return batch


@dataclass(frozen=True, slots=True)
class Channel:
    """Where one channel's messages go; `wants` filters the kinds it asked for."""

    name: str
    emails: list[str]
    webhook_url: str
    wants: Callable[[str], bool]


def channel_for(key: str, group: CopyGroup | None) -> Channel:
    config = AlertConfig.objects.filter(group=group).first() if group is not None else None
    if config is not None:
        return Channel(group.name if group else OPERATOR, alert_emails_split(config.emails),
                       str(config.webhook_url or ""), config.wants)
    return Channel(group.name if group else OPERATOR,
                   alert_emails_split(settings.COPIER_ALERT_EMAILS),
                   settings.COPIER_ALERT_WEBHOOK_URL, lambda kind: True)


def _deliver(key: str, batch: list[Alert]) -> int:
    """Send the batch to each destination that has not had it yet; record what arrived."""
    channel = channel_for(key, batch[0].group)
    now = clock.now()
    wanted = [a for a in batch if channel.wants(a.kind)]
    unwanted = [a for a in batch if not channel.wants(a.kind)]
    destinations = _destinations(channel)
    if not destinations:
        unwanted, wanted = batch, []
    errors = _destinations_send(channel, destinations, wanted)
    _outcomes_save(wanted, unwanted, errors, now,
                   "no destination configured" if not destinations else "kind turned off")
    return sum(1 for a in wanted if a.status == Alert.Status.SENT)


def _destinations(channel: Channel) -> dict[str, Callable[[str, str], None]]:
    """How the channel's messages go out, by the name an alert records once it arrived
    there ({}: the channel has nowhere to send, its alerts are dropped)."""
    destinations: dict[str, Callable[[str, str], None]] = {}
    if channel.emails:
        destinations["email"] = lambda subject, body: _email_send(channel.emails, subject, body)
    if channel.webhook_url:
        destinations["webhook"] = lambda subject, body: _webhook_post(
            channel.webhook_url, subject, body)
    return destinations


def _destinations_send(channel: Channel, destinations: dict[str, Callable[[str, str], None]],
                       alerts: list[Alert]) -> dict[str, str]:
    """One message per destination, of the alerts it has not had yet (a retry does not
    send again where they arrived); the errors by destination, which keep them pending."""
    errors: dict[str, str] = {}
    for name, send in destinations.items():
        todo = [a for a in alerts if name not in a.delivered]
        if not todo:
            continue
        subject, body = message_compose(channel.name, todo)
        try:
            send(subject, body)
        except Exception as exc:  # whatever the cause, the alert is kept and retried
            errors[name] = _safe_error(exc)
            log.warning("alert delivery by %s to channel %s failed: %s", name, channel.name,
                        errors[name])
            continue
        for alert in todo:
            alert.delivered = [*alert.delivered, name]
    return errors


def _outcomes_save(wanted: list[Alert], unwanted: list[Alert], errors: dict[str, str],
                   now: dt.datetime, drop_note: str) -> None:
    for alert in wanted:
        alert.attempts += 1
        alert.claimed_at = None
        if errors:
            alert.status = Alert.Status.PENDING
            alert.last_error = "; ".join(f"{k}: {v}" for k, v in errors.items())[:2000]
            alert.next_attempt_at = now + _backoff(alert.attempts)
        else:
            alert.status, alert.sent_at, alert.last_error = Alert.Status.SENT, now, ""
    for alert in unwanted:
        alert.status, alert.claimed_at, alert.last_error = Alert.Status.DROPPED, None, drop_note
    Alert.objects.bulk_update(
        [*wanted, *unwanted],
        ["status", "attempts", "claimed_at", "delivered", "sent_at", "last_error",
         "next_attempt_at"])


def _backoff(attempts: int) -> dt.timedelta:
    return min(MAX_BACKOFF, dt.timedelta(seconds=60 * 2 ** min(attempts - 1, 10)))


def _safe_error(exc: BaseException) -> str:
    """What failed, without the URL: httpx puts the request's URL (the webhook's token)
    into its messages, so only the type and, for an HTTP answer, its status are kept."""
    if isinstance(exc, outbound.AddressRefused):
        return f"webhook refused: {exc} ({outbound.ALLOW_HINT})"
    if isinstance(exc, outbound.BadUrl):
        return f"webhook URL {exc}"
    if isinstance(exc, outbound.HostUnresolved):
        return f"webhook unreachable ({exc})"
    if isinstance(exc, httpx.HTTPStatusError) and exc.response.is_redirect:
        return (f"webhook answered HTTP {exc.response.status_code}, a redirect (not "
                "followed)")
    if isinstance(exc, httpx.HTTPStatusError):
        return f"webhook answered HTTP {exc.response.status_code}"
    if isinstance(exc, httpx.HTTPError):
        return f"webhook unreachable ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}"[:500]


# --- messages ----------------------------------------------------------------------------


def message_compose(channel: str, alerts: Sequence[Alert]) -> tuple[str, str]:
    """(subject, body): one alert as it is; several as a summary line, then the details."""
    if len(alerts) == 1:
        alert = alerts[0]
        return f"[copier] {channel}: {_first_line(alert.text)}", alert.text
    headline = summary_line(alerts)
    lines = [f"- {_first_line(a.text)}" for a in alerts[:SUMMARY_LINES]]
    if len(alerts) > SUMMARY_LINES:
        lines.append(f"... and {len(alerts) - SUMMARY_LINES} more")
    return f"[copier] {channel}: {headline}", headline + "\n" + "\n".join(lines)


def summary_line(alerts: Iterable[Alert]) -> str:
    """'12 alerts: 10 quarantines (F1 MNQ, F2 MNQ, F3 ES, ...), 2 pauses (F4, F5)'."""
    alerts = list(alerts)
    counts = Counter(a.kind for a in alerts)
    parts = []
    for kind, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        abouts = list(dict.fromkeys(a.about for a in alerts if a.kind == kind and a.about))
        named = ", ".join(abouts[:3]) + (", ..." if len(abouts) > 3 else "")
        label = _PLURAL[AlertKind(kind)] if n > 1 else AlertKind(kind).label.lower()
        parts.append(f"{n} {label}" + (f" ({named})" if named else ""))
    return f"{len(alerts)} alerts: " + ", ".join(parts)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _email_send(recipients: list[str], subject: str, body: str) -> None:
    connection = get_connection(timeout=settings.EMAIL_TIMEOUT)
    EmailMessage(subject=subject[:200], body=body, to=recipients,
                 from_email=settings.DEFAULT_FROM_EMAIL, connection=connection).send()


def _webhook_post(url: str, subject: str, body: str) -> None:
    """Slack reads `text`, Discord `content`: both are sent, each ignores the other.

    The host is resolved and judged here, at each send, and the POST goes to the address
    judged (copier.outbound): the form's check alone would let a DNS answer changed since
    then point the worker at loopback or the operator's network."""
    text = "\n".join([subject, *body.splitlines()[1:]])
    payload = {"text": text, "content": text[:DISCORD_MAX]}
    target = outbound.url_target(url, webhook_policy())
    response = outbound.post_json(target, payload,
                                  timeout=settings.COPIER_ALERT_WEBHOOK_TIMEOUT)
    response.raise_for_status()
