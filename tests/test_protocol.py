"""The wire format: round-trips, malformed client frames, and server-owned fields."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wschat.protocol import (
    MAX_CLIENT_ID_CHARS,
    MAX_JSON_DEPTH,
    PROTOCOL_VERSION,
    ClientAuth,
    ClientMessage,
    ClientPing,
    FrameError,
    encode_auth_ok,
    encode_batch,
    encode_client_message,
    encode_error,
    encode_message,
    encode_pong,
    encode_presence,
    encode_ready,
    encode_resync,
    parse_client_frame,
)

# Finite JSON values; floats that survive a round-trip (no NaN/inf, -0.0 == 0.0 is ok).
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)
client_ids = st.none() | st.text(max_size=MAX_CLIENT_ID_CHARS)
SETTINGS = settings(max_examples=150, deadline=None)


# -- round-trips ---------------------------------------------------------------------


@SETTINGS
@given(json_values, client_ids)
def test_client_message_round_trip(body: Any, client_id: str | None) -> None:
    frame = parse_client_frame(encode_client_message(body, client_id))
    assert frame == ClientMessage(body=body, client_id=client_id)


@SETTINGS
@given(
    st.text(max_size=30),
    st.text(min_size=1, max_size=128),
    st.text(max_size=64),
    json_values,
    st.integers(min_value=0, max_value=2**53),
    client_ids,
)
def test_server_message_round_trip(
    id: str, chat_id: str, user: str, body: Any, ts: int, client_id: str | None
) -> None:
    raw = encode_message(
        id=id, chat_id=chat_id, user=user, body=body, ts=ts, client_id=client_id
    )
    assert raw.isascii()  # so len() is the byte size the outbox counts
    assert json.loads(raw) == {
        "type": "message",
        "id": id,
        "chat_id": chat_id,
        "user": user,
        "body": body,
        "ts": ts,
        "client_id": client_id,
    }


@SETTINGS
@given(
    st.text(max_size=20),
    st.text(min_size=1, max_size=20),
    st.lists(st.text(max_size=10), max_size=5),
    st.dictionaries(st.text(max_size=10), st.integers(), max_size=3),
    st.booleans(),
)
def test_ready_round_trip(
    conn_id: str, chat_id: str, members: list[str], limits: dict[str, int], batch: bool
) -> None:
    raw = encode_ready(
        connection_id=conn_id,
        chat_id=chat_id,
        user="u",
        members=members,
        limits=limits,
        batch=batch,
    )
    assert json.loads(raw) == {
        "type": "ready",
        "protocol": PROTOCOL_VERSION,
        "connection_id": conn_id,
        "chat_id": chat_id,
        "user": "u",
        "members": members,
        "limits": limits,
        "batch": batch,
    }


@SETTINGS
@given(
    st.text(max_size=20),
    st.sampled_from(["join", "leave"]),
    st.text(max_size=20),
    st.integers(0, 10**6),
)
def test_presence_round_trip(chat_id: str, event: Any, user: str, count: int) -> None:
    raw = encode_presence(chat_id=chat_id, event=event, user=user, count=count)
    assert json.loads(raw) == {
        "type": "presence",
        "chat_id": chat_id,
        "event": event,
        "user": user,
        "count": count,
    }


@SETTINGS
@given(st.text(max_size=30), st.text(max_size=100))
def test_error_and_resync_round_trip(code: str, detail: str) -> None:
    assert json.loads(encode_error(code, detail)) == {
        "type": "error",
        "code": code,
        "message": detail,
    }
    assert json.loads(encode_resync(code, detail)) == {
        "type": "resync",
        "chat_id": code,
        "message": detail,
    }


@SETTINGS
@given(st.none() | st.text(max_size=20) | st.integers())
def test_ping_pong_round_trip(ping_id: str | int | None) -> None:
    frame = {"type": "ping"} if ping_id is None else {"type": "ping", "id": ping_id}
    parsed = parse_client_frame(json.dumps(frame))
    assert parsed == ClientPing(id=ping_id)
    pong = json.loads(encode_pong(parsed.id if isinstance(parsed, ClientPing) else 0))
    assert pong == (
        {"type": "pong"} if ping_id is None else {"type": "pong", "id": ping_id}
    )


def test_auth_ok_and_auth_frame() -> None:
    assert json.loads(encode_auth_ok(123)) == {"type": "auth", "ok": True, "exp": 123}
    assert json.loads(encode_auth_ok(None))["exp"] is None
    frame = parse_client_frame('{"type":"auth","token":"a.b.c-secret-token"}')
    assert frame == ClientAuth(token="a.b.c-secret-token")
    assert "a.b.c-secret-token" not in repr(frame)


@SETTINGS
@given(st.lists(json_values, max_size=8))
def test_batch_embeds_frames_unchanged(bodies: list[Any]) -> None:
    frames = [
        encode_message(
            id=f"m{i}", chat_id="room", user="u", body=body, ts=i, client_id=None
        )
        for i, body in enumerate(bodies)
    ]
    raw = encode_batch(frames)
    data = json.loads(raw)
    assert data["type"] == "batch"
    assert data["frames"] == [json.loads(f) for f in frames]
    # Embedded verbatim: each encoded frame appears in the batch text, in order.
    position = 0
    for frame in frames:
        found = raw.find(frame, position)
        assert found >= position
        position = found + len(frame)


def test_encoders_refuse_nan_and_infinity() -> None:
    for bad in (math.nan, math.inf, -math.inf, [1, {"x": math.nan}]):
        with pytest.raises(ValueError, match="JSON"):
            encode_message(
                id="m", chat_id="c", user="u", body=bad, ts=0, client_id=None
            )


def test_non_ascii_is_escaped() -> None:
    raw = encode_message(
        id="m", chat_id="c", user="zoë", body="😀 é", ts=0, client_id="ü"
    )
    assert raw.isascii()
    assert json.loads(raw)["body"] == "😀 é"


# -- malformed client frames -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "bad_json"),
        ("hello", "bad_json"),
        ("{", "bad_json"),
        ('{"type": "message", "body": NaN}', "bad_json"),
        ('{"type": "message", "body": Infinity}', "bad_json"),
        ('{"type": "message", "body": -Infinity}', "bad_json"),
        ('{"type": "message", "body": [1, 2, NaN]}', "bad_json"),
        ("[1, 2]", "bad_frame"),
        ('["message"]', "bad_frame"),
        ('"message"', "bad_frame"),
        ("42", "bad_frame"),
        ("null", "bad_frame"),
        ("{}", "bad_frame"),
        ('{"body": "hi"}', "bad_frame"),
        ('{"type": null, "body": "hi"}', "bad_frame"),
        ('{"type": 1, "body": "hi"}', "bad_frame"),
        ('{"type": ["message"], "body": "hi"}', "bad_frame"),
        ('{"type": "shout", "body": "hi"}', "unknown_type"),
        ('{"type": "MESSAGE", "body": "hi"}', "unknown_type"),
        ('{"type": "message"}', "bad_frame"),
        ('{"type": "message", "body": "x", "client_id": 5}', "bad_frame"),
        ('{"type": "message", "body": "x", "client_id": ["a"]}', "bad_frame"),
        ('{"type": "message", "body": "x", "client_id": {}}', "bad_frame"),
        (
            '{"type": "message", "body": "x", "client_id": "'
            + "a" * (MAX_CLIENT_ID_CHARS + 1)
            + '"}',
            "bad_frame",
        ),
        ('{"type": "ping", "id": [1]}', "bad_frame"),
        ('{"type": "ping", "id": 1.5}', "bad_frame"),
        ('{"type": "ping", "id": true}', "bad_frame"),
        ('{"type": "ping", "id": {}}', "bad_frame"),
        ('{"type": "auth"}', "bad_frame"),
        ('{"type": "auth", "token": 5}', "bad_frame"),
        ("[" * 100_000 + "]" * 100_000, "bad_frame"),
        (
            '{"type": "message", "body": ' + "[" * 100_000 + "]" * 100_000 + "}",
            "bad_frame",
        ),
        ('{"a":' * 50_000 + "1" + "}" * 50_000, "bad_frame"),
        ('{"type": "message", "body": ' + "[" * 64 + "]" * 64 + "}", "bad_frame"),
        ('{"type": "message", "body": ' + "[" * 500 + "]" * 500 + "}", "bad_frame"),
        ('{"type": "message", "body": {"a": ' * 40 + "1" + "}" * 80, "bad_frame"),
    ],
)
def test_malformed_frames(text: str, code: str) -> None:
    with pytest.raises(FrameError) as info:
        parse_client_frame(text)
    err = info.value
    assert err.code == code
    assert err.detail
    assert str(err).startswith(code + ": ")
    assert isinstance(err, ValueError)


def test_unknown_type_message_names_the_type_and_the_known_ones() -> None:
    with pytest.raises(FrameError) as info:
        parse_client_frame('{"type": "shout"}')
    assert "shout" in info.value.detail
    assert "message" in info.value.detail


def test_nesting_up_to_the_limit_is_accepted() -> None:
    body = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)
    frame = parse_client_frame('{"type": "message", "body": ' + body + "}")
    assert isinstance(frame, ClientMessage)
    # Brackets inside strings are not nesting.
    text = encode_client_message({"text": "[" * 500, "more": ["{" * 500]})
    assert parse_client_frame(text) == ClientMessage(
        {"text": "[" * 500, "more": ["{" * 500]}
    )


@SETTINGS
@given(st.integers(1, 300))
def test_every_parsed_frame_can_be_encoded_again(depth: int) -> None:
    body = "[" * depth + "]" * depth
    text = '{"type": "message", "body": ' + body + "}"
    if depth >= MAX_JSON_DEPTH:
        with pytest.raises(FrameError) as info:
            parse_client_frame(text)
        assert info.value.code == "bad_frame"
    else:
        frame = parse_client_frame(text)
        assert isinstance(frame, ClientMessage)
        encode_message(
            id="m", chat_id="c", user="u", body=frame.body, ts=0, client_id=None
        )


def test_client_id_at_the_limit_is_accepted() -> None:
    cid = "a" * MAX_CLIENT_ID_CHARS
    frame = parse_client_frame(encode_client_message("x", cid))
    assert frame == ClientMessage("x", cid)


@SETTINGS
@given(st.text(max_size=200))
def test_parse_never_raises_anything_but_frame_error(text: str) -> None:
    codes: list[str] = []
    try:
        frame = parse_client_frame(text)
    except FrameError as err:
        codes.append(err.code)
    else:
        assert isinstance(frame, (ClientMessage, ClientPing, ClientAuth))
    assert set(codes) <= {"bad_json", "bad_frame", "unknown_type"}


@SETTINGS
@given(
    json_values,
    st.dictionaries(
        st.sampled_from(["id", "ts", "user", "chat_id", "sender", "extra"]),
        json_values,
        min_size=1,
    ),
)
def test_server_owned_fields_are_ignored(body: Any, owned: dict[str, Any]) -> None:
    payload = {**owned, "type": "message", "body": body, "client_id": "c1"}
    frame = parse_client_frame(json.dumps(payload))
    assert frame == ClientMessage(body=body, client_id="c1")
    # Only body and client_id are carried; nothing else can reach the broadcast.
    assert isinstance(frame, ClientMessage)
    assert set(frame.__slots__) == {"body", "client_id"}


def test_message_body_may_be_any_json_including_null() -> None:
    bodies: list[Any] = [None, 0, "", [], {}, {"nested": [1, {"a": None}]}]
    for body in bodies:
        assert parse_client_frame(
            json.dumps({"type": "message", "body": body})
        ) == ClientMessage(body)
