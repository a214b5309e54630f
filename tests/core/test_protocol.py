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
    MemberListText,
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
    with_history_fields,
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
@given(st.lists(st.lists(st.text(max_size=8), max_size=4), min_size=1, max_size=6))
def test_member_list_text_is_the_json_of_each_list(lists: list[list[str]]) -> None:
    # One instance across changing lists (a room's first members come and go): its
    # text is always that of the list it is given now, with or without a last name.
    listed = MemberListText()
    for members in lists:
        assert json.loads(listed.text(members)) == members
        assert json.loads(listed.text(members, "me")) == [*members, "me"]
        assert listed.text(members) == json.dumps(members, separators=(",", ":"))


def test_member_list_text_encodes_an_unchanged_list_once() -> None:
    listed = MemberListText()
    first = listed.text(["alice", "bob"])
    assert listed.text(["alice", "bob"]) is first
    assert listed.text(["alice", "bob"], "carol") == '["alice","bob","carol"]'
    assert listed.text([], "carol") == '["carol"]'
    # The list given is copied: changing it afterwards changes nothing kept.
    members = ["alice"]
    assert listed.text(members) == '["alice"]'
    members.append("bob")
    assert listed.text(members) == '["alice","bob"]'


@SETTINGS
@given(
    st.lists(st.text(max_size=8), max_size=5),
    st.integers(0, 10),
    st.none() | st.text(max_size=12),
    st.none() | st.integers(0, 2**53),
    st.booleans(),
)
def test_ready_with_members_json_and_history_fields(
    members: list[str],
    extra: int,
    epoch: str | None,
    offset: int | None,
    recovered: bool,
) -> None:
    kwargs: dict[str, Any] = {
        "connection_id": "n-1",
        "chat_id": "lobby",
        "user": "u",
        "members": members,
        "limits": {"max_message_bytes": 65536},
        "batch": False,
        "count": len(members) + extra,
    }
    plain = encode_ready(**kwargs)
    listed = encode_ready(**kwargs, members_json=MemberListText().text(members))
    assert listed == plain
    frame = json.loads(with_history_fields(plain, epoch, offset, recovered))
    assert frame == {
        **json.loads(plain),
        "epoch": epoch,
        "offset": offset,
        "recovered": recovered,
    }
    assert frame["members_partial"] is (extra > 0)


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
    st.none() | st.integers(0, 2**40),
)
def test_ready_round_trip(
    conn_id: str,
    chat_id: str,
    members: list[str],
    limits: dict[str, int],
    batch: bool,
    exp: int | None,
) -> None:
    raw = encode_ready(
        connection_id=conn_id,
        chat_id=chat_id,
        user="u",
        members=members,
        limits=limits,
        batch=batch,
        exp=exp,
    )
    assert json.loads(raw) == {
        "type": "ready",
        "protocol": PROTOCOL_VERSION,
        "connection_id": conn_id,
        "chat_id": chat_id,
        "user": "u",
        "members": members,
        "count": len(members),
        "members_partial": False,
        "limits": limits,
        "batch": batch,
        "exp": exp,
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


# -- numbers that no double can hold (bug 4) -----------------------------------------

TOO_LARGE = (
    "bad_json",
    "a number is too large: JSON numbers must be finite (at most about 1.8e308)",
)


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "message", "body": 1e400}',
        '{"type": "message", "body": -1e400}',
        '{"type": "message", "body": 1E+309}',
        '{"type": "message", "body": 2e308}',
        '{"type": "message", "body": -1.8e308}',
        '{"type": "message", "body": 1' + "0" * 309 + ".0}",
        '{"type": "message", "body": 0.' + "0" * 400 + "1e800}",
        '{"type": "message", "body": [1, 2, {"deep": [1e400]}]}',
        '{"type": "message", "body": {"a": 1, "b": -1e999}, "client_id": "c"}',
        '{"type": "message", "body": "x", "client_id": 1e400}',
        '{"type": "message", "body": "x", "anything": [1e400]}',
        '{"type": 1e400, "body": "x"}',
        '{"type": "ping", "id": 1e400}',
        '{"type": "auth", "token": "t", "x": 1e400}',
        '{"big": 1e400}',
    ],
)
def test_numbers_no_double_can_hold_are_bad_json(text: str) -> None:
    with pytest.raises(FrameError) as info:
        parse_client_frame(text)
    assert (info.value.code, info.value.detail) == TOO_LARGE


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ("1.7976931348623157e308", 1.7976931348623157e308),  # the largest double
        ("-1.7976931348623157e308", -1.7976931348623157e308),
        ("1e-400", 0.0),  # too small underflows to zero: finite
        ("-1e-400", -0.0),
        ("1" + "0" * 308 + ".0", 1e308),
        ("1" + "0" * 400, 10**400),  # an integer: Python holds it, JSON encodes it
        ("2.5", 2.5),
    ],
)
def test_finite_numbers_pass_and_encode_again(literal: str, value: Any) -> None:
    frame = parse_client_frame('{"type": "message", "body": ' + literal + "}")
    assert frame == ClientMessage(value)
    assert isinstance(frame, ClientMessage)
    encode_message(id="m", chat_id="c", user="u", body=frame.body, ts=0, client_id=None)


