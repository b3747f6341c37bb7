"""Validators shared by the admin form, the code registrar and the system checks, so a bad value
gets the same message wherever it is entered."""

from __future__ import annotations

import re

from croniter import croniter
from django.core.exceptions import ValidationError

from kojo.durations import InvalidDuration, parse_duration

TYPE_CODE = re.compile(r"^[a-z][a-z0-9_]{0,99}$")
# Upper bounds that catch typos (an extra zero or two) without limiting any real fleet.
MAX_LIMIT = 1_000_000
MAX_ATTEMPTS = 1000


def validate_type_code(value: str) -> None:
    if not isinstance(value, str) or not TYPE_CODE.match(value):
        raise ValidationError(
            "%(value)r is not a valid type code: use snake_case (a lowercase letter, then lowercase "
            "letters, digits or underscores; at most 100 characters).",
            code="invalid_type_code",
            params={"value": value},
        )


def validate_cron(value: str) -> None:
    """A five-field cron expression (minute hour day month weekday) or an alias such as @hourly, in UTC."""
    text = (value or "").strip()
    fields = text.split()
    valid = bool(text) and (text.startswith("@") or len(fields) == 5)
    if valid:
        try:
            croniter(text)
        except (ValueError, KeyError, TypeError):
            valid = False
    if not valid:
        raise ValidationError(
            "%(value)r is not a valid cron expression: use five fields (minute hour day-of-month month "
            "day-of-week, e.g. '*/5 * * * *') or an alias such as '@hourly'.",
            code="invalid_cron",
            params={"value": value},
        )


def validate_duration(value: str) -> None:
    try:
        parse_duration(value)
    except InvalidDuration as error:
        raise ValidationError(str(error), code="invalid_duration") from None


def validate_limit(value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_LIMIT:
        raise ValidationError(
            "%(value)r is not a valid limit: use a whole number from 0 (no limit) to %(max)d.",
            code="invalid_limit",
            params={"value": value, "max": MAX_LIMIT},
        )


def validate_max_attempts(value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_ATTEMPTS:
        raise ValidationError(
            "%(value)r is not a valid number of attempts: use a whole number from 1 to %(max)d.",
            code="invalid_attempts",
            params={"value": value, "max": MAX_ATTEMPTS},
        )


def validate_importance(value: int) -> None:
    from kojo.models import IMPORTANCE_MAX, IMPORTANCE_MIN

    if not isinstance(value, int) or isinstance(value, bool) or not IMPORTANCE_MIN <= value <= IMPORTANCE_MAX:
        raise ValidationError(
            "%(value)r is not a valid importance: use a whole number from %(min)d to %(max)d.",
            code="invalid_importance",
            params={"value": value, "min": IMPORTANCE_MIN, "max": IMPORTANCE_MAX},
        )


def validate_flag(value: bool) -> None:
    if not isinstance(value, bool):
        raise ValidationError(
            "%(value)r is not a valid flag: use True or False.", code="invalid_flag", params={"value": value}
        )


def validate_timezone(value: str) -> None:
    """An IANA time zone name that this machine's zoneinfo knows, e.g. "Europe/Berlin" or "UTC"."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        if not isinstance(value, str) or not value or len(value) > 64 or "\x00" in value:
            raise ValueError(value)
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValidationError(
            "%(value)r is not a time zone: use an IANA name such as 'UTC' or 'Europe/Berlin'.",
            code="invalid_timezone",
            params={"value": value},
        ) from None


def validate_cron_overflow(value: str) -> None:
    from kojo.models import CronOverflow

    if value not in CronOverflow.values:
        raise ValidationError(
            "%(value)r is not a cron overflow rule: use %(known)s.",
            code="invalid_cron_overflow",
            params={"value": value, "known": ", ".join(CronOverflow.values)},
        )


def validate_backoff(value: str) -> None:
    from kojo.models import Backoff

    if value not in Backoff.values:
        raise ValidationError(
            "%(value)r is not a retry backoff: use %(known)s.",
            code="invalid_backoff",
            params={"value": value, "known": ", ".join(Backoff.values)},
        )


def text_validator(max_length: int):
    """A validator for text the database stores in a column of ``max_length`` characters."""

    def validate_text(value: str) -> None:
        if not isinstance(value, str) or len(value) > max_length or "\x00" in value:
            raise ValidationError(
                "%(value).80r is not valid text: use at most %(max)d characters, without NUL characters.",
                code="invalid_text",
                params={"value": value, "max": max_length},
            )

    return validate_text


def validate_rate(value: str) -> None:
    """A fleet-wide rate limit such as 60/m (kojo.rates); empty for none."""
    from kojo.rates import InvalidRate, parse_rate

    if value == "":
        return
    try:
        parse_rate(value)
    except InvalidRate as error:
        raise ValidationError(str(error), code="invalid_rate") from None


def validate_rate_key(value: str) -> None:
    """Params keys, comma separated, each with a window of its own; empty for one window per type."""
    text_validator(200)(value)
    if value and any(not key.strip() for key in value.split(",")):
        raise ValidationError(
            "%(value)r is not a list of params keys: separate names with commas, none empty.",
            code="invalid_rate_key",
            params={"value": value},
        )


def validate_queue(value: str) -> None:
    """A job's own queue: the name a server serves (``--queue``); empty would mean "the type's"."""
    text_validator(100)(value)
    if not value.strip():
        raise ValidationError("A queue name cannot be empty or blank.", code="invalid_queue")


def validate_worker(value: str) -> None:
    """Only workers registered in code may run: an admin cannot point a type at ``os.system``."""
    from kojo.registry import registry

    if value not in registry.workers:
        known = ", ".join(sorted(registry.workers)) or "none are registered"
        raise ValidationError(
            "%(value)r is not a registered kojo worker (registered workers: %(known)s). Decorate the "
            "callable with @kojo.worker or @kojo.job_type in a kojo_jobs module.",
            code="unknown_worker",
            params={"value": value, "known": known},
        )


def validate_readiness(value) -> None:
    """A readiness tree of limits, buckets and registered checks (see kojo.readiness)."""
    from kojo.readiness import validate

    validate(value)


def exception_class_names(value: str) -> list[str]:
    return [name for name in re.split(r"[\s,]+", value or "") if name]


def validate_exception_classes(value: str) -> None:
    """Dotted paths of exception classes, separated by commas or new lines; each must import."""
    from django.utils.module_loading import import_string

    for name in exception_class_names(value):
        try:
            found = import_string(name)
        except ImportError:
            found = None
        if not (isinstance(found, type) and issubclass(found, BaseException)):
            raise ValidationError(
                "%(name)r is not an importable exception class: give dotted paths such as "
                "'builtins.TimeoutError' or 'myapp.errors.TemporaryFailure'.",
                code="invalid_exception_class",
                params={"name": name},
            )
