"""The wire's JSON Schema and AsyncAPI document: valid, served, and what wschat sends.

- The schema is a valid draft 2020-12 schema; every frame wschat's encoders make
  validates, and frames the server would refuse do not.
- ``/ws/schema.json`` and ``/ws/asyncapi.json`` answer on the three adapters.
- The e2e fixture (tests/frame_schema.py) catches a server frame the schema refuses.
- docs/protocol.md's tables and examples agree with the schema.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import wschat
from tests.support.client import HandshakeCounter
from tests.support.common import IN_CI, serve
from tests.support.e2e import Flavor, chat_server, client, next_frame, token
from tests.support.frame_schema import (
    FrameCheck,
    SchemaViolation,
    schema_errors,
    validating,
)
from wschat import ConnectionManager, protocol
from wschat.schema import asyncapi_document, protocol_schema, schema_bytes

pytestmark = pytest.mark.skipif(
    not validating(), reason="needs jsonschema (scripts/bootstrap dev)"
)

DOCS = Path(__file__).resolve().parents[2] / "docs"
SCHEMA = protocol_schema()
DEFS: dict[str, Any] = SCHEMA["$defs"]
PLANNED = "x-wschat-planned"


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA["x-wschat-protocol"] == protocol.PROTOCOL_VERSION == 1
    assert SCHEMA["x-wschat-subprotocols"]["version"] == protocol.SUBPROTOCOL
    assert SCHEMA["x-wschat-subprotocols"]["batch"] == protocol.SUBPROTOCOL_BATCH


ENCODED = {
    "ready": protocol.encode_ready(
        connection_id="c1-1",
        chat_id="lobby",
        user="alice",
        members=["alice"],
        limits={"max_message_bytes": 65536, "outbox_max_messages": 1024},
        batch=False,
    ),
    "message": protocol.encode_message(
        id="m1", chat_id="lobby", user="alice", body={"a": [1]}, ts=1, client_id=None
    ),
    "presence": protocol.encode_presence(
        chat_id="lobby", event="join", user="bob", count=2
    ),
    "error": protocol.encode_error("bad_json", "frame is not valid JSON"),
    "pong": protocol.encode_pong(7),
    "auth": protocol.encode_auth_ok(None),
    "resync": protocol.encode_resync("lobby", "12 messages were dropped"),
}


@pytest.mark.parametrize("kind", sorted(ENCODED))
def test_every_frame_wschat_encodes_validates(kind: str) -> None:
    frame = json.loads(ENCODED[kind])
    assert schema_errors(frame) == []
    if kind != "ready":
        batch = json.loads(protocol.encode_batch([ENCODED[kind], ENCODED[kind]]))
        assert schema_errors(batch) == []


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ({"type": "message", "id": "m", "chat_id": "lobby", "user": "a", "body": 1,
          "ts": 1}, "'client_id' is a required property"),
        ({"type": "ready"}, "'protocol' is a required property"),
        ({"type": "presence", "chat_id": "lobby", "event": "join", "count": 1},
         "is not valid under any of the given schemas"),
        ({"type": "presence", "chat_id": "lobby", "event": "enter", "user": "b",
          "count": 1}, "'enter' is not one of ['join', 'leave']"),
        ({"type": "error", "code": "bad_json"}, "'message' is a required property"),
        ({"type": "batch", "frames": [json.loads(ENCODED["ready"])]},
         "should not be valid"),
        ({"type": "auth", "ok": False, "exp": None}, "True was expected"),
        ({"kind": "message"}, "'type' is a required property"),
        ([], "is not of type 'object'"),
    ],
)  # fmt: skip
def test_frames_the_protocol_forbids_do_not_validate(frame: Any, error: str) -> None:
    assert any(error in problem for problem in schema_errors(frame)), schema_errors(
        frame
    )


def test_an_application_frame_of_its_own_type_validates() -> None:
    assert schema_errors({"type": "typing", "user": "alice"}) == []


@pytest.mark.parametrize(
    ("frame", "valid"),
    [
        ({"type": "message", "body": {"text": "hi"}, "client_id": "tmp-42"}, True),
        ({"type": "message", "body": None}, True),
        ({"type": "message"}, False),
        ({"type": "message", "body": 1, "client_id": "x" * 129}, False),
        ({"type": "ping"}, True),
        ({"type": "ping", "id": 7}, True),
        ({"type": "ping", "id": True}, False),
        ({"type": "auth", "token": "a.b.c"}, True),
        ({"type": "auth"}, False),
    ],
)
def test_client_frames_validate_as_the_server_parses_them(
    frame: dict[str, Any], valid: bool
) -> None:
    assert (schema_errors(frame, "ClientFrame") == []) is valid
    try:
        protocol.parse_client_frame(json.dumps(frame))
    except protocol.FrameError:
        parsed = False
    else:
        parsed = True
    assert parsed is valid


# -- served on every adapter -----------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.anyio
async def test_the_schema_and_asyncapi_are_served(flavor: Flavor) -> None:
    with chat_server(flavor) as chat:
        async with httpx.AsyncClient(base_url=chat.server.http, timeout=5) as http:
            schema = await http.get("/ws/schema.json")
            asyncapi = await http.get("/ws/asyncapi.json")
            posted = await http.post("/ws/schema.json")
    assert schema.status_code == 200
    assert schema.headers["content-type"].startswith("application/json")
    assert schema.content == schema_bytes()
    assert asyncapi.status_code == 200
    expected = json.loads(json.dumps(asyncapi_document(wschat.__version__)))
    assert asyncapi.json() == expected
    assert posted.status_code == 405


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_the_asyncapi_document_describes_the_chat_channel() -> None:
    doc = asyncapi_document("9.9.9", "/api/chat/{chat_id}")
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["version"] == "9.9.9"
    channel = doc["channels"]["chat"]
    assert channel["address"] == "/api/chat/{chat_id}"
    assert set(channel["parameters"]) == {"chat_id"}
    ops = doc["operations"]
    assert ops["receiveClientFrames"]["action"] == "receive"
    assert ops["sendServerFrames"]["action"] == "send"
    sent = {r["$ref"].rsplit("/", 1)[1] for r in ops["sendServerFrames"]["messages"]}
    assert sent == set(SCHEMA["x-wschat-server-frames"].values())
    # Every reference resolves inside the document.
    refs = list(_refs(doc))
    assert refs
    for ref in refs:
        node: Any = doc
        assert ref.startswith("#/"), ref
        for part in ref[2:].split("/"):
            node = node[part]


#: The AsyncAPI 3.0.0 specification's JSON Schema, from the npm package
#: ``@asyncapi/specs`` (a dev dependency of clients/js: ``npm ci --prefix clients/js``).
ASYNCAPI_SPEC = (
    Path(__file__).resolve().parents[2]
    / "clients/js/node_modules/@asyncapi/specs/schemas/3.0.0-without-$id.json"
)


def test_the_asyncapi_document_is_valid_asyncapi_3() -> None:
    if not ASYNCAPI_SPEC.is_file():
        if IN_CI:
            pytest.fail(f"{ASYNCAPI_SPEC} is missing: npm ci --prefix clients/js")
        pytest.skip("the AsyncAPI spec comes with clients/js's npm dev dependencies")
    jsonschema = pytest.importorskip("jsonschema")
    spec = json.loads(ASYNCAPI_SPEC.read_text())
    validator = jsonschema.validators.validator_for(spec)(spec)
    doc = json.loads(json.dumps(asyncapi_document(wschat.__version__)))
    problems = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}"
        for e in validator.iter_errors(doc)
    ]
    assert problems == []
    # The check can fail: a channel whose address is not a string is refused.
    broken = {**doc, "channels": {"chat": {**doc["channels"]["chat"], "address": 5}}}
    assert not validator.is_valid(broken)


# -- the fixture catches a bad frame ---------------------------------------------------


async def _bad_server(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": '{"type":"message","id":"m"}'})
        await receive()


@pytest.mark.anyio
async def test_the_fixture_fails_a_frame_the_schema_refuses(
    validate_server_frames: FrameCheck,
) -> None:
    with serve(_bad_server) as server:
        async with client(f"{server.ws}/ws/chat/lobby") as ws:
            with pytest.raises(SchemaViolation, match="'chat_id' is a required"):
                await ws.recv()
    assert len(validate_server_frames.violations) == 1
    validate_server_frames.violations.clear()


@pytest.mark.anyio
async def test_the_handshake_counter_checks_what_the_app_sends(
    validate_server_frames: FrameCheck,
) -> None:
    """What a browser reads cannot be wrapped: the server side checks it."""
    counter = HandshakeCounter(_bad_server)
    incoming = iter([{"type": "websocket.connect"}, {"type": "websocket.disconnect"}])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(incoming)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/ws/chat/lobby", "query_string": b""}
    await counter(scope, receive, send)
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send"]
    (violation,) = validate_server_frames.violations
    assert "'chat_id' is a required property" in violation
    validate_server_frames.violations.clear()


@pytest.mark.e2e
@pytest.mark.anyio
async def test_the_fixture_checks_every_frame_of_a_chat(
    flavor: Flavor, validate_server_frames: FrameCheck
) -> None:
    with chat_server(flavor, ConnectionManager()) as chat:
        async with client(chat.url("lobby", token("alice"))) as ws:
            await next_frame(ws, "ready")
            await ws.send(json.dumps({"type": "ping", "id": 1}))
            await next_frame(ws, "pong")
            with contextlib.suppress(TimeoutError), anyio.move_on_after(0.2):
                await ws.recv()
    assert validate_server_frames.checked >= 2
    assert validate_server_frames.violations == []


# -- docs/protocol.md ------------------------------------------------------------------


def _sections() -> dict[tuple[str, str], str]:
    """(``client``/``server``, frame type) -> the text of its ``###`` section."""
    text = (DOCS / "protocol.md").read_text()
    found: dict[tuple[str, str], str] = {}
    for side, part in (
        ("client", r"## Client to server\n(.*?)\n## Server to client"),
        ("server", r"## Server to client\n(.*?)\n## Server-owned fields"),
    ):
        match = re.search(part, text, re.S)
        assert match, part
        for kind, body in re.findall(
            r"^### `(\w+)`\n(.*?)(?=^### |\Z)", match.group(1), re.S | re.M
        ):
            found[side, kind] = body
    return found


