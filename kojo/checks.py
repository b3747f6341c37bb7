"""System checks: misconfiguration reported by ``manage.py check`` with ids, in the words the admin
form and the registrar use."""

from __future__ import annotations

import dataclasses
import difflib
import os

from django.conf import settings as django_settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.exceptions import ValidationError
from django.db import DatabaseError, connections
from django.utils.connection import ConnectionDoesNotExist

from kojo.conf import settings

# Most jobs a pooled worker may claim ahead: beyond this, one claim statement grows long for little gain.
MAX_PREFETCH = 1000

# Which check id reports which validator's error code.
CHECK_IDS = {
    "invalid_cron": "kojo.E001",
    "invalid_timezone": "kojo.E001",
    "unknown_worker": "kojo.E002",
    "invalid_duration": "kojo.E004",
    "invalid_limit": "kojo.E005",
    "invalid_attempts": "kojo.E005",
    "invalid_importance": "kojo.E005",
    "invalid_type_code": "kojo.E009",
    "unknown_field": "kojo.E010",
    "invalid_exception_class": "kojo.E011",
    "invalid_readiness": "kojo.E012",
}


def _as_checks(errors: list[ValidationError], label: str, obj) -> list[Error]:
    found = []
    for error in errors:
        for item in error.error_list:
            message = item.message % item.params if item.params else item.message
            found.append(
                Error(f"job type {label!r}: {message}", obj=obj, id=CHECK_IDS.get(item.code, "kojo.E010"))
            )
    return found


@register()
def check_registered_job_types(app_configs=None, **kwargs):
    """Job types registered in code (the registrar refuses bad values at import; this reports them too)."""
    from kojo.registry import registry

    errors = []
    for registration in registry.job_types.values():
        problems = registry.validate(registration.type_code, registration.worker, registration.fields)
        errors += _as_checks(problems, registration.type_code, registration.type_code)
    return errors


# The stored fields of a job type that have validators (kojo.validators).
CHECKED_FIELDS = (
    "cron_expression",
    "cron_timezone",
    "schedule_limit",
    "schedule_limit_allowance",
    "keep_instances",
    "auto_delete_interval_duration",
    "timeout",
    "max_attempts",
    "retry_interval",
    "retry_on",
    "readiness",
)


def stored_type_errors(row) -> list[ValidationError]:
    """What is wrong with a stored job type (edited by hand, or naming code that is gone): the same
    validators as the admin form and the registrar."""
    from kojo.registry import registry

    fields = {name: getattr(row, name) for name in CHECKED_FIELDS}
    return registry.validate(row.type_code, row.worker, fields)


def stored_type_problems(using: str | None = None) -> dict[str, list[str]]:
    """The problems of every stored job type that has any, in words, by type code (for the server's
    start-up log and the admin list)."""
    from kojo.models import JobType

    problems = {}
    for row in JobType.objects.using(using or settings.DATABASE).order_by("type_code"):
        if found := [message for error in stored_type_errors(row) for message in error.messages]:
            problems[row.type_code] = found
    return problems


@register(Tags.database)
def check_job_type_rows(app_configs=None, databases=None, **kwargs):
    """Job types stored in the database, e.g. edited by hand: `manage.py check --database default`."""
    from kojo.models import JobType

    errors = []
    for alias in databases or []:
        try:
            rows = list(JobType.objects.using(alias).all())
        except DatabaseError:
            continue  # Not migrated yet: nothing stored to check.
        for row in rows:
            errors += _as_checks(stored_type_errors(row), row.type_code, row)
    return errors


def vendor() -> str | None:
    """The vendor of KOJO_DATABASE; None when it names no alias (kojo.E018 says so)."""
    try:
        return connections[settings.DATABASE].vendor
    except ConnectionDoesNotExist:
        return None


@dataclasses.dataclass(frozen=True)
class Rule:
    """What a KOJO_* setting may hold: a kind ("number", "whole" number, "text", "path",
    "optional text", which may be None, or "flag"), and bounds."""

    kind: str
    least: float | None = None
    most: float | None = None
    above_zero: bool = False


