"""The audit log: who did what, when, and what it changed (copier.models.AuditEntry).

Written where a person's change ends up: the admin's save, delete and action paths
(`copier.console.audit.AuditedAdmin`), the kill switch, quarantine and loss-lock services,
the dashboard's follower switch. Not by signals: a signal does not know who asked, and the
kill switch changes rows with UPDATEs that send none.

A secret (an encrypted field: broker credentials, a webhook URL) is never written here,
only that it changed; for a login stored as one encrypted JSON object, which of its fields
changed. Entries are append-only; `audit_prune` is the one way out, a superuser's.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.db import connection, models, transaction

from copier.models import AuditEntry
from core import clock
from core.fields import EncryptedTextField

CHANGED = "changed"  # what a secret's before/after is replaced by
SECRET_NAMES = frozenset({"password"})  # hashed, not encrypted, but no less a secret
# The characters Django's username validator allows: a `by` with others ("cli:alice",
# "auto: ...") is not a user of the site, so no user id is looked up for it.
_USERNAME = re.compile(r"[\w.@+-]+")

Snapshot = dict[str, Any]
Actor = Any  # a user (request.user) or the `by` text a service was given


def _who(by: Actor) -> tuple[str, int | None]:
    """The name to keep and the user's id then, if `by` is (or names) a user."""
    if not isinstance(by, str):
        return str(by.get_username())[:150], by.pk
    name = by[:150]
    if not _USERNAME.fullmatch(name):
        return name, None
    try:
        model = get_user_model()
    except ImproperlyConfigured:  # no auth app (a test's restricted app registry)
        return name, None
    found = model._default_manager.filter(**{model.USERNAME_FIELD: name}).values_list(
        "pk", flat=True).first()
    return name, found


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return str(value) if isinstance(value, str) else value
    if isinstance(value, Decimal):
        return str(value.quantize(Decimal(1)) if value == value.to_integral()
                   else value.normalize())
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def _is_secret(field: models.Field[Any, Any]) -> bool:
    return isinstance(field, EncryptedTextField) or field.name in SECRET_NAMES


def _fields(model: type[models.Model]) -> list[models.Field[Any, Any]]:
    """What a person can change: not the key, not what the database computes or the
    copier keeps for itself (a stream's owner, a start watermark: `editable=False`)."""
    return [f for f in model._meta.concrete_fields
            if not f.primary_key and f.editable and not getattr(f, "generated", False)]


def _many(model: type[models.Model]) -> list[models.Field[Any, Any]]:
    """The many-to-many fields a form edits: a user's groups and permissions, a group's
    permissions (who may trade is decided there)."""
    return [f for f in model._meta.many_to_many if f.editable]


def _members(obj: models.Model, field: models.Field[Any, Any]) -> list[str]:
    """Who or what is in a many-to-many field as stored, sorted; a permission by the
    name `has_perm` takes ("copier.kill_switch")."""
    if obj.pk is None:
        return []
    related = getattr(obj, field.name).all()
    if field.related_model is Permission:
        return sorted(f"{p.content_type.app_label}.{p.codename}"
                      for p in related.select_related("content_type"))
    return sorted(str(o) for o in related)


def snapshot(obj: models.Model) -> Snapshot:
    """The instance's fields as they would be written: a foreign key as "name (#id)", a
    many-to-many field as the sorted list of its members; secrets raw, held only in memory
    to compare (`changes` never keeps them)."""
    out: Snapshot = {}
    for f in _fields(type(obj)):
        value = getattr(obj, f.attname)
        if f.is_relation and value is not None:
            related = getattr(obj, f.name, None)
            value = f"{related} (#{value})"
        out[f.name] = value if _is_secret(f) else _jsonable(value)
    for f in _many(type(obj)):
        out[f.name] = _members(obj, f)
    return out


def snapshot_stored(model: type[models.Model], pk: Any) -> Snapshot | None:
    """The row as the database holds it now (before a save changes it)."""
    obj = model._default_manager.filter(pk=pk).first()
    return None if obj is None else snapshot(obj)


def _secret_changes(name: str, before: Any, after: Any) -> dict[str, str]:
    """A login stored as one JSON object: which of its fields changed, never a value."""
    def parsed(value: Any) -> dict[str, Any] | None:
        try:
            loaded = json.loads(str(value or "") or "{}")
        except ValueError:
            return None
        return loaded if isinstance(loaded, dict) else None

    old, new = parsed(before), parsed(after)
    if old is None or new is None or not (old or new):
        return {name: CHANGED}
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    return {f"{name}.{k}": CHANGED for k in keys} or {name: CHANGED}