def test_nan_and_infinity_words_name_themselves() -> None:
    for word in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(FrameError) as info:
            parse_client_frame('{"type": "message", "body": ' + word + "}")
        assert (info.value.code, info.value.detail) == (
            "bad_json",
            f"{word} is not valid JSON",
        )


# -- the nesting cap, at its boundary in every position ------------------------------


def nest(depth: int, kind: str = "list") -> str:
    """JSON text of arrays or objects nested ``depth`` deep around a 0."""
    if kind == "list":
        return "[" * depth + "0" + "]" * depth
    if kind == "object":
        return '{"k":' * depth + "0" + "}" * depth
    # Alternating: an object holding an array holding an object ...
    text = "0"
    for level in range(depth):
        text = f'{{"k":{text}}}' if level % 2 else f"[{text}]"
    return text


def depth_of(value: Any) -> int:
    """Nesting depth the slow, obvious way: an array or object is one level."""
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    return 0


#: Frames with ``{}`` where a value nested (depth - levels around it) deep goes, and
#: how many levels of the frame are around it (the frame object itself is level 1).
POSITIONS = [
    ('{{"type":"message","body":{}}}', 1),
    ('{{"type":"message","body":{},"client_id":"c"}}', 1),
    ('{{"type":"message","client_id":"c","body":{}}}', 1),
    ('{{"body":{},"type":"message","client_id":"c","x":[1,[2]]}}', 1),
    ('{{"type":"message","body":{{"a":1,"b":{},"c":[3]}}}}', 2),
    ('{{"type":"message","body":[1,{},2,"x",{{}},[]]}}', 2),
    ('{{"type":"message","body":[[0,[0]],{},[[1]]],"client_id":"c"}}', 2),
    ('{{"type":"message","body":"x","extra":{}}}', 1),
    ('{{"type":"ping","id":1,"extra":{}}}', 1),
    ('{{"type":"auth","token":"t","extra":[0,{}]}}', 2),
    ('{{"type":"message","body":{{"a":[{},{{}}]}},"client_id":"c"}}', 3),
]


@pytest.mark.parametrize(("frame", "around"), POSITIONS)
@pytest.mark.parametrize("kind", ["list", "object", "mixed"])
def test_nesting_of_exactly_64_passes_and_65_is_refused(
    frame: str, around: int, kind: str
) -> None:
    assert MAX_JSON_DEPTH == 64
    deepest = frame.format(nest(64 - around, kind))
    assert depth_of(json.loads(deepest)) == 64
    assert depth_of(json.loads(frame.format(nest(65 - around, kind)))) == 65
    assert isinstance(
        parse_client_frame(deepest), (ClientMessage, ClientPing, ClientAuth)
    )
    with pytest.raises(FrameError) as info:
        parse_client_frame(frame.format(nest(65 - around, kind)))
    assert (info.value.code, info.value.detail) == (
        "bad_frame",
        "frame nests arrays or objects over 64 deep",
    )


def test_nesting_is_counted_in_the_structure_not_in_the_text() -> None:
    # Brackets inside strings do not nest; many of them next to a 64-deep body
    # still pass, and make no difference to a 65-deep one.
    noise = json.dumps("[{" * 300)
    ok = '{"type":"message","body":' + nest(63) + ',"note":' + noise + "}"
    assert isinstance(parse_client_frame(ok), ClientMessage)
    bad = '{"type":"message","body":' + nest(64) + ',"note":' + noise + "}"
    with pytest.raises(FrameError, match="over 64 deep"):
        parse_client_frame(bad)
    # Many shallow containers are not deep.
    wide = json.dumps({"type": "message", "body": [[[]]] * 1000 + [{"a": {}}] * 1000})
    assert isinstance(parse_client_frame(wide), ClientMessage)


