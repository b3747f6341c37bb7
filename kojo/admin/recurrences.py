"""Recurring jobs, edited through the same code as ``kojo.recur()``."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db import transaction

from kojo.admin.common import BoundedJSONField, as_form_error
from kojo.conf import settings
from kojo.models import Recurrence
from kojo.recurrence import DEFINITION, interval_text, save_definition
from kojo.scheduling import clean_importance, clean_params


class RecurrenceForm(forms.ModelForm):
    """Params, interval and importance pass the checks ``kojo.recur()`` makes, so a definition saved here
    cannot make occurrences the database refuses (or a zero interval that would divide by zero)."""

    class Meta:
        model = Recurrence
        fields = [
            "known_as", "job_type", "params", "interval", "reference", "base_time", "importance",
            "is_enabled",
        ]
        field_classes = {"params": BoundedJSONField}

    def clean_params(self):
        return as_form_error(clean_params, self.cleaned_data["params"])

    def clean_interval(self):
        return as_form_error(interval_text, self.cleaned_data["interval"])

    def clean_importance(self):
        importance = self.cleaned_data["importance"]
        return None if importance is None else as_form_error(clean_importance, importance)


@admin.register(Recurrence)
class RecurrenceAdmin(admin.ModelAdmin):
    """Recurring jobs; saving a changed definition goes through the same code as ``kojo.recur()``, so
    a waiting occurrence of the old definition is canceled and the next run follows the new one."""

    form = RecurrenceForm
    list_display = (
        "known_as", "job_type", "interval", "reference", "base_time", "next_run_at", "current_job",
    )
    list_filter = ("is_enabled", "job_type")
    list_select_related = ("job_type", "current_job")
    search_fields = ("known_as",)
    readonly_fields = ("next_run_at", "current_job")

    def save_model(self, request, obj, form, change):
        """Apply what the form changed to the row as it is now, under the lock ``kojo.recur()`` and the
        housekeeper take: the occurrence and next run they set meanwhile are kept, not overwritten
        with what the page showed."""
        if not change:
            save_definition(obj)
            return
        with transaction.atomic(using=settings.DATABASE):
            current = Recurrence.objects.select_for_update().get(pk=obj.pk)
            for name in form.changed_data:
                setattr(current, name, getattr(obj, name))
            if set(form.changed_data) & set(DEFINITION):
                save_definition(current)
            elif form.changed_data:
                current.save(update_fields=form.changed_data)
        obj.next_run_at, obj.current_job = current.next_run_at, current.current_job
