"""Retrying only the exception classes a type lists."""

import pytest
from django.core.exceptions import ValidationError

from kojo.registry import Registry
from kojo.retries import is_retryable

pytestmark = pytest.mark.django_db


def test_empty_retry_on_retries_every_exception(make_job_type):
    assert is_retryable(make_job_type(), ValueError("x"))


def test_listed_classes_and_their_subclasses_are_retried(make_job_type):
    kind = make_job_type(retry_on="builtins.ConnectionError, builtins.LookupError")
    assert is_retryable(kind, ConnectionRefusedError())  # a subclass of ConnectionError
    assert is_retryable(kind, KeyError("k"))
    assert not is_retryable(kind, ValueError("v"))


@pytest.mark.parametrize("value", ["builtins.len", "no.such.Module", "os.path", "not a path"])
def test_bad_class_names_are_refused(make_job_type, value):
    kind = make_job_type()
    kind.retry_on = value
    with pytest.raises(ValidationError, match="not an importable exception class"):
        kind.full_clean()


def test_the_registrar_takes_classes_and_stores_their_paths():
    registry = Registry()
    registration = registry.add_job_type(
        "flaky", "tests.kojo_jobs.noop", retry_on=[TimeoutError, "builtins.OSError"]
    )
    assert registration.fields["retry_on"] == "builtins.TimeoutError\nbuiltins.OSError"
    with pytest.raises(ValidationError, match="not an importable exception class"):
        registry.add_job_type("flaky", "tests.kojo_jobs.noop", retry_on=["builtins.print"])
