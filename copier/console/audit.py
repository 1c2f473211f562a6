"""The admin's save paths write the audit log: every add, change and delete a person
makes in a form, an inline or a bulk delete, with before and after
(copier.services.audit). Mixed in before `admin.ModelAdmin`.

The before is read from the database at the moment of the save, inside the admin's
transaction: the form has already changed the instance in memory by then.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.forms import BaseFormSet, ModelForm
from django.http import HttpRequest

from copier.services import audit


class AuditedAdmin:
    """Records what `save_model`, `save_formset`, `delete_model` and `delete_queryset`
    write, as the request's user."""

    def save_model(self, request: HttpRequest, obj: models.Model, form: ModelForm,
                   change: bool) -> None:
        before = audit.snapshot_stored(type(obj), obj.pk) if change else None
        super().save_model(request, obj, form, change)  # type: ignore[misc]
        audit.change_record(by=request.user, obj=obj, before=before)

    def delete_model(self, request: HttpRequest, obj: models.Model) -> None:
        pk, text, before = obj.pk, str(obj), audit.snapshot(obj)
        super().delete_model(request, obj)  # type: ignore[misc]
        audit.delete_record(by=request.user, model=type(obj), pk=pk, text=text, before=before)

    def delete_queryset(self, request: HttpRequest, queryset: models.QuerySet[Any]) -> None:
        gone = [(obj.pk, str(obj), audit.snapshot(obj)) for obj in queryset]
        super().delete_queryset(request, queryset)  # type: ignore[misc]
        for pk, text, before in gone:
            audit.delete_record(by=request.user, model=queryset.model, pk=pk, text=text,
                                before=before, detail="bulk delete")

    def save_formset(self, request: HttpRequest, form: ModelForm, formset: BaseFormSet,
                     change: bool) -> None:
        """An inline's rows (a group's followers, a follower's symbol mappings): each one
        added, changed or deleted is an entry of its own, saying whose inline it was."""
        model = formset.model  # type: ignore[attr-defined]
        # a deleted row's instance loses its pk in the delete: known by the object itself
        pk_of = {id(f.instance): f.instance.pk for f in formset.initial_forms}
        before = {obj.pk: audit.snapshot(obj)
                  for obj in model._default_manager.filter(pk__in=list(pk_of.values()))}
        super().save_formset(request, form, formset, change)  # type: ignore[misc]
        via = f"in {form.instance._meta.verbose_name} {form.instance}"
        for obj in formset.new_objects:  # type: ignore[attr-defined]
            audit.change_record(by=request.user, obj=obj, before=None, detail=via)
        for obj, _fields in formset.changed_objects:  # type: ignore[attr-defined]
            audit.change_record(by=request.user, obj=obj, before=before.get(obj.pk, {}),
                                detail=via)
        for obj in formset.deleted_objects:  # type: ignore[attr-defined]
            pk = pk_of.get(id(obj), obj.pk)
            audit.delete_record(by=request.user, model=model, pk=pk, text=str(obj),
                                before=before.get(pk, {}), detail=via)
