"""The redaction rules: which names are tokens, and what each rewriter leaves."""

from __future__ import annotations

import io
import json
import logging
from contextlib import redirect_stdout
from typing import Any
from urllib.parse import parse_qs

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wschat import redact
from wschat.redact import (
    REDACTED,
    RedactingFilter,
    install_filter,
    is_token_name,
    redact_headers,
    redact_query,
    redact_scope,
    redact_text,
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


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        (
            '127.0.0.1:5 - "WebSocket /ws/chat/x/?TOKEN=abc&a=1" 403',
            '127.0.0.1:5 - "WebSocket /ws/chat/x/?TOKEN=[redacted]&a=1" 403',
        ),
        (
            f"< Sec-WebSocket-Protocol: wschat.v1, bearer.{JWT}",
            "< Sec-WebSocket-Protocol: wschat.v1, bearer.[redacted]",
        ),
        (
            "< sec-websocket-protocol: wschat.v1, bearer.short",
            "< sec-websocket-protocol: wschat.v1, bearer.[redacted]",
        ),
        ("< Authorization: Bearer abc.def", "< Authorization: [redacted]"),
        (
            "< proxy-authorization: Basic dXNlcjpwYXNz",
            "< proxy-authorization: [redacted]",
        ),
        ("< Cookie: sid=abc; theme=dark", "< Cookie: [redacted]"),
        ("< X-Auth-Token: abc", "< X-Auth-Token: [redacted]"),
        ("sent Bearer abcdEFGH12 along", "sent Bearer [redacted] along"),
        ("Basic dXNlcjpwYXNz", "Basic [redacted]"),
        (f"decoded {JWT} here", "decoded [redacted] here"),
        (
            "scope={'query_string': b'%74oken=zzz&x=1', "
            "'headers': [(b'authorization', b'Bearer q'), (b'cookie', b'a=b')]}",
            "scope={'query_string': b'%74oken=[redacted]&x=1', "
            "'headers': [(b'authorization', b'[redacted]'), "
            "(b'cookie', b'[redacted]')]}",
        ),
        (
            """< TEXT '{"type":"auth","token":"plain-secret"}' [40 bytes]""",
            """< TEXT '{"type":"auth","token":"[redacted]"}' [40 bytes]""",
        ),
        (
            "GET /x?jwt=a&access_token=b&auth=c&author=bob HTTP/1.1",
            "GET /x?jwt=[redacted]&access_token=[redacted]&auth=[redacted]"
            "&author=bob HTTP/1.1",
        ),
    ],
)
def test_redact_text(text: str, redacted: str) -> None:
    assert redact_text(text) == redacted
    assert redact_text(redacted) == redacted  # idempotent


@pytest.mark.parametrize(
    "text",
    [
        "nothing here",
        "the bearer token is missing; use basic settings",  # prose, not credentials
        "send the subprotocols wschat.v1, bearer.<JWT>",  # a placeholder
        # wschat's own refusal line: the fingerprint is safe by design.
        "wschat refused connection: chat='lobby' code=4401 "
        "reason='token_malformed: not a JWT' token=sha256:9f86d081884c "
        "client=127.0.0.1:5",
        "token=none page=2",
    ],
)
def test_redact_text_leaves_these_alone(text: str) -> None:
    assert redact_text(text) is text


@given(st.text(alphabet="tokenauthjwbr=&?:. eyJ%Bb-_'\"123[]", max_size=60))
def test_redact_text_is_idempotent(text: str) -> None:
    once = redact_text(text)
    assert redact_text(once) == once


def record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("x", logging.INFO, __file__, 1, msg, args, None)


def test_filter_rewrites_the_message_once_formatted() -> None:
    rec = record('%s - "WebSocket %s" [accepted]', "1.2.3.4:5", "/ws?token=" + JWT)
    assert RedactingFilter().filter(rec) is True
    assert rec.getMessage() == '1.2.3.4:5 - "WebSocket /ws?token=[redacted]" [accepted]'
    assert rec.args is None


def test_filter_leaves_a_clean_record_as_it_is() -> None:
    rec = record("connection %s", "open")
    assert RedactingFilter().filter(rec) is True
    assert (rec.msg, rec.args) == ("connection %s", ("open",))


def test_filter_passes_a_malformed_record_on() -> None:
    rec = record("%d", "not a number")
    assert RedactingFilter().filter(rec) is True
    assert rec.msg == "%d"


def test_filter_on_a_logger(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("wschat.test.redact")
    filt = RedactingFilter()
    logger.addFilter(filt)
    try:
        with caplog.at_level(logging.INFO, logger="wschat.test.redact"):
            logger.info("< Authorization: Bearer %s", JWT)
    finally:
        logger.removeFilter(filt)
    assert JWT not in caplog.text
    assert "< Authorization: [redacted]" in caplog.text


def test_install_filter_is_idempotent() -> None:
    names = ("wschat.test.a", "wschat.test.b")
    try:
        first = install_filter(names)
        second = install_filter(names)
        assert first is second
        for name in names:
            filters = logging.getLogger(name).filters
            assert [f for f in filters if isinstance(f, RedactingFilter)] == [first]
    finally:
        for name in names:
            logging.getLogger(name).filters.clear()


def test_install_filter_defaults_cover_both_servers() -> None:
    assert set(redact.SERVER_LOGGERS) >= {
        "uvicorn.error",
        "uvicorn.access",
        "uvicorn.asgi",
        "hypercorn.error",
        "hypercorn.access",
    }


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
def test_main_prints_the_config(server: str) -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert redact.main([server]) == 0
    config = json.loads(out.getvalue())
    expected = {"uvicorn": redact.UVICORN_LOG_CONFIG}.get(
        server, redact.HYPERCORN_LOG_CONFIG
    )
    assert config == expected
    assert config["filters"] == {
        "wschat_redact": {"()": "wschat.redact.RedactingFilter"}
    }
    for handler in config["handlers"].values():
        assert handler["filters"] == ["wschat_redact"]


def test_main_usage() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert redact.main([]) == 2
        assert redact.main(["nginx"]) == 2
    assert "usage: python -m wschat.redact uvicorn|hypercorn" in out.getvalue()