def test_a_deep_value_after_shallow_ones_is_found() -> None:
    # Every position is walked, not only the first or last value of a container.
    for before, after in [(50, 0), (0, 50), (10, 10)]:
        items = ["0"] * before + [nest(63)] + ["0"] * after
        text = '{"type":"message","body":[' + ",".join(items) + '],"client_id":"c"}'
        with pytest.raises(FrameError, match="over 64 deep"):
            parse_client_frame(text)


def test_deeply_nested_text_past_the_json_recursion_limit_is_bad_frame() -> None:
    with pytest.raises(FrameError) as info:
        parse_client_frame('{"type":"message","body":' + nest(100_000) + "}")
    assert (info.value.code, info.value.detail) == (
        "bad_frame",
        "frame nests arrays or objects over 64 deep",
    )


# -- wire limits and wording, pinned with literals ----------------------------------


def test_wire_constants() -> None:
    assert MAX_CLIENT_ID_CHARS == 128
    assert MAX_JSON_DEPTH == 64
    assert PROTOCOL_VERSION == 1


def test_client_id_of_128_characters_passes_and_129_is_refused() -> None:
    frame = parse_client_frame(encode_client_message("x", "é" * 128))
    assert frame == ClientMessage("x", "é" * 128)
    with pytest.raises(FrameError) as info:
        parse_client_frame(encode_client_message("x", "a" * 129))
    assert (info.value.code, info.value.detail) == (
        "bad_frame",
        '"client_id" must be a string of at most 128 chars',
    )


@pytest.mark.parametrize(
    ("text", "code", "detail"),
    [
        ("nope", "bad_json", "frame is not valid JSON"),
        ("[]", "bad_frame", 'frame must be a JSON object with a "type"'),
        ("{}", "bad_frame", 'frame needs a string "type"'),
        ('{"type": 1}', "bad_frame", 'frame needs a string "type"'),
        ('{"type": "message"}', "bad_frame", 'a "message" frame needs a "body"'),
        (
            '{"type": "message", "body": 1, "client_id": 1}',
            "bad_frame",
            '"client_id" must be a string of at most 128 chars',
        ),
        (
            '{"type": "ping", "id": 1.5}',
            "bad_frame",
            'a ping "id" must be a string or integer',
        ),
        ('{"type": "auth"}', "bad_frame", 'an "auth" frame needs a string "token"'),
        (
            '{"type": "shout"}',
            "unknown_type",
            "unknown frame type; expected message, ping, auth, history or members, "
            "got 'shout'",
        ),
        (
            json.dumps({"type": "t" * 32}),
            "unknown_type",
            "unknown frame type; expected message, ping, auth, history or members, "
            f"got '{'t' * 32}'",
        ),
        (
            # A token sent as the type is not sent back.
            json.dumps({"type": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"}),
            "unknown_type",
            "unknown frame type; expected message, ping, auth, history or members, "
            "got a 41-character string",
        ),
    ],
)
def test_error_details_are_exact(text: str, code: str, detail: str) -> None:
    with pytest.raises(FrameError) as info:
        parse_client_frame(text)
    assert (info.value.code, info.value.detail) == (code, detail)
    assert str(info.value) == f"{code}: {detail}"


def test_ping_ids() -> None:
    assert parse_client_frame('{"type": "ping"}') == ClientPing(None)
    assert parse_client_frame('{"type": "ping", "id": "a"}') == ClientPing("a")
    assert parse_client_frame('{"type": "ping", "id": -7}') == ClientPing(-7)
    assert parse_client_frame('{"type": "ping", "id": null}') == ClientPing(None)
    assert encode_pong() == '{"type":"pong"}'
    assert encode_pong(0) == '{"type":"pong","id":0}'


def test_auth_frame_token_is_taken_as_is() -> None:
    frame = parse_client_frame('{"type": "auth", "token": "a.b.c", "x": 1}')
    assert frame == ClientAuth("a.b.c")
    assert "a.b.c" not in repr(frame)


def test_the_shortest_frame_nested_65_deep_is_refused() -> None:
    # 130 characters of brackets, and the 5 of the frame object around them.
    text = '{"":' + "[" * 64 + "]" * 64 + "}"
    assert len(text) == 133
    assert depth_of(json.loads(text)) == 65
    with pytest.raises(FrameError, match="over 64 deep"):
        parse_client_frame(text)
    assert depth_of(json.loads('{"":' + "[" * 63 + "]" * 63 + "}")) == 64
