"""Pieces the kojo admin pages share: form fields that fail politely, read-only pages, messages."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError

from kojo import validators
from kojo.exceptions import KojoError


class WorkerField(forms.ChoiceField):
    """A select of the registered workers that refuses anything else with the shared validator's message."""

    def validate(self, value):
        forms.Field.validate(self, value)
        if value:
            validators.validate_worker(value)


class BoundedJSONField(forms.JSONField):
    """JSON nested too deeply for the parser is a form error, not a RecursionError (a server error)."""

    too_deep = "This JSON is nested too deeply."

    def to_python(self, value):
        try:
            return super().to_python(value)
        except RecursionError:
            raise ValidationError(self.too_deep, code="invalid") from None

    def bound_data(self, data, initial):
        try:
            return super().bound_data(data, initial)
        except RecursionError:
            return forms.fields.InvalidJSONInput(data)

    def prepare_value(self, value):
        """Django writes the JSON back unescaped; a lone surrogate (sent as \\ud800) could not be encoded
        into the page, so such text is shown escaped."""
        text = super().prepare_value(value)
        try:
            text.encode()
        except UnicodeEncodeError:
            text = json.dumps(value, cls=self.encoder)
        return text


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def report(model_admin, request, verb: str, done: list[str], refused: list[str]) -> None:
    """One message for what was done and one listing each refusal with its reason."""
    if done:
        model_admin.message_user(request, f"{verb} {', '.join(done)}.", messages.SUCCESS)
    if refused:
        model_admin.message_user(request, f"Refused {'; '.join(refused)}.", messages.WARNING)
    if not done and not refused:
        model_admin.message_user(request, "Nothing was selected.", messages.INFO)


def as_form_error(clean, value):
    """Run one of the API's cleaners, turning its KojoError into the form's error for the field."""
    try:
        return clean(value)
    except KojoError as error:
        raise ValidationError(str(error), code="invalid") from None
