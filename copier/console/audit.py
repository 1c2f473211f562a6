"""The admin's save paths write the audit log: every add, change and delete a person
makes in a form, an inline or a bulk delete, with before and after
(copier.services.audit). Mixed in before `admin.ModelAdmin`.

Hooked where every save passes whatever a subclass does in `save_model` or
`save_formset` (a kill-switch path that saves a follower its own way): the before is the
row as `get_object` read it for the POST (or, in a list's inline edit, as `save_model`
finds it), the after is the row as the database holds it once the admin logs the change
(`log_change`, `log_addition`), UPDATEs a service made on the way included; an inline's
rows are read before and after `save_related`.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.forms import BaseFormSet
from django.http import HttpRequest

from copier.services import audit

_BEFORE = "_audit_before"  # the request's attribute: (model, pk) -> snapshot


def _befores(request: HttpRequest) -> dict[tuple[type[models.Model], Any], audit.Snapshot]:
    found: dict[tuple[type[models.Model], Any], audit.Snapshot] | None = getattr(
        request, _BEFORE, None)
    if found is None:
        found = {}
        setattr(request, _BEFORE, found)
    return found


def _stored(obj: models.Model) -> models.Model:
    """The row as committed so far in this transaction (what a service's UPDATE left)."""
    return type(obj)._default_manager.filter(pk=obj.pk).first() or obj


class AuditedAdmin:
    """Records what the admin's change, add and delete views and its bulk delete write,
    as the request's user."""

    def get_object(self, request: HttpRequest, object_id: str, from_field: Any = None
                   ) -> Any:
        obj = super().get_object(request, object_id, from_field)  # type: ignore[misc]
        if obj is not None and request.method == "POST":
            _befores(request).setdefault((type(obj), obj.pk), audit.snapshot(obj))
        return obj

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if change:  # a list's inline edit reads no object first
            key = (type(obj), obj.pk)
            if key not in _befores(request):
                _befores(request)[key] = audit.snapshot_stored(type(obj), obj.pk) or {}
        super().save_model(request, obj, form, change)  # type: ignore[misc]

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        logged = super().log_addition(request, obj, message)  # type: ignore[misc]
        audit.change_record(by=request.user, obj=_stored(obj), before=None)
        return logged

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        logged = super().log_change(request, obj, message)  # type: ignore[misc]
        before = _befores(request).pop((type(obj), obj.pk), None)
        if before is not None:
            audit.change_record(by=request.user, obj=_stored(obj), before=before)
        return logged

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        pk, text, before = obj.pk, str(obj), audit.snapshot(obj)
        super().delete_model(request, obj)  # type: ignore[misc]
        audit.delete_record(by=request.user, model=type(obj), pk=pk, text=text, before=before)

    def delete_queryset(self, request: HttpRequest, queryset: models.QuerySet[Any]) -> None:
        gone = [(obj.pk, str(obj), audit.snapshot(obj)) for obj in queryset]
        super().delete_queryset(request, queryset)  # type: ignore[misc]
        for pk, text, before in gone:
            audit.delete_record(by=request.user, model=queryset.model, pk=pk, text=text,
                                before=before, detail="bulk delete")

    def save_related(self, request: HttpRequest, form: Any, formsets: list[BaseFormSet],
                     change: bool) -> None:
        """An inline's rows (a group's followers, a follower's symbol mappings): each one
        added, changed or deleted is an entry of its own, saying whose inline it was."""
        read = [_inline_before(formset) for formset in formsets]
        super().save_related(request, form, formsets, change)  # type: ignore[misc]
        via = f"in {form.instance._meta.verbose_name} {form.instance}"
        for formset, (pk_of, before) in zip(formsets, read, strict=True):
            _inline_record(request, formset, pk_of, before, via)


def _inline_before(formset: BaseFormSet) -> tuple[dict[int, Any], dict[Any, audit.Snapshot]]:
    """Each row's pk by its instance (a deleted row's instance loses its pk in the delete)
    and the rows as stored before the inline saves."""
    pk_of = {id(f.instance): f.instance.pk for f in formset.initial_forms}
    model = formset.model  # type: ignore[attr-defined]
    pks = [pk for pk in pk_of.values() if pk is not None]
    return pk_of, {obj.pk: audit.snapshot(obj)
                   for obj in model._default_manager.filter(pk__in=pks)}


def _inline_record(request: HttpRequest, formset: BaseFormSet, pk_of: dict[int, Any],
                   before: dict[Any, audit.Snapshot], via: str) -> None:
    model = formset.model  # type: ignore[attr-defined]
    for obj in getattr(formset, "new_objects", []):
        audit.change_record(by=request.user, obj=_stored(obj), before=None, detail=via)
    for obj, _fields in getattr(formset, "changed_objects", []):
        audit.change_record(by=request.user, obj=_stored(obj),
                            before=before.get(obj.pk, {}), detail=via)
    for obj in getattr(formset, "deleted_objects", []):
        pk = pk_of.get(id(obj), obj.pk)
        audit.delete_record(by=request.user, model=model, pk=pk, text=str(obj),
                            before=before.get(pk, {}), detail=via)
