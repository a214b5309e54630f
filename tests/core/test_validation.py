"""wschat.validation.check_number: what every numeric option goes through."""

from __future__ import annotations

import math
from typing import Any

import pytest

from wschat import errors, validation


@pytest.mark.parametrize(
    ("value", "kwargs"),
    [
        (0, {"minimum": 0}),
        (0.0, {"minimum": 0}),
        (5, {"minimum": 0, "maximum": 5}),
        (1e-9, {"minimum": 0, "above": True}),
        (10**400, {"minimum": 1, "integer": True}),
        (None, {"minimum": 1, "none": "for no limit"}),
        (2.5, {"minimum": 1}),
    ],
)
def test_check_number_accepts(value: object, kwargs: Any) -> None:
    validation.check_number("x", value, **kwargs)


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        (math.nan, {"minimum": 0}, "x must be a number of at least 0; got nan"),
        (math.inf, {"minimum": 0}, "x must be a number of at least 0; got inf"),
        (-math.inf, {"minimum": 0}, "x must be a number of at least 0; got -inf"),
        (True, {"minimum": 0}, "x must be a number of at least 0; got True"),
        (False, {"minimum": 0}, "x must be a number of at least 0; got False"),
        ("1", {"minimum": 0}, "x must be a number of at least 0; got '1'"),
        (None, {"minimum": 0}, "x must be a number of at least 0; got None"),
        (-1, {"minimum": 0}, "x must be a number of at least 0; got -1"),
        (-0.5, {"minimum": 0}, "x must be a number of at least 0; got -0.5"),
        (0, {"minimum": 0, "above": True}, "x must be a number above 0; got 0"),
        (
            6,
            {"minimum": 0, "maximum": 5, "unit": "seconds"},
            "x must be a number of seconds from 0 to 5; got 6",
        ),
        (
            1.5,
            {"minimum": 1, "integer": True},
            "x must be an integer of at least 1; got 1.5",
        ),
        (
            0,
            {"minimum": 1, "integer": True, "unit": "bytes"},
            "x must be an integer of bytes of at least 1; got 0",
        ),
        (
            0,
            {"minimum": 1, "integer": True, "none": "for no cap"},
            "x must be an integer of at least 1, or None for no cap; got 0",
        ),
        (
            "y" * 100,
            {"minimum": 0},
            "x must be a number of at least 0; got '" + "y" * 39,
        ),
    ],
)
def test_check_number_refuses_with_the_fix(
    value: object, kwargs: Any, message: str
) -> None:
    with pytest.raises(errors.ConfigurationError) as info:
        validation.check_number("x", value, **kwargs)
    assert info.value.detail == message


def test_check_number_names_an_int_too_long_to_print() -> None:
    with pytest.raises(errors.ConfigurationError) as info:
        validation.check_number("x", 10**5000, minimum=0, maximum=1)
    assert info.value.detail == (
        "x must be a number from 0 to 1; got an int too large to show"
    )