def changes_between(model: type[models.Model], before: Snapshot | None,
                    after: Snapshot | None) -> dict[str, Any]:
    """{field: [before, after]} of the fields that differ; a secret: {field: "changed"}.
    None on one side: an object added (before) or deleted (after)."""
    old, new = before or {}, after or {}
    changes: dict[str, Any] = {}
    for f in _fields(model):
        a, b = old.get(f.name), new.get(f.name)
        if _is_secret(f):
            if (a or "") != (b or ""):
                changes.update(_secret_changes(f.name, a, b))
        elif _differs(a, b, before, after, held=_filled):
            changes[f.name] = [a, b]
    for f in _many(model):
        a, b = old.get(f.name), new.get(f.name)
        if _differs(a, b, before, after, held=bool):
            changes[f.name] = [a, b]
    return changes


def _differs(a: Any, b: Any, before: Snapshot | None, after: Snapshot | None, *,
             held: Callable[[Any], bool]) -> bool:
    """Whether a field's [a, b] is recorded. Both sides there: when they differ. One only
    (an object added or deleted): when that side holds something (`held`), so that an
    entry lists what was set or what was there, not every empty field."""
    if before is not None and after is not None:
        return bool(a != b)
    return held(b if after is not None else a)


def _filled(value: Any) -> bool:
    """A field's value is something to show: not unset, not empty text (a zero is)."""
    return value not in (None, "")


def audit_record(*, by: Actor, action: str, obj: models.Model | None = None,
                 object_type: str = "", object_id: Any = "", object_repr: str = "",
                 changes: Mapping[str, Any] | None = None, detail: str = "") -> AuditEntry:
    """Append one entry. In the caller's transaction: it exists exactly when what it
    records was committed."""
    who, user_id = _who(by)
    if obj is not None:
        object_type = object_type or obj._meta.label_lower
        object_id = object_id or obj.pk
        object_repr = object_repr or str(obj)
    return AuditEntry.objects.create(
        at=clock.now(), who=who, user_id=user_id, action=action, object_type=object_type,
        object_id="" if object_id in (None, "") else str(object_id)[:64],
        object_repr=object_repr[:200], changes=_jsonable(dict(changes or {})),
        detail=detail)


def change_record(*, by: Actor, obj: models.Model, before: Snapshot | None,
                  detail: str = "") -> AuditEntry | None:
    """An object saved by a person: added (no `before`) or changed; nothing when the save
    changed nothing."""
    changes = changes_between(type(obj), before, snapshot(obj))
    if before is not None and not changes:
        return None
    action = AuditEntry.Action.CHANGE if before is not None else AuditEntry.Action.ADD
    return audit_record(by=by, action=action, obj=obj, changes=changes, detail=detail)


def delete_record(*, by: Actor, model: type[models.Model], pk: Any, text: str,
                  before: Snapshot, detail: str = "") -> AuditEntry:
    return audit_record(by=by, action=AuditEntry.Action.DELETE,
                        object_type=model._meta.label_lower, object_id=pk, object_repr=text,
                        changes=changes_between(model, before, None), detail=detail)


def audit_prune(*, user: Any, entries: Iterable[AuditEntry] | models.QuerySet[AuditEntry]
                ) -> int:
    """A superuser removes entries (the database refuses anyone else's DELETE: the
    trigger of migration 0020 lets one through only in a transaction that set
    `copier.audit_prune`). The prune itself is recorded: who removed how many, and which."""
    if not getattr(user, "is_superuser", False):
        raise PermissionDenied("Only a superuser may prune the audit log.")
    ids = sorted({e.pk for e in entries})
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('copier.audit_prune', 'on', true)")
        removed, _per_model = AuditEntry.objects.filter(pk__in=ids).delete()
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('copier.audit_prune', 'off', true)")
        span = f" (#{ids[0]} to #{ids[-1]})" if ids else ""
        audit_record(by=user, action=AuditEntry.Action.PRUNE,
                     object_type=AuditEntry._meta.label_lower,
                     object_repr=f"{removed} entries", detail=f"pruned {removed} entries{span}")
    return removed