def _field_rows(body: str) -> list[list[str]]:
    rows = []
    lines = body.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("| field |"):
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append([c.strip() for c in row.strip("|").split("|")])
    return rows


def _frame_def(side: str, kind: str) -> dict[str, Any]:
    table = SCHEMA["x-wschat-client-frames" if side == "client" else
                   "x-wschat-server-frames"]  # fmt: skip
    found: dict[str, Any] = DEFS[table[kind]]
    return found


def _properties(definition: dict[str, Any]) -> dict[str, Any]:
    props = dict(definition["properties"])
    props.pop("type")
    return props


def _type_words(prop: dict[str, Any]) -> set[str]:
    kinds = prop.get("type")
    if kinds is None:
        return set()
    words = {"array": "list", "null": "null"}
    return {words.get(k, k) for k in ([kinds] if isinstance(kinds, str) else kinds)}


def test_protocol_md_documents_every_frame_of_the_schema() -> None:
    sections = _sections()
    for side, key in (("client", "x-wschat-client-frames"),
                      ("server", "x-wschat-server-frames")):  # fmt: skip
        for kind, name in SCHEMA[key].items():
            if PLANNED in DEFS[name]:
                continue
            assert (side, kind) in sections, f"docs/protocol.md lacks {side} {kind}"
    for side, kind in sections:
        _frame_def(side, kind)  # a KeyError names a documented frame not in the schema


