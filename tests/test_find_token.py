"""find_token: where the endpoint looks for the token, and what it refuses."""

from __future__ import annotations

import pytest

from wschat.errors import TokenMalformed
from wschat.protocol import SUBPROTOCOL, SUBPROTOCOL_BATCH
from wschat.token_source import find_token

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNlY3JldA"


def test_token_in_query() -> None:
    source = find_token(f"token={TOKEN}".encode(), [])
    assert source.token == TOKEN
    assert source.subprotocol is None
    assert source.batch is False
    assert TOKEN not in repr(source)


def test_token_in_query_with_other_parameters_and_percent_encoding() -> None:
    source = find_token(b"a=1&token=abc%2Edef.ghi&b=2", [])
    assert source.token == "abc.def.ghi"


def test_token_in_subprotocol() -> None:
    source = find_token(b"", [SUBPROTOCOL, f"bearer.{TOKEN}"])
    assert source.token == TOKEN
    # The server selects wschat.v1, never the bearer protocol (it would echo the token).
    assert source.subprotocol == SUBPROTOCOL


def test_no_token() -> None:
    source = find_token(b"", [SUBPROTOCOL])
    assert source.token is None
    assert source.subprotocol == SUBPROTOCOL
    assert find_token(b"other=1", []).token is None


def test_empty_token_parameter_is_found_as_empty() -> None:
    # The verifier then answers token_missing, rather than the endpoint guessing.
    assert find_token(b"token=", []).token == ""


def test_duplicate_query_token_refused() -> None:
    with pytest.raises(TokenMalformed, match="2 times") as info:
        find_token(f"token={TOKEN}&token={TOKEN}".encode(), [])
    assert TOKEN not in str(info.value)


def test_duplicate_bearer_subprotocol_refused() -> None:
    with pytest.raises(TokenMalformed, match="more than one") as info:
        find_token(b"", [SUBPROTOCOL, f"bearer.{TOKEN}", "bearer.other"])
    assert TOKEN not in str(info.value)


def test_token_in_both_places_refused() -> None:
    with pytest.raises(TokenMalformed, match="both") as info:
        find_token(f"token={TOKEN}".encode(), [SUBPROTOCOL, f"bearer.{TOKEN}"])
    assert TOKEN not in repr(info.value)
    assert info.value.close_code == 4401


@pytest.mark.parametrize(
    ("query", "protocols", "batch"),
    [
        (b"", [SUBPROTOCOL, SUBPROTOCOL_BATCH], True),
        (b"batch=1", [], True),
        (b"batch=true", [], True),
        (b"batch=0", [], False),
        (b"batch=yes-please", [], False),
        (b"", [SUBPROTOCOL], False),
        (b"", [], False),
    ],
)
def test_batch_is_opt_in(query: bytes, protocols: list[str], batch: bool) -> None:
    assert find_token(query, protocols).batch is batch
