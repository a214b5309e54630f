"""find_token: where the endpoint looks for the token, and what it refuses."""

from __future__ import annotations

import pytest

from wschat.auth import token_fingerprint
from wschat.errors import TokenMalformed
from wschat.protocol import SUBPROTOCOL, SUBPROTOCOL_BATCH
from wschat.admission import find_token, offered_subprotocol, refused_fingerprint
from wschat.transport import Handshake

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


# -- naming the token(s) of a refused handshake without showing them -----------------


def handshake(query: bytes = b"", protocols: list[str] | None = None) -> Handshake:
    return Handshake("lobby", query, {}, protocols or [])


def test_fingerprint_is_sha256_of_the_token_cut_to_12_hex_digits() -> None:
    assert token_fingerprint("abc") == "sha256:ba7816bf8f01"
    assert token_fingerprint("") == "sha256:e3b0c44298fc"
    # A lone surrogate (possible from a percent-decoded query) is hashed, not fatal.
    assert token_fingerprint("\ud800") == token_fingerprint("?")


def test_refused_fingerprint_of_a_found_token() -> None:
    source = find_token(b"token=abc", [])
    assert refused_fingerprint(handshake(b"token=abc"), source) == "sha256:ba7816bf8f01"
    none_found = find_token(b"", [SUBPROTOCOL])
    assert refused_fingerprint(handshake(), none_found) == "none"
    empty = find_token(b"token=", [])
    assert refused_fingerprint(handshake(b"token="), empty) == "none"


@pytest.mark.parametrize(
    ("query", "protocols", "expected"),
    [
        (b"", [], "none"),
        (b"other=1", [SUBPROTOCOL], "none"),
        (b"token=abc", [], "sha256:ba7816bf8f01"),
        (b"token=", [], "sha256:e3b0c44298fc"),  # given, though empty
        (b"TOKEN=abc", [], "none"),  # not where find_token looks
        (b"token=abc&token=abc", [], "sha256:ba7816bf8f01"),  # each once
        (b"token=abc&token=", [], "sha256:ba7816bf8f01,sha256:e3b0c44298fc"),
        (b"", ["bearer.abc"], "sha256:ba7816bf8f01"),
        (
            b"",
            [SUBPROTOCOL, "bearer.abc", "bearer."],
            ("sha256:ba7816bf8f01,sha256:e3b0c44298fc"),
        ),
        (b"token=abc", ["bearer."], "sha256:ba7816bf8f01,sha256:e3b0c44298fc"),
        (b"token=%C3%BF", [], token_fingerprint("ÿ")),  # percent-escapes are UTF-8
        (b"token=\xc3\xbf", [], token_fingerprint("Ã¿")),  # raw bytes: latin-1
    ],
)
def test_refused_fingerprint_searches_the_handshake_like_find_token(
    query: bytes, protocols: list[str], expected: str
) -> None:
    # Without a TokenSource: the chat id was refused first, or the token was given
    # twice and find_token refused it.
    assert refused_fingerprint(handshake(query, protocols), None) == expected


def test_offered_subprotocol_selects_only_wschat_v1() -> None:
    assert offered_subprotocol(handshake(b"", [SUBPROTOCOL])) == "wschat.v1"
    assert offered_subprotocol(handshake(b"", ["bearer.abc", SUBPROTOCOL])) == (
        "wschat.v1"
    )
    assert offered_subprotocol(handshake(b"", [])) is None
    assert offered_subprotocol(handshake(b"", ["bearer.abc", "wschat.v2"])) is None
    assert offered_subprotocol(handshake(b"", [SUBPROTOCOL_BATCH])) is None


def test_subprotocol_names_are_pinned() -> None:
    assert (SUBPROTOCOL, SUBPROTOCOL_BATCH) == ("wschat.v1", "wschat.batch")


def test_refusal_messages_of_find_token() -> None:
    with pytest.raises(TokenMalformed) as info:
        find_token(b"token=a&token=b&token=c", [])
    assert info.value.detail == "token parameter given 3 times; send it once"
    with pytest.raises(TokenMalformed) as info:
        find_token(b"", ["bearer.a", "bearer.b"])
    assert info.value.detail == "more than one bearer.<JWT> subprotocol; send one"
    with pytest.raises(TokenMalformed) as info:
        find_token(b"token=a", ["bearer.b"])
    assert info.value.detail == (
        "token given in both the query and a subprotocol; send one"
    )
