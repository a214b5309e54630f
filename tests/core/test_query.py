"""The query string of a handshake, split once and read the way ``parse_qs`` reads it.

Admission (where the token is) and redaction (what the server logs) both read the
one :class:`~wschat.query.Query` the handshake carries: one split and one decode per
handshake, where 0.1 parsed the query string three times.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import parse_qs

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

import wschat.query
from tests.support.common import SECRET
from wschat import ConnectionManager, TokenVerifier
from wschat.asgi import chat_app
from wschat.query import Query
from wschat.redact import redact_query
from wschat.transport import Handshake

QUERY_BYTES = st.binary(max_size=60) | st.text(
    alphabet="atokenbch%=&+12.\xe9\xff", max_size=40
).map(lambda text: text.encode("latin-1"))


@given(QUERY_BYTES)
def test_parameters_read_as_parse_qs_reads_them(raw: bytes) -> None:
    expected = parse_qs(raw.decode("latin-1"), keep_blank_values=True)
    query = Query(raw)
    for name, values in expected.items():
        assert query.get_all(name) == values
    assert query.get_all("token") == expected.get("token", [])
    assert query.get_all("batch") == expected.get("batch", [])


@given(QUERY_BYTES)
def test_the_parts_join_back_into_the_query(raw: bytes) -> None:
    assert b"&".join(Query(raw).parts) == raw


@given(QUERY_BYTES)
def test_redacting_a_split_query_is_redacting_the_bytes(raw: bytes) -> None:
    assert redact_query(Query(raw)) == redact_query(raw)


@pytest.mark.parametrize(
    ("raw", "name", "values"),
    [
        (b"", "token", []),
        (b"token=abc", "token", ["abc"]),
        (b"token", "token", [""]),  # no "=": a blank value
        (b"token=", "token", [""]),
        (b"&&token=a&&", "token", ["a"]),  # empty parts skipped
        (b"%74oken=a+b%2Ec", "token", ["a b.c"]),
        (b"token=%C3%BF", "token", ["\xff"]),  # escapes are UTF-8
        (b"token=\xc3\xbf", "token", ["\xc3\xbf"]),  # raw bytes are latin-1
        (b"token=%ff", "token", ["\ufffd"]),  # invalid UTF-8 is replaced
        (b"token=a&token=b&x=1", "token", ["a", "b"]),
        (b"TOKEN=a", "token", []),  # names are case-sensitive
        (b"a=1=2", "a", ["1=2"]),
    ],
)
def test_get_all(raw: bytes, name: str, values: list[str]) -> None:
    assert Query(raw).get_all(name) == values


def test_an_empty_query_has_no_parts() -> None:
    assert Query(b"").parts == ()
    assert Query(b"&").parts == (b"", b"")


def test_get_all_returns_a_copy_and_repr_shows_no_value() -> None:
    query = Query(b"token=secret-token&x=1")
    query.get_all("token").append("more")
    assert query.get_all("token") == ["secret-token"]
    assert repr(query) == "<Query 2 parts>"
    assert query.parts == (b"token=secret-token", b"x=1")


def test_a_handshake_carries_its_query_split() -> None:
    hs = Handshake("lobby", b"token=abc&batch=1", {}, ())
    assert hs.query.raw is hs.query_string
    assert hs.query.get_all("batch") == ["1"]
    assert "abc" not in repr(hs)
    # Made from query_string: equal handshakes stay equal.
    assert hs == Handshake("lobby", b"token=abc&batch=1", {}, ())


def test_a_refused_handshake_splits_and_decodes_its_query_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Through ``chat_app``: redaction, ``find_token`` and the refusal's log line
    (the worst case: a token given twice is named from every place it was given)
    all read one split, decoded once."""
    made: list[bytes] = []
    real_init = Query.__init__
    decoded: list[bytes] = []
    real_decode = wschat.query._decode

    def counting_init(self: Query, raw: bytes) -> None:
        made.append(raw)
        real_init(self, raw)

    def counting_decode(raw: bytes) -> str:
        decoded.append(raw)
        return real_decode(raw)

    def no_parse_qs(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the query string was parsed again")

    monkeypatch.setattr(Query, "__init__", counting_init)
    monkeypatch.setattr(wschat.query, "_decode", counting_decode)
    monkeypatch.setattr("urllib.parse.parse_qs", no_parse_qs)
    monkeypatch.setattr("urllib.parse.parse_qsl", no_parse_qs)
    query = b"token=abc&batch=1&token=def"
    scope: dict[str, Any] = {
        "type": "websocket",
        "path": "/ws/chat/lobby",
        "query_string": query,
        "headers": [(b"host", b"chat.example")],
        "subprotocols": [],
        "client": ("127.0.0.1", 5000),
    }
    sent: list[MutableMapping[str, Any]] = []
    events = [{"type": "websocket.connect"}, {"type": "websocket.disconnect"}]

    async def receive() -> Any:
        return events.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    app = chat_app(ConnectionManager(), TokenVerifier(SECRET, algorithms=["HS256"]))
    caplog.set_level(logging.INFO, logger="wschat")

    async def handshake() -> None:
        await app(scope, receive, send)

    anyio.run(handshake)
    lines = [r.getMessage() for r in caplog.records if r.name == "wschat"]
    assert made == [query]
    assert len(decoded) == 6  # each name and value of the three parts, once
    assert scope["query_string"] == b"token=[redacted]&batch=1&token=[redacted]"
    assert sent[-1]["code"] == 4401
    assert "token=sha256:ba7816bf8f01,sha256:cb8379ac2098" in lines[0], lines
