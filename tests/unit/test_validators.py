import pytest
from django.core.exceptions import ValidationError

from kojo import validators


@pytest.mark.parametrize("expr", ["* * * * *", "*/5 * * * *", "0 3 * * 1-5", "@hourly", "@daily"])
def test_accepts_cron_expressions(expr):
    validators.validate_cron(expr)


@pytest.mark.parametrize("expr", ["", "* * *", "61 * * * *", "* * * * * * *", "every minute", "@sometimes"])
def test_refuses_bad_cron_with_one_message(expr):
    with pytest.raises(ValidationError) as caught:
        validators.validate_cron(expr)
    assert caught.value.code == "invalid_cron"
    assert "is not a valid cron expression" in caught.value.messages[0]


@pytest.mark.parametrize("code", ["a", "send_mail", "x1_2"])
def test_accepts_snake_case_type_codes(code):
    validators.validate_type_code(code)


@pytest.mark.parametrize(
    "code", ["", "Send", "1abc", "with space", "a-b", "é", "x" * 101, "'; DROP TABLE x;--"]
)
def test_refuses_other_type_codes(code):
    with pytest.raises(ValidationError):
        validators.validate_type_code(code)


@pytest.mark.parametrize("value", [-1, 10**9, "3", True, 1.5])
def test_refuses_bad_limits(value):
    with pytest.raises(ValidationError, match="not a valid limit"):
        validators.validate_limit(value)


def test_only_registered_workers_are_accepted():
    validators.validate_worker("tests.kojo_jobs.noop")
    for path in ("os.system", "tests.kojo_jobs.not_there", "subprocess.call"):
        with pytest.raises(ValidationError, match="not a registered kojo worker"):
            validators.validate_worker(path)
