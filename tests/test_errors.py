from __future__ import annotations

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
    assert close_reason("token_expired", "get a new one") == "token_expired: get a new one"
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
    assert close_reason("x", "😀" * 100).encode().decode() == close_reason("x", "😀" * 100)


def test_errors_carry_codes() -> None:
    err = TokenMalformed()
    assert (err.close_code, err.http_status, err.code) == (4401, 401, "token_malformed")
    assert err.reason.startswith("token_malformed: not a JWT")
    assert SlowConsumer().close_code == 1013
    assert WSChatError().reason == "internal_error: the server hit an unexpected error"
