from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
