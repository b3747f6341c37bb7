"""Cron scheduling: one job per (type, tick), however many servers run this at once.

A server claims a tick by moving the type's ``last_cron_tick`` forward in one conditional UPDATE; only
the server whose UPDATE changed the row creates the job, and a unique constraint on (type, tick) backs
that up. Ticks missed while every server was down collapse into the newest one. A tick claimed once is
never created again, even after its job was pruned.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from kojo.conf import settings
from kojo.exceptions import WaitingLimitReached
from kojo.models import CronOverflow, Job, JobType
from kojo.scheduling import AllowanceBusy, check_allowance, create_job
from kojo.states import JobState

logger = logging.getLogger(__name__)

# A type that has never had a cron job runs its newest tick only if that tick is this recent, so a
# daily type created at noon waits for its next tick instead of running at once for 3 a.m.
FIRST_TICK_GRACE = timedelta(minutes=1)


def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name or "UTC")


def latest_tick(expression: str, now: datetime, timezone_name: str = "UTC") -> datetime:
    """The newest tick at or before ``now``, as UTC, of an expression read in ``timezone_name``.

    Ticks are wall-clock times there, each run once: when clocks go back, a time that happens twice
    ticks at its first pass; when they go forward, the times that do not exist that day tick at the
    change itself (the first minute after it), as missed ticks collapse into one."""
    if timezone_name in ("", "UTC"):
        return croniter(expression, now + timedelta(microseconds=1)).get_prev(datetime)
    local = zone(timezone_name)
    iterator = croniter(expression, now.astimezone(local).replace(tzinfo=None) + timedelta(microseconds=1))
    while True:
        tick = instant(iterator.get_prev(datetime), local)
        if tick <= now:
            return tick


def next_ticks(
    expression: str, start: datetime, count: int = 5, timezone_name: str = "UTC"
) -> list[datetime]:
    """The next ``count`` ticks after ``start``, as UTC, read as ``latest_tick`` reads them."""
    if timezone_name in ("", "UTC"):
        iterator = croniter(expression, start)
        return [iterator.get_next(datetime) for _ in range(count)]
    local = zone(timezone_name)
    iterator = croniter(expression, start.astimezone(local).replace(tzinfo=None))
    ticks: list[datetime] = []
    while len(ticks) < count:
        tick = instant(iterator.get_next(datetime), local)
        if tick > start and (not ticks or tick > ticks[-1]):  # walls in a skipped hour share one
            ticks.append(tick)
    return ticks


def instant(wall: datetime, local: ZoneInfo) -> datetime:
    """The UTC instant a naive wall-clock time of ``local`` names: its first pass when it happens
    twice; when it does not exist, the change that skipped it."""
    first = wall.replace(tzinfo=local, fold=0).astimezone(UTC)
    if first.astimezone(local).replace(tzinfo=None) == wall:
        return first
    # Skipped: the change lies between the readings with the offsets before and after it.
    moment = wall.replace(tzinfo=local, fold=1).astimezone(UTC)
    while moment.astimezone(local).replace(tzinfo=None) < wall:
        moment += timedelta(minutes=1)
    return moment


def schedule_due_ticks(now: datetime | None = None, *, actor: str = "") -> list[Job]:
    """Create the due cron job of every enabled cron type; return the jobs this call created."""
    now = now or timezone.now()
    created = []
    types = JobType.objects.filter(is_enabled=True).exclude(cron_expression="")
    for job_type in types:
        try:
            tick = latest_tick(job_type.cron_expression, now, job_type.cron_timezone)
        except (ValueError, KeyError, ZoneInfoNotFoundError):
            logger.error("job type %s has an invalid cron expression %r", job_type, job_type.cron_expression)
            continue
        if job_type.last_cron_tick is not None and tick <= job_type.last_cron_tick:
            continue
        job = schedule_tick(job_type, tick, now, actor=actor)
        if job is not None:
            created.append(job)
    return created


def schedule_tick(job_type: JobType, tick: datetime, now: datetime, *, actor: str) -> Job | None:
    first = job_type.last_cron_tick is None
    with transaction.atomic(using=settings.DATABASE):
        # The allowance first: never wait for a view's transaction while holding the type's row,
        # which claims lock too. A type being scheduled right now gets its tick on a later pass.
        try:
            check_allowance(job_type, wait=False, using=settings.DATABASE)
            refused = None
        except AllowanceBusy as busy:
            logger.info("cron tick %s of %s: %s; trying again next pass", tick.isoformat(), job_type, busy)
            return None
        except WaitingLimitReached as error:
            refused = error
        won = JobType.objects.filter(
            Q(last_cron_tick__lt=tick) | Q(last_cron_tick__isnull=True), pk=job_type.pk, is_enabled=True
        ).update(last_cron_tick=tick)
        if not won:
            return None
        if first and now - tick > FIRST_TICK_GRACE:
            return None
        if refused is not None:
            logger.warning("cron tick %s of %s skipped: %s", tick.isoformat(), job_type, refused)
            return None
        if job_type.cron_overflow == CronOverflow.SKIP and job_type.effective_limit:
            pending = Job.objects.filter(job_type=job_type, state__in=[JobState.WAITING, JobState.WORKING])
            if (count := pending.count()) >= job_type.effective_limit:
                logger.info(
                    "cron tick %s of %s skipped: %s jobs waiting or working take its limit of %s",
                    tick.isoformat(),
                    job_type,
                    count,
                    job_type.effective_limit,
                )
                return None
        try:
            with transaction.atomic(using=settings.DATABASE):
                return create_job(
                    {
                        "job_type": job_type,
                        "importance": job_type.default_importance,
                        "start_after": tick,
                        "cron_tick": tick,
                    },
                    actor=actor,
                    reason=f"cron tick {tick.isoformat()}",
                )
        except IntegrityError:
            return None  # another server created it: the constraint did its job


# Five-field cron in words, for the admin. Only plain numbers, names, "*", ranges, lists and steps are
# phrased; anything else (L, W, #, ?, H, a sixth field) falls back to the expression itself.
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTHS = [
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
]  # fmt: skip
WEEKDAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
MONTH_NAMES = {name[:3].lower(): number for number, name in enumerate(MONTHS, start=1)}
WEEKDAY_NAMES = {name[:3].lower(): number for number, name in enumerate(WEEKDAYS)}
# A fixed-times phrase lists at most this many times ("at 09:00, 12:00 and 17:00 UTC").
MAX_LISTED_TIMES = 6


class Unphrasable(ValueError):
    """The expression has a shape the describer does not put into words."""


# One part of a comma list: a single value, a range, or a step over a range ("*/5" is (lo, hi, 5)).
Part = tuple[int, int, int]


def describe_cron(expression: str) -> str:
    """A cron expression in plain English, e.g. ``30 2 * * 1-5`` is "at 02:30 UTC on Monday to Friday".

    Shapes it cannot phrase come back as the expression itself, quoted, so the admin never fails on them.
    """
    text = " ".join((expression or "").split())
    if not text:
        return "no cron schedule"
    try:
        return phrase_cron(text)
    except (Unphrasable, ValueError, KeyError, IndexError):
        return f"on the cron schedule '{text}' (UTC)"


def phrase_cron(text: str) -> str:
    fields = ALIASES.get(text.lower(), text).split()
    if len(fields) != 5:
        raise Unphrasable(text)
    minute = parse_field(fields[0], 0, 59)
    hour = parse_field(fields[1], 0, 23)
    day = parse_field(fields[2], 1, 31)
    month = parse_field(fields[3], 1, 12, MONTH_NAMES)
    weekday = weekdays(parse_field(fields[4], 0, 7, WEEKDAY_NAMES))
    times, fixed = phrase_time(minute, hour)
    days = phrase_days(day, month, weekday)
    if fixed and not days:
        return f"every day {times}"
    return " ".join(part for part in (times, days) if part)


def parse_field(field: str, lo: int, hi: int, names: dict[str, int] | None = None) -> list[Part]:
    """The comma list of one field as (first, last, step) parts; "*" is the full range."""
    parts = []
    for item in field.split(","):
        body, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1 or (step_text and not step_text.isdigit()):
            raise Unphrasable(field)
        if body == "*":
            first, last = lo, hi
        else:
            start, dash, end = body.partition("-")
            first = value(start, lo, hi, names)
            last = value(end, lo, hi, names) if dash else (hi if step_text else first)
            if first > last:
                raise Unphrasable(field)
        parts.append((first, last, step))
    return parts


def value(text: str, lo: int, hi: int, names: dict[str, int] | None) -> int:
    if names and text.lower() in names:
        return names[text.lower()]
    if not text.isdigit() or not lo <= int(text) <= hi:
        raise Unphrasable(text)
    return int(text)


def weekdays(parts: list[Part]) -> list[int]:
    """The days of the week a field names, Monday first (7 is Sunday too, as 0 is)."""
    days = {number % 7 for first, last, step in parts for number in range(first, last + 1, step)}
    return sorted(days, key=lambda number: (number - 1) % 7)


def phrase_weekdays(days: list[int]) -> str:
    """Runs of three or more days read as a range: "Monday to Friday", "Monday, Wednesday and Friday"."""
    runs: list[list[int]] = []
    for number in days:
        if runs and (runs[-1][-1] + 1) % 7 == number and runs[-1][-1] != 0:
            runs[-1].append(number)
        else:
            runs.append([number])
    words = []
    for run in runs:
        if len(run) >= 3:
            words.append(f"{WEEKDAYS[run[0]]} to {WEEKDAYS[run[-1]]}")
        else:
            words.extend(WEEKDAYS[number] for number in run)
    return join(words)


def is_every(parts: list[Part], lo: int, hi: int) -> bool:
    return any(part == (lo, hi, 1) for part in parts)


def single_values(parts: list[Part]) -> list[int] | None:
    """The values of a field made only of single numbers, sorted; None if it has ranges or steps."""
    if any(first != last for first, last, _ in parts):
        return None
    return sorted({first for first, _, _ in parts})


def every_step(parts: list[Part], lo: int, hi: int) -> int | None:
    """N for a field that is exactly "*/N"."""
    if len(parts) == 1 and parts[0][:2] == (lo, hi):
        return parts[0][2]
    return None


def join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def ordinal(number: int) -> str:
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def phrase_parts(parts: list[Part], unit: str, show=str) -> str:
    """Any comma list in words: "5", "10 to 20", "every 2nd hour from 8 to 18", joined with "and"."""
    words = []
    for first, last, step in parts:
        if first == last:
            words.append(show(first))
        elif step == 1:
            words.append(f"{show(first)} to {show(last)}")
        else:
            words.append(f"every {ordinal(step)} {unit} from {show(first)} to {show(last)}")
    return join(words)


def phrase_time(minute: list[Part], hour: list[Part]) -> tuple[str, bool]:
    """The time-of-day part, and whether it names fixed times (so "every day" may lead)."""
    minutes, hours = single_values(minute), single_values(hour)
    if minutes and hours and len(minutes) * len(hours) <= MAX_LISTED_TIMES:
        return "at " + join([f"{h:02d}:{m:02d}" for h in hours for m in minutes]) + " UTC", True
    minute_step = every_step(minute, 0, 59)
    if minute_step is not None:
        spoken = "every minute" if minute_step == 1 else f"every {minute_step} minutes"
    elif minutes:
        spoken = f"at minute{'s' if len(minutes) > 1 else ''} {join([str(m) for m in minutes])}"
    else:
        spoken = "at minutes " + phrase_parts(minute, "minute")
    every = minute_step is not None
    if is_every(hour, 0, 23):
        if every:
            return spoken, False
        return ("every hour, on the hour" if minutes == [0] else f"every hour {spoken}"), False
    hour_step = every_step(hour, 0, 23)
    if hour_step is not None:
        return f"{spoken} {'of' if every else 'past'} every {ordinal(hour_step)} hour (UTC)", False
    if len(hour) == 1 and hour[0][0] < hour[0][1]:
        first, last, step = hour[0]
        which = "every hour" if step == 1 else f"every {ordinal(step)} hour"
        lead = ("" if step == 1 else f" of {which}") if every else f" past {which}"
        return f"{spoken}{lead} from {first:02d}:00 to {last:02d}:59 UTC", False
    shown = phrase_parts(hour, "hour", lambda h: f"{h:02d}")
    plural = "s" if len(hour) > 1 or hour[0][0] != hour[0][1] else ""
    return f"{spoken} {'of' if every else 'past'} hour{plural} {shown} UTC", False


def phrase_days(day: list[Part], month: list[Part], weekday: list[int]) -> str:
    """Which days: of the month, of the week (either matches when both are set, as cron has it), months."""
    any_day, any_weekday = is_every(day, 1, 31), len(weekday) == 7
    days, months = single_values(day), single_values(month)
    if not any_day and any_weekday and days and months and len(days) == 1 and len(months) == 1:
        return f"on {days[0]} {MONTHS[months[0] - 1]}"
    phrases = []
    if not any_day:
        step = every_step(day, 1, 31)
        if step is not None:
            phrases.append(f"on every {ordinal(step)} day of the month")
        else:
            plural = "s" if len(day) > 1 or day[0][0] != day[0][1] else ""
            phrases.append(f"on day{plural} {phrase_parts(day, 'day')} of the month")
    if not any_weekday:
        phrases.append("on " + phrase_weekdays(weekday))
    text = " and ".join(phrases)
    if not is_every(month, 1, 12):
        step = every_step(month, 1, 12)
        shown = (
            f"every {ordinal(step)} month" if step else phrase_parts(month, "month", lambda m: MONTHS[m - 1])
        )
        text = f"{text}, in {shown}" if text else f"in {shown}"
    return text
