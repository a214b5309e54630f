"""The redaction rules: which names are tokens, and what a redacted scope keeps."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wschat import redact
from wschat.redact import (
    REDACTED,
    is_token_name,
    redact_headers,
    redact_query,
    redact_scope,
)

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


def test_the_documented_rule() -> None:
    assert REDACTED == "[redacted]"
    assert frozenset({"auth"}) == redact.TOKEN_NAMES
    assert redact.TOKEN_NAME_PARTS == (
        "token",
        "jwt",
        "bearer",
        "secret",
        "passw",
        "apikey",
        "api_key",
        "credential",
        "authorization",
    )


@pytest.mark.parametrize(
    "name",
    [
        "token",
        "TOKEN",
        "Token",
        "access_token",
        "ACCESS-TOKEN",
        "accessToken",
        "id_token",
        "refresh_token",
        "oauth_token",
        "x-auth-token",
        "jwt",
        "JWT",
        "auth",
        "AUTH",
        "authorization",
        "Proxy-Authorization",
        "bearer",
        "client_secret",
        "password",
        "passwd",
        "api_key",
        "api-key",
        "apikey",
        "X-Api-Key",
        "credentials",
        " token ",
    ],
)
def test_token_names(name: str) -> None:
    assert is_token_name(name)


@pytest.mark.parametrize(
    "name",
    ["", "a", "author", "authority", "oauth_state", "page", "batch", "tok", "key"],
)
def test_not_token_names(name: str) -> None:
    assert not is_token_name(name)


@pytest.mark.parametrize(
    ("query", "redacted"),
    [
        (b"", b""),
        (b"page=2&sort=asc", b"page=2&sort=asc"),
        (b"token=abc", b"token=[redacted]"),
        (b"TOKEN=abc", b"TOKEN=[redacted]"),
        (b"access_token=a&id_token=b", b"access_token=[redacted]&id_token=[redacted]"),
        (b"jwt=a&auth=b&author=c", b"jwt=[redacted]&auth=[redacted]&author=c"),
        (b"%74oken=abc", b"%74oken=[redacted]"),
        (b"access%5Ftoken=abc", b"access%5Ftoken=[redacted]"),
        (b"access+token=abc", b"access+token=[redacted]"),
        (b"token", b"token=[redacted]"),
        (b"token=", b"token=[redacted]"),
        (b"a=1&token=x&token=y&b=2", b"a=1&token=[redacted]&token=[redacted]&b=2"),
        # A JWT is redacted under any name, or as the name itself.
        (b"x=" + JWT.encode(), b"x=[redacted]"),
        (JWT.encode(), b"[redacted]"),
        (JWT.encode() + b"=1", b"[redacted]"),
        (b"x=" + JWT.replace(".", "%2E").encode(), b"x=[redacted]"),
        (b"x=eyJ", b"x=eyJ"),  # not a JWT: no dot after it
        # Left exactly as sent, escapes included.
        (b"q=%20a+b&x=%zz", b"q=%20a+b&x=%zz"),
        (b"x=%zz&token=1", b"x=%zz&token=[redacted]"),
    ],
)
def test_redact_query(query: bytes, redacted: bytes) -> None:
    assert redact_query(query) == redacted


def test_a_clean_query_is_returned_as_it_is() -> None:
    query = b"page=2&sort=asc&author=bob"
    assert redact_query(query) is query


NAMES = st.sampled_from(
    ["token", "TOKEN", "access_token", "jwt", "auth", "page", "a", "author", "%74oken"]
)
VALUES = st.sampled_from(["", "x", "1.2", JWT, "eyJx.y", "%41", "a+b"])


@given(st.lists(st.tuples(NAMES, VALUES), max_size=6))
def test_redacted_queries_keep_no_token_and_everything_else(
    pairs: list[tuple[str, str]],
) -> None:
    query = "&".join(f"{n}={v}" for n, v in pairs).encode()
    out = redact_query(query).decode()
    assert JWT not in out
    parsed = parse_qs(out, keep_blank_values=True)
    for name, values in parsed.items():
        if is_token_name(name):
            assert values == [REDACTED] * len(values)
    kept = [f"{n}={v}" for n, v in pairs if not is_token_name(n.replace("%74", "t"))]
    kept = [p for p in kept if "eyJx.y" not in p and JWT not in p]
    assert all(p in out.split("&") for p in kept)


def test_redact_headers() -> None:
    headers = [
        (b"host", b"chat.example"),
        (b"sec-websocket-protocol", b"wschat.v1, Bearer.abc,bearer.def"),
        (b"authorization", b"Bearer abc"),
        (b"Cookie", b"sid=1"),
        (b"x-auth-token", b"t"),
        (b"x-api-key", b"k"),
        (b"user-agent", b"test"),
    ]
    before = list(headers)
    assert redact_headers(headers) == [
        (b"host", b"chat.example"),
        (b"sec-websocket-protocol", b"wschat.v1, bearer.[redacted], bearer.[redacted]"),
        (b"authorization", b"[redacted]"),
        (b"Cookie", b"[redacted]"),
        (b"x-auth-token", b"[redacted]"),
        (b"x-api-key", b"[redacted]"),
        (b"user-agent", b"test"),
    ]
    assert headers == before


def test_headers_without_secrets_are_not_copied() -> None:
    headers = [(b"host", b"h"), (b"sec-websocket-protocol", b"wschat.v1")]
    assert redact_headers(headers) is None


def test_redact_scope_replaces_never_mutates() -> None:
    query = b"token=" + JWT.encode()
    headers = [(b"authorization", b"Bearer x")]
    protocols = ["wschat.v1", "bearer." + JWT]
    scope: dict[str, Any] = {
        "type": "websocket",
        "query_string": query,
        "headers": headers,
        "subprotocols": protocols,
    }
    assert redact_scope(scope) is True
    assert scope["query_string"] == b"token=[redacted]"
    assert scope["headers"] == [(b"authorization", b"[redacted]")]
    assert scope["subprotocols"] == ["wschat.v1", "bearer.[redacted]"]
    assert headers == [(b"authorization", b"Bearer x")]
    assert protocols == ["wschat.v1", "bearer." + JWT]


def test_redact_scope_leaves_a_clean_scope_alone() -> None:
    headers = [(b"host", b"h")]
    scope: dict[str, Any] = {"type": "http", "query_string": b"a=1", "headers": headers}
    assert redact_scope(scope) is False
    assert scope == {"type": "http", "query_string": b"a=1", "headers": headers}
    assert scope["headers"] is headers
    assert redact_scope({"type": "http"}) is False
