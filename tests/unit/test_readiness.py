"""Readiness trees: validation messages and evaluation, without a database."""

import pytest
from django.core.exceptions import ValidationError

from kojo import readiness
from kojo.readiness import Buckets, all_of, any_of, check, is_ready, limit_to, problems


def test_builders_make_the_stored_json():
    assert limit_to(3) == {"limit": 3}
    assert limit_to(2, key="customer") == {"limit": 2, "key": "customer"}
    assert limit_to(2, key=("region", "customer")) == {"limit": 2, "key": ["region", "customer"]}
    assert check("tests.kojo_jobs.is_urgent") == {"check": "tests.kojo_jobs.is_urgent"}
    assert any_of(limit_to(1), check("x")) == {"any": [{"limit": 1}, {"check": "x"}]}


def test_check_given_a_function_registers_it():
    def local_check(params):
        return True

    assert check(local_check) == {"check": readiness.check_name(local_check)}
    assert readiness.check_name(local_check) in readiness.checks


@pytest.mark.parametrize(
    "criterion, message",
    [
        ({"limit": 0}, "whole number from 1"),
        ({"limit": True}, "whole number from 1"),
        ({"limit": "2"}, "whole number from 1"),
        ({"limit": 2, "key": ""}, "'key' takes a params key"),
        ({"limit": 2, "key": [1]}, "'key' takes a params key"),
        ({"check": "os.system"}, "not a registered readiness check"),
        ({"all": []}, "non-empty list"),
        ({"any": "x"}, "non-empty list"),
        ({"limit": 1, "check": "x"}, "is not a criterion"),
        ({"key": "customer"}, "is not a criterion"),
        ({"sometimes": 1}, "unknown criterion"),
        ("limit 2", "is not a criterion"),
        (
            {
                "all": [
                    {
                        "all": [
                            {
                                "all": [
                                    {
                                        "all": [
                                            {
                                                "all": [
                                                    {"all": [{"all": [{"all": [{"all": [{"limit": 1}]}]}]}]}
                                                ]
                                            }
                                        ]
                                    }
                                ]
                            }
                        ]
                    }
                ]
            },
            "nested",
        ),
    ],
)
def test_bad_trees_are_refused_with_a_reason(criterion, message):
    assert any(message in problem for problem in problems(criterion))
    with pytest.raises(ValidationError) as raised:
        readiness.validate(criterion)
    assert message in " ".join(raised.value.messages)


def test_good_trees_pass():
    tree = all_of(
        limit_to(5, key="customer"), limit_to(15), any_of(check("tests.kojo_jobs.is_urgent"), limit_to(1))
    )
    assert problems(tree) == []
    assert problems([limit_to(1), check("tests.kojo_jobs.is_urgent")]) == []


def test_bucket_limits_count_each_bucket_separately():
    buckets = Buckets(limit_to(2, key="customer"), [{"customer": "a"}, {"customer": "a"}, {"customer": "b"}])
    assert not buckets.admits({"customer": "a"})
    assert buckets.admits({"customer": "b"})
    buckets.add({"customer": "b"})
    assert not buckets.admits({"customer": "b"})
    assert buckets.admits({"customer": "c"})
    assert buckets.admits({})  # a job without the key shares the bucket of "no value"


def test_bucket_and_overall_limits_combine():
    tree = [limit_to(2, key="customer"), limit_to(3)]
    buckets = Buckets(tree, [{"customer": "a"}, {"customer": "b"}])
    assert buckets.admits({"customer": "c"})
    buckets.add({"customer": "c"})
    assert not buckets.admits({"customer": "d"})  # three working overall


def test_any_admits_when_one_branch_holds():
    tree = any_of(check("tests.kojo_jobs.is_urgent"), limit_to(1))
    buckets = Buckets(tree, [{}])
    assert not buckets.admits({"urgent": False})
    assert buckets.admits({"urgent": True})


def test_a_raising_check_means_not_ready():
    assert is_ready({"check": "tests.kojo_jobs.broken_check"}, {}) is False
    assert is_ready({"check": "no.such.check"}, {}) is False