@pytest.mark.parametrize("key", sorted(_sections()), ids="-".join)
def test_protocol_md_tables_match_the_schema(key: tuple[str, str]) -> None:
    side, kind = key
    rows = _field_rows(_sections()[key])
    definition = _frame_def(side, kind)
    props = _properties(definition)
    assert rows or not props, f"docs/protocol.md: {side} {kind} has no field table"
    documented: dict[str, list[str]] = {}
    for row in rows:
        name = row[0].strip("`")
        if name == "type":
            continue
        top, _, sub = name.partition(".")
        assert top in props, f"{side} {kind}: {name} is not in the schema"
        if sub:
            assert sub in props[top]["properties"], f"{name} is not in the schema"
        else:
            documented[top] = row
    nested = {r[0].strip("`").partition(".")[0] for r in rows if "." in r[0]}
    expected = {n for n, p in props.items() if PLANNED not in p}
    assert set(documented) | nested == expected, (side, kind)
    for name, row in documented.items():
        words = _type_words(props[name])
        assert all(w in row[1] for w in words), (name, row[1], words)
        if side == "client":
            required = name in definition["required"]
            assert row[2] == ("yes" if required else "no"), (name, row)


def test_planned_fields_are_not_documented_yet() -> None:
    """A field the schema marks as planned becomes documented with its issue's
    work: then drop its ``x-wschat-planned`` marker (the schema promises it)."""
    for (side, kind), body in _sections().items():
        rows = {r[0].strip("`").partition(".")[0] for r in _field_rows(body)}
        for prop, value in _properties(_frame_def(side, kind)).items():
            assert not (PLANNED in value and prop in rows), (
                f"{side} {kind}.{prop} is documented: remove {PLANNED} from the schema"
            )


def test_protocol_md_examples_validate() -> None:
    sections = _sections()
    checked = 0
    for (side, kind), body in sections.items():
        for block in re.findall(r"```json\n(.*?)```", body, re.S):
            frame = json.loads(block)
            definition = "ClientFrame" if side == "client" else "ServerFrame"
            if side == "client" and kind == "auth" and "ok" in frame:
                definition = "ServerFrame"
            assert schema_errors(frame, definition) == [], (side, kind, block)
            assert frame["type"] == kind
            checked += 1
    assert checked >= 10


def test_protocol_md_links_the_schema() -> None:
    text = (DOCS / "protocol.md").read_text()
    assert "../src/wschat/schema/protocol.schema.json" in text
    assert "/ws/schema.json" in text
    assert "/ws/asyncapi.json" in text
