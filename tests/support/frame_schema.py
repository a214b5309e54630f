"""Every frame a wschat server sends in a test is checked against the wire's schema.

``validate_server_frames`` (autouse, from ``tests/conftest.py``) checks, for the whole
test, each text frame a client receives on a chat socket (a path with ``/chat/``)
against ``#/$defs/ServerFrame`` of ``wschat/schema/protocol.schema.json``, whichever
client received it:

- the ``websockets`` client connections, asyncio and sync (their ``recv`` is wrapped);
- the in-process :class:`wschat.testclient.ChatTestClient` (and so ``wschat.testing``):
  the module's ``parse_server_frame`` is wrapped, which reads every text frame the app
  sends (a frame it refuses itself stays its ``ProtocolViolation``);
- Starlette's ``TestClient`` WebSocket sessions (``WebSocketTestSession.receive``,
  when a test module loaded ``starlette.testclient``);
- the raw-socket clients of ``tests/support`` (``RawWebSocket`` in e2e.py,
  ``RawClient`` in server_process.py), which call :func:`check_received` for each
  text frame they read.

A frame that does not validate fails the test with the schema's error: the receiving
call raises :class:`SchemaViolation`, and the fixture fails the test at teardown too
(in case a helper or the app swallowed the exception).

Without ``jsonschema`` installed (``scripts/bootstrap dev`` installs it) nothing is
validated, the report header says so, and a CI run (``CI=true``) refuses to start.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.connection import Connection as AsyncConnection
from websockets.protocol import Side
from websockets.sync.connection import Connection as SyncConnection

import wschat.testclient
from wschat.frames import parse_server_frame
from wschat.schema import protocol_schema

try:
    import jsonschema
except ImportError:  # pragma: no cover - depends on the environment
    jsonschema = None

__all__ = [
    "FrameCheck",
    "SchemaViolation",
    "check_received",
    "check_server_frame",
    "schema_errors",
    "validate_server_frames",
    "validating",
]


class SchemaViolation(AssertionError):
    """The server sent a frame that the wire's JSON Schema does not allow."""


def validating() -> bool:
    """Whether frames are validated (``jsonschema`` is installed)."""
    return jsonschema is not None


@functools.cache
def _validator(definition: str) -> Any:
    assert jsonschema is not None
    schema = protocol_schema()
    root = {
        "$schema": schema["$schema"],
        "$defs": schema["$defs"],
        "$ref": f"#/$defs/{definition}",
    }
    return jsonschema.Draft202012Validator(root)


def schema_errors(frame: Any, definition: str = "ServerFrame") -> list[str]:
    """What is wrong with ``frame`` under ``#/$defs/<definition>``; [] if valid."""
    validator = _validator(definition)
    if validator.is_valid(frame):  # the fast path: 3 to 4 times faster than errors
        return []
    errors = sorted(validator.iter_errors(frame), key=lambda e: list(e.path))
    return [
        f"at {'/'.join(map(str, e.absolute_path)) or '(frame)'}: {e.message}"
        for e in errors
    ]


#: Frames found valid, so that a broadcast read by many test clients is checked once
#: (a room of 16 readers would otherwise validate every message 16 times).
_VALID: set[str] = set()
_VALID_MAX = 20_000


def check_server_frame(text: str) -> None:
    """Validate one text frame from the server.

    Raises:
        SchemaViolation: Not JSON, or not a frame the schema allows.
    """
    if text in _VALID:
        return
    try:
        frame = json.loads(text)
    except ValueError:
        raise SchemaViolation(
            f"server sent a frame that is not JSON: {text[:300]!r}"
        ) from None
    problems = schema_errors(frame)
    if problems:
        raise SchemaViolation(
            "server frame does not match protocol.schema.json#/$defs/ServerFrame: "
            + "; ".join(problems[:5])
            + f"\nframe: {text[:500]}"
        )
    if len(_VALID) >= _VALID_MAX:
        _VALID.clear()
    _VALID.add(text)


