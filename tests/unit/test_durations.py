from datetime import timedelta

import pytest

from kojo.durations import InvalidDuration, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("P7D", timedelta(days=7)),
        ("PT0S", timedelta(0)),
        ("PT30S", timedelta(seconds=30)),
        ("P1DT12H", timedelta(days=1, hours=12)),
        ("PT1.5S", timedelta(seconds=1.5)),
        ("P2W", timedelta(weeks=2)),
        ("pt5m", timedelta(minutes=5)),
    ],
)
def test_parses_iso_8601_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "P", "PT", "7D", "P1DT", "-P1D", "PT-5S", "P1.5D", "bogus", "P 1D"])
def test_refuses_malformed_durations(text):
    with pytest.raises(InvalidDuration, match="ISO 8601"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["P1Y", "P2M", "P1Y2M3D"])
def test_refuses_calendar_units_with_a_reason(text):
    with pytest.raises(InvalidDuration, match="years and months"):
        parse_duration(text)


def test_refuses_absurd_lengths_and_non_text():
    with pytest.raises(InvalidDuration, match="100 years"):
        parse_duration("P99999999D")
    with pytest.raises(InvalidDuration):
        parse_duration(30)


def test_format_round_trips():
    for delta in (timedelta(0), timedelta(days=3, seconds=61), timedelta(seconds=0.25)):
        assert parse_duration(format_duration(delta)) == delta