# Every setting of kojo.conf.Settings; None for those a check of their own judges whole (choices,
# relations between them), in words of their own.
SETTING_RULES: dict[str, Rule | None] = {
    "LOCK_BACKEND": None,  # kojo.E006
    "REDIS_CACHE": Rule("text"),
    "LOCK_DIR": Rule("path"),
    "LOCK_LEASE": Rule("number", above_zero=True, most=86400),
    "DATABASE": Rule("text"),
    "KEY_PREFIX": Rule("text"),
    "HEARTBEAT_INTERVAL": None,  # kojo.E014
    "HEARTBEAT_TIMEOUT": None,  # kojo.E014
    "POLL_INTERVAL": Rule("number", above_zero=True, most=3600),
    "PUBLISH_IN_BACKGROUND": Rule("flag"),
    "MODE": None,  # kojo.E008
    "CONCURRENCY": Rule("whole", least=1, most=10_000),
    "MIN_WORKERS": Rule("whole", least=0, most=10_000),
    "PREFETCH": None,  # kojo.E013
    "PREFETCH_WINDOW": None,  # kojo.E013
    "MAX_JOBS_PER_WORKER": Rule("whole", least=0),
    "MAX_WORKER_MEMORY_MB": Rule("number", least=0),  # 0 = no limit
    "GRACEFUL_TIMEOUT": Rule("number", least=0),
    "KILL_GRACE": Rule("number", above_zero=True, most=3600),
    "HOUSEKEEPING_INTERVAL": Rule("number", above_zero=True, most=3600),
    "PROGRESS_MIN_INTERVAL": Rule("number", least=0),
    "PARAMS_MAX_BYTES": Rule("number", least=1),
    "PRUNE_BATCH_SIZE": Rule("whole", least=1, most=100_000),
    "STATUS_DIR": Rule("path"),
    "METRICS_TOKEN": Rule("optional text"),
}
KIND_WORDS = {
    "number": "a number",
    "whole": "a whole number",
    "text": "a string",
    "path": "a string or a path",
    "optional text": "a string or None",
    "flag": "True or False",
}


def _fits(value, rule: Rule) -> bool:
    if rule.kind == "flag":
        return isinstance(value, bool)
    if rule.kind == "text":
        return isinstance(value, str)
    if rule.kind == "path":
        return isinstance(value, (str, os.PathLike))
    if rule.kind == "optional text":
        return value is None or isinstance(value, str)
    if isinstance(value, bool) or not isinstance(value, int if rule.kind == "whole" else (int, float)):
        return False
    if value != value:  # NaN
        return False
    if rule.above_zero and value <= 0:
        return False
    if rule.least is not None and value < rule.least:
        return False
    return rule.most is None or value <= rule.most


def _expected(rule: Rule) -> str:
    words = KIND_WORDS[rule.kind]
    if rule.above_zero:
        words += " above 0"
    elif rule.least is not None:
        words += f" from {rule.least:g}"
    if rule.most is not None:
        words += f" up to {rule.most:g}"
    return words


def check_setting_kinds() -> list[CheckMessage]:
    """Each KOJO_* setting of the right kind and range (kojo.E019), and no KOJO_* name kojo does not
    know (kojo.W003: a misspelt setting is otherwise silently ignored)."""
    from kojo.conf import Settings

    found: list[CheckMessage] = []
    for name, rule in SETTING_RULES.items():
        value = getattr(settings, name)
        if rule is not None and not _fits(value, rule):
            found.append(
                Error(
                    f"KOJO_{name} is {value!r}; use {_expected(rule)}.",
                    hint=f"The default is {getattr(Settings, name)!r} (see kojo/conf.py).",
                    id="kojo.E019",
                )
            )
    concurrency, least = settings.CONCURRENCY, settings.MIN_WORKERS
    if not found and settings.MODE == "dynamic" and least > concurrency:
        found.append(
            Error(
                f"KOJO_MIN_WORKERS ({least}) is above KOJO_CONCURRENCY ({concurrency}).",
                hint="Keep MIN_WORKERS at most CONCURRENCY: a server never runs more workers than that.",
                id="kojo.E019",
            )
        )
    if not found and not settings.KEY_PREFIX:
        found.append(Error("KOJO_KEY_PREFIX is empty; kojo's Redis keys need a prefix.", id="kojo.E019"))
    for name in dir(django_settings):
        if name.startswith("KOJO_") and name[5:] not in SETTING_RULES:
            close = difflib.get_close_matches(name[5:], SETTING_RULES, n=1)
            found.append(
                Warning(
                    f"{name} is not a kojo setting, and is ignored.",
                    hint=f"Did you mean KOJO_{close[0]}?"
                    if close
                    else "The settings are listed in kojo/conf.py.",
                    id="kojo.W003",
                )
            )
    return found