def _on_chat_socket(conn: Any) -> bool:
    request = getattr(conn, "request", None)
    return (
        conn.protocol.side is Side.CLIENT
        and request is not None
        and "/chat/" in request.path
    )


class FrameCheck:
    """What the fixture checked in one test.

    Attributes:
        checked: Text frames validated.
        violations: The error of each frame that did not validate.
    """

    def __init__(self) -> None:
        self.checked = 0
        self.violations: list[str] = []


#: The running test's check, if the fixture is active (tests run one at a time).
_current: FrameCheck | None = None
_lock = threading.Lock()


def check_received(text: str, *, path: str = "/chat/") -> None:
    """Validate a text frame a test client read from ``path``, under the fixture.

    For the clients the fixture cannot wrap (raw sockets): a no-op without the
    fixture, without ``jsonschema``, or off a chat socket.

    Raises:
        SchemaViolation: The frame does not validate (recorded for the fixture too).
    """
    seen = _current
    if seen is None or jsonschema is None or "/chat/" not in path:
        return
    try:
        check_server_frame(text)
    except SchemaViolation as exc:
        with _lock:
            seen.violations.append(str(exc))
        raise
    finally:
        with _lock:
            seen.checked += 1


@pytest.fixture(autouse=True)
def validate_server_frames(monkeypatch: pytest.MonkeyPatch) -> Iterator[FrameCheck]:
    """Validate every frame a test client receives on a chat socket."""
    global _current
    seen = FrameCheck()
    if jsonschema is None:
        yield seen
        return

    def check(conn: Any, data: Any) -> None:
        if isinstance(data, str) and _on_chat_socket(conn):
            check_received(data)

    async_recv = AsyncConnection.recv
    sync_recv = SyncConnection.recv
    parse = parse_server_frame  # what wschat.testclient calls

    async def recv_async(self: AsyncConnection, *args: Any, **kwargs: Any) -> Any:
        data = await async_recv(self, *args, **kwargs)
        check(self, data)
        return data

    def recv_sync(self: SyncConnection, *args: Any, **kwargs: Any) -> Any:
        data = sync_recv(self, *args, **kwargs)
        check(self, data)
        return data

    def parse_checked(text: str) -> Any:
        # What the test client refuses itself (not JSON, no type) it reports as a
        # ProtocolViolation: a test of that must see it, not a SchemaViolation.
        frames = parse(text)
        check_received(text)
        return frames

    monkeypatch.setattr(AsyncConnection, "recv", recv_async)
    monkeypatch.setattr(SyncConnection, "recv", recv_sync)
    monkeypatch.setattr(wschat.testclient, "parse_server_frame", parse_checked)
    starlette_testclient = sys.modules.get("starlette.testclient")
    if starlette_testclient is not None:  # loaded by the tests that use it
        session_cls = starlette_testclient.WebSocketTestSession
        session_receive = session_cls.receive

        def receive_checked(self: Any) -> Any:
            message = session_receive(self)
            text = message.get("text") if message["type"] == "websocket.send" else None
            if isinstance(text, str):
                check_received(text, path=str(self.scope.get("path", "")))
            return message

        monkeypatch.setattr(session_cls, "receive", receive_checked)
    _current = seen
    try:
        yield seen
    finally:
        _current = None
    if seen.violations:
        pytest.fail("\n".join(seen.violations), pytrace=False)


def pytest_report_header() -> str:
    """Say whether server frames are validated."""
    if jsonschema is None:
        return (
            "wschat frame schema validation: OFF (jsonschema is not installed; "
            "run scripts/bootstrap dev)"
        )
    return "wschat frame schema validation: on (protocol.schema.json)"


def require_in_ci() -> None:
    """A CI run validates frames: refuse to start without ``jsonschema``."""
    if jsonschema is None and os.environ.get("CI", "").lower() in ("1", "true"):
        raise pytest.UsageError(
            "jsonschema is not installed: CI validates every server frame against "
            "the wire's schema (pip install -e '.[dev]')"
        )
