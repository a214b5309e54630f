from __future__ import annotations

import math
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wschat import errors
from wschat.errors import (
    MAX_REASON_BYTES,
    SlowConsumer,
    TokenMalformed,
    WSChatError,
    close_reason,
)


def test_reason_starts_with_code() -> None:
    assert (
        close_reason("token_expired", "get a new one") == "token_expired: get a new one"
    )
    assert close_reason("bye") == "bye"


@given(st.text(), st.text())
def test_reason_fits_and_is_a_prefix(code: str, words: str) -> None:
    reason = close_reason(code, words)
    raw = reason.encode("utf-8", "surrogatepass")
    assert len(raw) <= MAX_REASON_BYTES
    full = f"{code}: {words}" if words else code
    assert full.startswith(reason)


def test_clamps_on_character_boundary() -> None:
    reason = close_reason("x", "é" * 200)  # two bytes each
    assert len(reason.encode()) in (MAX_REASON_BYTES, MAX_REASON_BYTES - 1)
    reason.encode("utf-8")  # never a broken sequence
    assert close_reason("x", "😀" * 100).encode().decode() == close_reason(
        "x", "😀" * 100
    )


def test_errors_carry_codes() -> None:
    err = TokenMalformed()
    assert (err.close_code, err.http_status, err.code) == (4401, 401, "token_malformed")
    assert err.reason.startswith("token_malformed: not a JWT")
    assert SlowConsumer().close_code == 1013
    assert WSChatError().reason == "internal_error: the server hit an unexpected error"


@given(st.text(max_size=20), st.text(max_size=200))
def test_reason_is_the_longest_prefix_that_fits(code: str, words: str) -> None:
    full = f"{code}: {words}" if words else code
    reason = close_reason(code, words)
    if len(full.encode()) <= MAX_REASON_BYTES:
        assert reason == full
    else:
        # Not one more character would have fitted.
        next_char = full[len(reason)]
        assert len((reason + next_char).encode()) > MAX_REASON_BYTES


@pytest.mark.parametrize("char", ["a", "é", "€", "😀"])
def test_clamping_each_utf8_width(char: str) -> None:
    reason = close_reason("code", char * 200)
    raw = reason.encode("utf-8")
    width = len(char.encode())
    assert MAX_REASON_BYTES - width < len(raw) <= MAX_REASON_BYTES
    assert reason == ("code: " + char * 200)[: len(reason)]


def _all_errors(cls: type[WSChatError]) -> list[type[WSChatError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found += _all_errors(sub)
    return found


def test_every_error_has_a_snake_case_code_and_a_reason_that_fits() -> None:
    classes = _all_errors(WSChatError)
    assert len(classes) >= 20
    for cls in classes:
        err = cls()
        assert re.fullmatch(r"[a-z][a-z_]*", err.code), cls
        assert err.reason.startswith(err.code)
        assert len(err.reason.encode()) <= MAX_REASON_BYTES
        assert str(err) == f"{err.code}: {err.detail}"
        long = cls("x" * 500)
        assert len(long.reason.encode()) == MAX_REASON_BYTES
        assert 1000 <= cls.close_code <= 4999
        assert 400 <= cls.http_status <= 599


# -- every error's wire values, pinned with literals ----------------------------------

WIRE = [
    # class, close code, HTTP status (sent with http_denials=True), reason code
    (errors.WSChatError, 1011, 500, "internal_error"),
    (errors.ConfigurationError, 1011, 500, "configuration_error"),
    (errors.InvalidChatId, 4400, 400, "invalid_chat_id"),
    (errors.BadRequest, 4400, 400, "bad_request"),
    (errors.OriginRefused, 4403, 403, "origin_refused"),
    (errors.AuthenticationError, 4401, 401, "token_invalid"),
    (errors.TokenMissing, 4401, 401, "token_missing"),
    (errors.TokenMalformed, 4401, 401, "token_malformed"),
    (errors.TokenInvalid, 4401, 401, "token_invalid"),
    (errors.TokenExpired, 4401, 401, "token_expired"),
    (errors.TokenNotYetValid, 4401, 401, "token_not_yet_valid"),
    (errors.TokenTooLarge, 4401, 401, "token_too_large"),
    (errors.Forbidden, 4403, 403, "forbidden"),
    (errors.AuthTimeout, 4408, 408, "auth_timeout"),
    (errors.TextOnly, 1003, 400, "text_only"),
    (errors.MessageTooBig, 1009, 413, "message_too_big"),
    (errors.SlowConsumer, 1013, 503, "slow_consumer"),
    (errors.TryAgainLater, 1013, 503, "try_again_later"),
    (errors.RateLimited, 4429, 429, "rate_limited"),
    (errors.TooManyConnections, 4429, 429, "too_many_connections"),
    (errors.NormalClosure, 1000, 410, "bye"),
    (errors.GoingAway, 1001, 503, "going_away"),
    (errors.ServiceRestart, 1012, 503, "service_restart"),
]


@pytest.mark.parametrize(
    ("cls", "close_code", "http_status", "code"),
    WIRE,
    ids=[w[0].__name__ for w in WIRE],
)
def test_wire_values_of_each_error(
    cls: type[WSChatError], close_code: int, http_status: int, code: str
) -> None:
    err = cls()
    assert (err.close_code, err.http_status, err.code) == (
        close_code,
        http_status,
        code,
    )


def test_the_table_lists_every_error_class() -> None:
    # A new error in wschat.errors gets its wire values pinned above.
    defined = {c for c in _all_errors(WSChatError) if c.__module__ == "wschat.errors"}
    assert {w[0] for w in WIRE} == defined


def test_close_reason_limit_is_123_bytes() -> None:
    assert MAX_REASON_BYTES == 123
    exactly = "w" * (123 - len("code: "))
    assert close_reason("code", exactly) == "code: " + exactly
    assert close_reason("code", exactly + "w") == "code: " + exactly
    # Cut inside a two-byte character: the partial character is dropped.
    assert close_reason("code", exactly[:-1] + "é") == "code: " + exactly[:-1]
    assert close_reason("x" * 200) == "x" * 123


def test_detail_is_the_exception_message() -> None:
    err = errors.TokenInvalid("signature does not match the key")
    assert err.args == ("signature does not match the key",)
    assert repr(err) == "TokenInvalid('signature does not match the key')"
    assert errors.TokenExpired().args == ("token has expired; get a new one",)


# -- check_number: what every numeric option goes through -----------------------------


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
    errors.check_number("x", value, **kwargs)


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
        errors.check_number("x", value, **kwargs)
    assert info.value.detail == message


def test_check_number_names_an_int_too_long_to_print() -> None:
    with pytest.raises(errors.ConfigurationError) as info:
        errors.check_number("x", 10**5000, minimum=0, maximum=1)
    assert info.value.detail == (
        "x must be a number from 0 to 1; got an int too large to show"
    )
