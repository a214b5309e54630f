"""The ASGI adapter's pure parts: token redaction and the scope's headers."""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wschat.admission import find_token
from wschat.asgi import ScopeHeaders, handshake_from_scope, redact_query


@pytest.mark.parametrize(
    ("query", "redacted"),
    [
        (b"", b""),
        (b"a=1&b=2", b"a=1&b=2"),
        (b"token=abc.def.ghi", b"token=[redacted]"),
        (b"a=%20x&token=abc&b=2", b"a=%20x&token=[redacted]&b=2"),
        # Names are decoded the way find_token decodes them; kept as sent.
        (b"%74oken=abc", b"%74oken=[redacted]"),
        (b"tok%65n=a&token=b", b"tok%65n=[redacted]&token=[redacted]"),
        (b"token", b"token=[redacted]"),
        # Any token name, in any case.
        (b"TOKEN=abc", b"TOKEN=[redacted]"),
        (b"Access_Token=abc&x=1", b"Access_Token=[redacted]&x=1"),
        (b"to+ken=abc", b"to+ken=abc"),
        (b"x=%zz&token=1", b"x=%zz&token=[redacted]"),
    ],
)
def test_redact_query(query: bytes, redacted: bytes) -> None:
    assert redact_query(query) == redacted


@given(st.text(alphabet="atokenT%=&+12.", max_size=40))
def test_no_token_value_survives_redaction(text: str) -> None:
    query = text.encode("latin-1")
    values = parse_qs(redact_query(query).decode("latin-1"), keep_blank_values=True)
    assert all(v == "[redacted]" for v in values.get("token", []))


def test_handshake_keeps_the_token_and_redacts_the_scope() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln"
    scope = {
        "type": "websocket",
        "query_string": f"room=1&token={token}".encode(),
        "headers": [(b"host", b"chat.example"), (b"origin", b"https://a.example")],
        "client": ("10.0.0.1", 5000),
    }
    headers = scope["headers"]
    hs = handshake_from_scope(scope, "lobby")
    assert scope["query_string"] == b"room=1&token=[redacted]"
    assert find_token(hs.query_string, ()).token == token
    assert scope["headers"] is headers  # nothing secret in them: left alone
    assert hs.headers["origin"] == "https://a.example"
    assert hs.client == "10.0.0.1:5000"


def test_handshake_redacts_header_and_subprotocol_tokens_in_the_scope() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln"
    headers = [
        (b"host", b"chat.example"),
        (b"sec-websocket-protocol", f"wschat.v1, bearer.{token}".encode()),
        (b"authorization", b"Bearer abc"),
    ]
    protocols = ["wschat.v1", f"bearer.{token}"]
    scope = {"type": "websocket", "headers": headers, "subprotocols": protocols}
    hs = handshake_from_scope(scope, "lobby")
    # The handshake reads what was sent ...
    assert find_token(hs.query_string, hs.subprotocols).token == token
    assert hs.headers["authorization"] == "Bearer abc"
    # ... the scope the server logs from does not, and the server's own lists (which
    # it may still use for the handshake) are untouched.
    assert scope["headers"] == [
        (b"host", b"chat.example"),
        (b"sec-websocket-protocol", b"wschat.v1, bearer.[redacted]"),
        (b"authorization", b"[redacted]"),
    ]
    assert scope["subprotocols"] == ["wschat.v1", "bearer.[redacted]"]
    assert headers[1][1] == f"wschat.v1, bearer.{token}".encode()
    assert protocols == ["wschat.v1", f"bearer.{token}"]


def test_scope_headers_read_like_a_mapping() -> None:
    raw = [
        (b"host", b"chat.example"),
        (b"Origin", b"https://a.example"),
        (b"origin", b"https://b.example"),
        (b"x-caf\xe9", b"\xe9t\xe9"),
    ]
    headers = ScopeHeaders(raw)
    # Case-insensitive names; the first value of a repeated header wins.
    assert headers["ORIGIN"] == "https://a.example"
    assert headers.get("host") == "chat.example"
    assert headers["x-caf\xe9"] == "\xe9t\xe9"  # latin-1, as ASGI sends it
    assert headers.get("cookie") is None
    with pytest.raises(KeyError):
        headers["cookie"]
    assert list(headers) == ["host", "origin", "x-caf\xe9"]
    assert len(headers) == 3
    assert headers
    assert not ScopeHeaders([])
    assert "origin" in headers
    assert "chat.example" not in repr(headers)
    # An iterable that is not a list is read once, into a list.
    assert ScopeHeaders(iter(raw))["host"] == "chat.example"