@register()
def check_settings(app_configs=None, **kwargs):
    errors = check_setting_kinds()
    if any(error.msg.startswith(("KOJO_REDIS_CACHE ", "KOJO_DATABASE ")) for error in errors):
        return errors  # the checks below look these names up
    backend = settings.LOCK_BACKEND
    if backend not in ("redis", "postgres", "local"):
        errors.append(
            Error(f"KOJO_LOCK_BACKEND is {backend!r}; use 'redis', 'postgres' or 'local'.", id="kojo.E006")
        )
    elif backend == "postgres" and vendor() not in ("postgresql", None):
        errors.append(
            Error(
                "KOJO_LOCK_BACKEND is 'postgres' but KOJO_DATABASE is not PostgreSQL.",
                hint="Use 'local' on a single machine, or 'redis'.",
                id="kojo.E017",
            )
        )
    elif backend == "redis":
        cache = django_settings.CACHES.get(settings.REDIS_CACHE, {})
        if not cache.get("BACKEND", "").startswith("django_redis."):
            errors.append(
                Error(
                    f"KOJO_LOCK_BACKEND is 'redis' but CACHES[{settings.REDIS_CACHE!r}] is not a "
                    "django-redis cache.",
                    hint="Add a django_redis.cache.RedisCache cache, or set KOJO_REDIS_CACHE to its alias.",
                    id="kojo.E003",
                )
            )
    if settings.DATABASE not in django_settings.DATABASES:
        errors.append(
            Error(
                f"KOJO_DATABASE is {settings.DATABASE!r}, which is not in DATABASES.",
                hint="Name the DATABASES alias that holds kojo's tables.",
                id="kojo.E018",
            )
        )
    else:
        from django.apps import apps
        from django.db import router

        routed = set()
        for model in apps.get_app_config("kojo").get_models():
            routed |= {router.db_for_read(model), router.db_for_write(model)}
        if routed != {settings.DATABASE}:
            errors.append(
                Error(
                    f"KOJO_DATABASE is {settings.DATABASE!r} but the database routers send kojo's models "
                    f"to {', '.join(sorted(routed))}.",
                    hint='Add "kojo.routers.KojoRouter" to DATABASE_ROUTERS, or route the kojo app there.',
                    id="kojo.E018",
                )
            )
    if not django_settings.USE_TZ:
        errors.append(Error("kojo stores times in UTC and needs USE_TZ = True.", id="kojo.E007"))
    if settings.MODE not in ("ondemand", "static", "dynamic"):
        errors.append(
            Error(f"KOJO_MODE is {settings.MODE!r}; use ondemand, static or dynamic.", id="kojo.E008")
        )
    prefetch, window = settings.PREFETCH, settings.PREFETCH_WINDOW
    if type(prefetch) is not int or not 1 <= prefetch <= MAX_PREFETCH:
        errors.append(
            Error(
                f"KOJO_PREFETCH is {prefetch!r}; use a whole number from 1 (no claiming ahead) to "
                f"{MAX_PREFETCH}.",
                id="kojo.E013",
            )
        )
    if type(window) not in (int, float) or not 0 <= window <= 60:
        errors.append(Error(f"KOJO_PREFETCH_WINDOW is {window!r}; use seconds from 0 to 60.", id="kojo.E013"))
    errors += check_heartbeats()
    database = connections[settings.DATABASE] if vendor() else None
    if database is not None and database.vendor == "sqlite":
        if database.settings_dict.get("OPTIONS", {}).get("transaction_mode") != "IMMEDIATE":
            errors.append(
                Warning(
                    "kojo on SQLite needs OPTIONS['transaction_mode'] = 'IMMEDIATE' so that claims do not "
                    "fail with 'database is locked'.",
                    id="kojo.W001",
                )
            )
        if backend == "redis":
            errors.append(
                Warning(
                    "SQLite with the redis lock backend suggests several hosts; SQLite serves one machine.",
                    id="kojo.W002",
                )
            )
    return errors


def check_heartbeats() -> list[Error]:
    """A server stops its runs once no renewal was confirmed for two thirds of HEARTBEAT_TIMEOUT: its
    renewals must come often enough that one slow or lost renewal does not get there."""
    interval, timeout = settings.HEARTBEAT_INTERVAL, settings.HEARTBEAT_TIMEOUT
    for name, value in (("HEARTBEAT_INTERVAL", interval), ("HEARTBEAT_TIMEOUT", timeout)):
        if type(value) not in (int, float) or value <= 0:
            return [Error(f"KOJO_{name} is {value!r}; use a positive number of seconds.", id="kojo.E014")]
    if timeout < 3:
        return [
            Error(
                f"KOJO_HEARTBEAT_TIMEOUT is {timeout:g} s; use at least 3 s, so a server's own database "
                "waits (a fifth of it, at least 1 s) end well before it must stop its jobs.",
                id="kojo.E014",
            )
        ]
    if interval > timeout / 4:
        return [
            Error(
                f"KOJO_HEARTBEAT_INTERVAL ({interval:g} s) is more than a quarter of KOJO_HEARTBEAT_TIMEOUT "
                f"({timeout:g} s): a server would stop its own jobs whenever one renewal is late.",
                hint="Keep HEARTBEAT_INTERVAL at most HEARTBEAT_TIMEOUT / 4 (defaults: 2 s and 15 s).",
                id="kojo.E014",
            )
        ]
    return []


def unapplied_migrations(using: str | None = None) -> list[str]:
    """kojo's migrations the database lacks, by name; raises DatabaseError when it cannot be asked."""
    using = using or settings.DATABASE
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connections[using])
    targets = [node for node in executor.loader.graph.leaf_nodes() if node[0] == "kojo"]
    return [migration.name for migration, _ in executor.migration_plan(targets)]
