"""ISO 8601 durations (``P7D``, ``PT30S``, ``P1DT12H``) as used for retention, timeouts and intervals.

Years and months are refused: their length depends on the calendar, and a retention or timeout
should mean the same thing every day. Weeks, days, hours, minutes and (fractional) seconds are fine.
"""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(
    r"^P(?!$)(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:[.,]\d+)?)S)?)?$"
)
_CALENDAR = re.compile(r"^P(?:\d+Y)?(?:\d+M)?")

# Longer than this is almost certainly a typo, and would overflow date arithmetic near year 9999.
MAX_DURATION = timedelta(days=365 * 100)


class InvalidDuration(ValueError):
    """The text is not an ISO 8601 duration kojo accepts."""


def parse_duration(text: str) -> timedelta:
    """Parse an ISO 8601 duration into a timedelta, raising InvalidDuration with a readable reason."""
    if not isinstance(text, str):
        raise InvalidDuration(
            f"{text!r} is not an ISO 8601 duration (expected text such as 'P7D' or 'PT30S')"
        )
    value = text.strip().upper()
    match = _DURATION.match(value)
    if match is None:
        if value.startswith("P") and _CALENDAR.match(value).group(0) not in ("P", ""):
            raise InvalidDuration(
                f"'{text}': years and months have no fixed length; use weeks (W) or days (D) instead"
            )
        raise InvalidDuration(f"'{text}' is not an ISO 8601 duration such as 'P7D', 'PT30S' or 'P1DT12H'")
    parts = {name: float(num.replace(",", ".")) for name, num in match.groupdict().items() if num is not None}
    try:
        duration = timedelta(**parts)
    except OverflowError:
        duration = MAX_DURATION + timedelta(days=1)
    if duration > MAX_DURATION:
        raise InvalidDuration(f"'{text}' is longer than 100 years")
    return duration


def format_duration(duration: timedelta) -> str:
    """The shortest ISO 8601 text for a timedelta (``PT0S`` for zero)."""
    total = duration.total_seconds()
    if total < 0:
        raise InvalidDuration("durations cannot be negative")
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    text = "P" + (f"{int(days)}D" if days else "")
    clock = "".join(
        f"{value:g}{unit}"
        for value, unit in ((int(hours), "H"), (int(minutes), "M"), (round(seconds, 6), "S"))
        if value
    )
    if clock:
        text += "T" + clock
    return text if text != "P" else "PT0S"
