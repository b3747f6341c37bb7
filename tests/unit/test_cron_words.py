"""Cron expressions in words, as the admin shows them beside the expression."""

import pytest

from kojo.cron import describe_cron


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("* * * * *", "every minute"),
        ("*/5 * * * *", "every 5 minutes"),
        ("*/1 * * * *", "every minute"),
        ("0 * * * *", "every hour, on the hour"),
        ("15 * * * *", "every hour at minute 15"),
        ("0,30 * * * *", "every hour at minutes 0 and 30"),
        ("0 3 * * *", "every day at 03:00 UTC"),
        ("30 2 * * 1-5", "at 02:30 UTC on Monday to Friday"),
        ("0 0 1 * *", "at 00:00 UTC on day 1 of the month"),
        ("0 9,17 * * *", "every day at 09:00 and 17:00 UTC"),
        ("0 9,17 * * 1,3,5", "at 09:00 and 17:00 UTC on Monday, Wednesday and Friday"),
        ("0 0 1,15 * *", "at 00:00 UTC on days 1 and 15 of the month"),
        ("0 0 1-7 * *", "at 00:00 UTC on days 1 to 7 of the month"),
        ("0 0 * 1,7 *", "at 00:00 UTC in January and July"),
        ("0 0 1 1 *", "at 00:00 UTC on 1 January"),
        ("0 0 * * 0,6", "at 00:00 UTC on Saturday and Sunday"),
        ("0 12 * * 7", "at 12:00 UTC on Sunday"),
        ("0 0 * * 1-7", "every day at 00:00 UTC"),
        ("0 6 * * mon-fri", "at 06:00 UTC on Monday to Friday"),
        ("0 0 1 jan,jul *", "at 00:00 UTC on day 1 of the month, in January and July"),
        ("0 */2 * * *", "at minute 0 past every 2nd hour (UTC)"),
        ("*/15 9-17 * * 1-5", "every 15 minutes from 09:00 to 17:59 UTC on Monday to Friday"),
        ("30 9-17 * * *", "at minute 30 past every hour from 09:00 to 17:59 UTC"),
        ("* 3 * * *", "every minute of hour 03 UTC"),
        ("0 0 */2 * *", "at 00:00 UTC on every 2nd day of the month"),
        ("0 0 1 */3 *", "at 00:00 UTC on day 1 of the month, in every 3rd month"),
        # Both day fields set: cron runs on either, and says so.
        ("0 0 1 * 1", "at 00:00 UTC on day 1 of the month and on Monday"),
        ("@hourly", "every hour, on the hour"),
        ("@daily", "every day at 00:00 UTC"),
        ("@weekly", "at 00:00 UTC on Sunday"),
        ("@monthly", "at 00:00 UTC on day 1 of the month"),
        ("@yearly", "at 00:00 UTC on 1 January"),
        ("  0   3 * *  * ", "every day at 03:00 UTC"),
    ],
)
def test_common_shapes_read_as_words(expression, words):
    assert describe_cron(expression) == words


def test_many_fixed_times_are_summarised_rather_than_listed():
    words = describe_cron("0 1,2,3,4,5,6,7 * * *")
    assert words == "at minute 0 past hours 01, 02, 03, 04, 05, 06 and 07 UTC"


@pytest.mark.parametrize(
    "expression",
    ["5 4 L * *", "0 0 * * 5#2", "0 0 ? * *", "H * * * *", "0 0 1 1 * 2030", "@reboot", "0 0 * * 5-1", "x"],
)
def test_shapes_it_cannot_phrase_fall_back_to_the_expression(expression):
    assert describe_cron(expression) == f"on the cron schedule '{expression}' (UTC)"


@pytest.mark.parametrize("expression", ["61 * * * *", "*/0 * * * *", "0 24 * * *", "1 2 3"])
def test_invalid_expressions_never_raise(expression):
    assert expression in describe_cron(expression)


def test_empty_expression_says_there_is_no_schedule():
    assert describe_cron("") == "no cron schedule"
