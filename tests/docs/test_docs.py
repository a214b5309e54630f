"""The documentation is tested: its examples are real files, and they work.

- Every fenced python block that starts with a ``# docs/examples/<name>.py`` marker
  equals that file, and every example is shown somewhere.
- Each example app runs on a real uvicorn and carries a chat between real clients.
- The close-code table, the "why is my token refused" table, the refusal log line and
  the JavaScript client's reconnect rules match what the code does.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import jwt
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin, Subprotocol

from tests.support.common import SECRET, serve
from wschat import TokenVerifier, errors
from wschat.protocol import (
    encode_batch,
    encode_resync,
    encode_token_expiring,
    parse_client_frame,
)
from wschat.schema import close_policy
from wschat.testing import mint_token

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLES = ["fastapi_app", "starlette_app", "asgi_app", "hooks_app"]
#: Test files shown in testing.md; tests/docs/test_docs_testing.py runs them.
TEST_EXAMPLES = [
    "test_fastapi_testclient",
    "test_starlette_testclient",
    "test_chat_kit",
    "test_token_expiry",
]
#: Shown in history.md; tests/docs/test_history_postgres.py runs it.
STORE_EXAMPLES = ["history_postgres"]
#: Adapters shown in adapters.md; tests/docs/test_adapter_example.py runs them.
ADAPTER_EXAMPLES = ["websockets_adapter"]
DEV_SECRET = "dev-only-secret-never-use-in-production-000"
V1 = Subprotocol("wschat.v1")
MARKED_BLOCK = re.compile(r"```python\n(# (docs/examples/\S+)\n.*?)```", re.DOTALL)

pytestmark = pytest.mark.e2e


def pages() -> list[Path]:
    return [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]


def section(page: str, heading: str) -> str:
    """The text of ``page`` from ``heading`` to the next heading of any level."""
    text = (DOCS / page).read_text()
    start = text.index(heading + "\n")
    end = text.find("\n#", start + len(heading))
    return text[start : end if end != -1 else None]


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"docs_example_{name}", DOCS / "examples" / f"{name}.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def receive(ws: ClientConnection, kind: str) -> dict[str, Any]:
    """The next frame of type ``kind``, skipping others (presence, ...)."""
    while True:
        frame: dict[str, Any] = json.loads(ws.recv(timeout=5))
        if frame["type"] == kind:
            return frame


def read_until_closed(ws: ClientConnection) -> None:
    while True:
        ws.recv(timeout=5)


def close_of(url: str, **kwargs: Any) -> tuple[int, str]:
    """Connect, expect the server to close, and return the close code and reason."""
    with (
        connect(url, open_timeout=5, **kwargs) as ws,
        pytest.raises(ConnectionClosed) as closed,
    ):
        read_until_closed(ws)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


# -- the pages show the example files verbatim ----------------------------------------


def test_pages_show_the_example_files_verbatim() -> None:
    shown: set[str] = set()
    for page in pages():
        for match in MARKED_BLOCK.finditer(page.read_text()):
            block, path = match.groups()
            assert block == (ROOT / path).read_text(), f"{page.name}: {path} differs"
            shown.add(path)
    examples = [*EXAMPLES, *TEST_EXAMPLES, *STORE_EXAMPLES, *ADAPTER_EXAMPLES]
    assert shown == {f"docs/examples/{n}.py" for n in examples}


# -- every example serves a chat ------------------------------------------------------


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_serves_a_chat(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSCHAT_SECRET", SECRET)
    example = load_example(name)
    assert example.SECRET == SECRET  # the env var wins over the development fallback
    alice = mint_token(example.SECRET, "alice")
    bob = mint_token(example.SECRET, "bob")
    with serve(example.app) as server:
        chat = f"{server.ws}/ws/chat/lobby"
        with (
            connect(f"{chat}?token={alice}", subprotocols=[V1]) as ws_a,
            connect(chat, subprotocols=[V1, Subprotocol(f"bearer.{bob}")]) as ws_b,
        ):
            assert ws_a.subprotocol == ws_b.subprotocol == "wschat.v1"
            ready = receive(ws_a, "ready")
            assert (ready["user"], ready["chat_id"], ready["protocol"]) == (
                "alice",
                "lobby",
                1,
            )
            assert receive(ws_b, "ready")["user"] == "bob"
            message = {"type": "message", "body": {"text": "hello"}, "client_id": "c1"}
            ws_a.send(json.dumps(message))
            for ws in (ws_a, ws_b):
                got = receive(ws, "message")
                assert (got["user"], got["body"], got["client_id"]) == (
                    "alice",
                    {"text": "hello"},
                    "c1",
                )
            with urllib.request.urlopen(f"{server.http}/ws/status", timeout=5) as r:
                status = json.load(r)
            assert status["status"] == "ok"
            assert status["connections"] == 2
        code, reason = close_of(f"{chat}?token=test")
        assert code == 4401
        assert reason.startswith("token_malformed: not a JWT")


def test_hooks_example_vetoes_transforms_and_authorizes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WSCHAT_SECRET", SECRET)
    example = load_example("hooks_app")
    alice = mint_token(SECRET, "alice", claims={"rooms": ["team-1"]})
    bob = mint_token(SECRET, "bob")
    with serve(example.app) as server:
        base = f"{server.ws}/ws/chat"
        with connect(f"{base}/lobby?token={alice}") as ws:
            receive(ws, "ready")
            ws.send(json.dumps({"type": "message", "body": "not an object"}))
            error = receive(ws, "error")
            assert error["code"] == "vetoed"
            ws.send(json.dumps({"type": "message", "body": {"text": "  hi  "}}))
            assert receive(ws, "message")["body"] == {"text": "hi"}
        with connect(f"{base}/team-1?token={alice}") as ws:
            assert receive(ws, "ready")["chat_id"] == "team-1"
        code, reason = close_of(f"{base}/team-1?token={bob}")
        assert (code, reason.split(":")[0]) == (4403, "forbidden")
        url = f"{base}/lobby?token={bob}"
        with connect(url, origin=Origin("https://app.example.com")) as ws:
            receive(ws, "ready")
        with pytest.raises(InvalidStatus) as refused:
            connect(url, origin=Origin("https://evil.example"))
        assert refused.value.response.status_code == 403


@pytest.mark.parametrize("exported", [True, False], ids=["exported", "fallback"])
def test_quickstart_try_it_snippets_run(
    exported: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each block runs as is, alone, with the secret the page tells users to export."""
    env = {k: v for k, v in os.environ.items() if k != "WSCHAT_SECRET"}
    if exported:
        env["WSCHAT_SECRET"] = secrets.token_urlsafe(64)
        monkeypatch.setenv("WSCHAT_SECRET", env["WSCHAT_SECRET"])
    else:
        monkeypatch.delenv("WSCHAT_SECRET", raising=False)
    example = load_example("fastapi_app")
    server_secret = env.get("WSCHAT_SECRET", DEV_SECRET)
    assert server_secret == example.SECRET
    blocks = re.findall(
        r"```python\n(.*?)```", section("quickstart.md", "## Try it"), re.S
    )
    assert len(blocks) == 2
    outputs = []
    with serve(example.app) as server:
        for block in blocks:
            run = subprocess.run(
                [sys.executable, "-c", block.replace("ws://127.0.0.1:8000", server.ws)],
                capture_output=True,
                text=True,
                timeout=30,
                env=env,
                check=True,
            )
            outputs.append(run.stdout.splitlines())
    assert [json.loads(line)["type"] for line in outputs[0]] == [
        "ready",
        "presence",
        "message",
    ]
    assert json.loads(outputs[0][2])["body"] == {"text": "hello"}
    assert len(outputs[1]) == 1
    assert outputs[1][0].startswith("4401 token_malformed: not a JWT")


def section_until(page: str, heading: str, level: str) -> str:
    text = (DOCS / page).read_text()
    start = text.index(heading + "\n")
    end = text.find("\n" + level + " ", start + len(heading))
    return text[start : end if end != -1 else None]


def test_protocol_examples_match_real_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    text = section_until("protocol.md", "## Client to server", "##")
    for block in re.findall(r"```json\n(.*?)```", text, re.S):
        parse_client_frame(block)  # every documented client frame is valid
    text = section_until("protocol.md", "## Server to client", "##")
    documented = {
        frame["type"]: set(frame)
        for frame in map(json.loads, re.findall(r"```json\n(.*?)```", text, re.S))
    }
    assert set(documented) == {
        "ready",
        "message",
        "presence",
        "members",
        "error",
        "pong",
        "auth",
        "token_expiring",
        "resync",
        "batch",
        "history",
    }
    monkeypatch.setenv("WSCHAT_SECRET", SECRET)
    example = load_example("asgi_app")
    real: dict[str, set[str]] = {
        "resync": set(json.loads(encode_resync("lobby", "1 messages were dropped"))),
        "batch": set(json.loads(encode_batch(["{}"]))),
        "token_expiring": set(json.loads(encode_token_expiring(1764103600))),
    }
    with serve(example.app) as server:
        url = f"{server.ws}/ws/chat/lobby?token={mint_token(SECRET, 'alice')}"
        with connect(url) as ws:
            real["ready"] = set(receive(ws, "ready"))
            real["presence"] = set(receive(ws, "presence"))
            ws.send('{"type": "message", "body": {"text": "hello"}}')
            real["message"] = set(receive(ws, "message"))
            ws.send("not json")
            real["error"] = set(receive(ws, "error"))
            ws.send('{"type": "ping", "id": 7}')
            real["pong"] = set(receive(ws, "pong"))
            ws.send('{"type": "members", "id": 3}')
            real["members"] = set(receive(ws, "members"))
            ws.send(json.dumps({"type": "auth", "token": mint_token(SECRET, "alice")}))
            real["auth"] = set(receive(ws, "auth"))
            ws.send('{"type": "history", "limit": 5}')
            real["history"] = set(receive(ws, "history"))
    assert documented == real


def test_messages_of_one_sender_arrive_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WSCHAT_SECRET", SECRET)
    example = load_example("asgi_app")
    with serve(example.app) as server:
        chat = f"{server.ws}/ws/chat/lobby?token="
        with (
            connect(chat + mint_token(SECRET, "alice")) as alice,
            connect(chat + mint_token(SECRET, "bob")) as bob,
        ):
            receive(bob, "ready")
            for i in range(100):
                alice.send(json.dumps({"type": "message", "body": i}))
            for ws in (alice, bob):
                got = [receive(ws, "message")["body"] for _ in range(100)]
                assert got == list(range(100))


def test_uvicorn_shutdown_closes_with_1012(monkeypatch: pytest.MonkeyPatch) -> None:
    """options.md: uvicorn closes sockets with 1012 before the app's shutdown runs."""
    monkeypatch.setenv("WSCHAT_SECRET", SECRET)
    example = load_example("asgi_app")
    with contextlib.ExitStack() as stack:
        with serve(example.app) as server:
            url = f"{server.ws}/ws/chat/lobby?token={mint_token(SECRET, 'a')}"
            ws = stack.enter_context(connect(url))
            receive(ws, "ready")
        with pytest.raises(ConnectionClosed) as closed:
            read_until_closed(ws)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1012, "")


# -- the tables match the code --------------------------------------------------------


def wire_errors() -> set[tuple[int, str]]:
    """(close code, reason code) of every error that can reach a client as a close.

    Not: a configuration error, a refusal a server answers with a bare HTTP 403
    (Origin, a path nothing serves), a peer that is gone, an ``error`` frame.
    """
    return {
        (cls.close_code, cls.code)
        for cls in vars(errors).values()
        if isinstance(cls, type)
        and issubclass(cls, errors.WSChatError)
        and not issubclass(cls, errors.ErrorReply)
        and cls
        not in (
            errors.ConfigurationError,
            errors.OriginRefused,
            errors.NotFound,
            errors.TransportClosed,
        )
    }


def test_close_code_table_lists_every_error() -> None:
    rows = re.findall(
        r"^\| (\d{4}) \| `(\w+)` \|", section("close-codes.md", "## Table"), re.M
    )
    assert {(int(code), reason) for code, reason in rows} == wire_errors()


def _token_without_exp() -> str:
    return jwt.encode({"sub": "a"}, SECRET, algorithm="HS256")


REFUSED: list[tuple[str, str]] = [
    ("literal test", "test"),
    ("empty", ""),
    ("bearer prefix", "Bearer " + mint_token(SECRET, "a")),
    ("cut short", mint_token(SECRET, "a")[:-5]),
    ("other key", mint_token("another-secret-" + "y" * 40, "a")),
    ("HS512", mint_token("k" * 64, "a", algorithm="HS512")),
    ("aud", mint_token(SECRET, "a", claims={"aud": "other"})),
    ("no exp", _token_without_exp()),
    ("exp a string", mint_token(SECRET, "a", claims={"exp": "soon"})),
    ("sub a number", mint_token(SECRET, "a", claims={"sub": 42})),
    ("lifetime", mint_token(SECRET, "a", ttl=100_000)),
    ("expired", mint_token(SECRET, "a", ttl=-100)),
    # Minted in the test: a token made at import would be valid by the time a long
    # suite reaches it.
    ("future", "<minted in the test>"),
    ("too large", "a" * 9000),
    ("header not an object", "WzFd." + mint_token(SECRET, "a").split(".", 1)[1]),
    ("no alg", "eyJ0eXAiOiJKV1QifQ." + mint_token(SECRET, "a").split(".", 1)[1]),
    ("exp digits", jwt.encode({"sub": "a", "exp": "99999999999"}, SECRET)),
]


@pytest.mark.parametrize(("case", "token"), REFUSED, ids=[c for c, _ in REFUSED])
def test_refusal_reason_is_in_the_auth_table(case: str, token: str) -> None:
    if case == "future":
        token = mint_token(SECRET, "a", now=time.time() + 120)
    verifier = TokenVerifier(SECRET, algorithms=["HS256"])
    with pytest.raises(errors.AuthenticationError) as refused:
        verifier.verify(token)
    table = section("auth.md", "## Why is my token refused")
    assert f"| `{refused.value.reason}`" in table, case


def test_auth_table_covers_every_reason_and_starts_with_test() -> None:
    table = section("auth.md", "## Why is my token refused")
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    codes = {code for close, code in wire_errors() if close == 4401}
    assert codes <= {row[3:].split(":")[0] for row in rows}
    assert "the literal `test`" in rows[0]


# -- the log lines in logging.md ------------------------------------------------------


def test_refusal_log_line_and_redaction_match_logging_md(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WSCHAT_SECRET", SECRET)
    example = load_example("fastapi_app")
    good = mint_token(SECRET, "alice")
    caplog.set_level(logging.INFO)
    with serve(example.app, log_config=None) as server:
        close_of(f"{server.ws}/ws/chat/lobby?token=test")
        with connect(f"{server.ws}/ws/chat/lobby?token={good}") as ws:
            receive(ws, "ready")
    text = (DOCS / "logging.md").read_text()
    documented = re.search(r"^(wschat refused connection: .*)$", text, re.M)
    assert documented is not None
    refusals = [
        r.getMessage()
        for r in caplog.records
        if r.name == "wschat" and r.levelno == logging.WARNING
    ]
    assert len(refusals) == 1

    def no_port(line: str) -> str:
        return re.sub(r"client=\S+", "client=HOST:PORT", line)

    assert no_port(refusals[0]) == no_port(documented.group(1))
    assert good not in caplog.text
    assert '"WebSocket /ws/chat/lobby?token=[redacted]" [accepted]' in caplog.text


# -- the JavaScript client in close-codes.md ------------------------------------------


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
def test_js_client_reconnects_only_when_the_code_says_so(tmp_path: Path) -> None:
    text = (DOCS / "close-codes.md").read_text()
    snippet = re.search(r"```js\n(// Milliseconds.*?)```", text, re.S)
    assert snippet is not None
    entries = [(e.code, e.reason) for e in close_policy()]
    script = tmp_path / "client.js"
    script.write_text(
        snippet.group(1)
        + f"const entries = {json.dumps(entries)};\n"
        + "console.log(JSON.stringify(entries.map(([c, r]) => "
        + "[retryDelay(c, r, 0), retryDelay(c, r, 1), retryDelay(c, r, 2)])));\n"
    )
    run = subprocess.run(
        ["node", str(script)], capture_output=True, text=True, timeout=30, check=True
    )
    # The snippet follows the close-code policy (close-codes.json) for every entry.
    for entry, delays in zip(close_policy(), json.loads(run.stdout), strict=True):
        where = (entry.code, entry.reason, delays)
        if entry.action == "stop":
            assert delays == [None, None, None], where
        elif entry.action == "refresh_token":
            assert delays == [0, None, None], where  # once, never the same token
        elif entry.max_attempts is not None:
            assert delays == [0, 0, 0], where
        else:
            assert entry.backoff_ms is not None
            base, cap = entry.backoff_ms
            for attempt, delay in enumerate(delays):
                assert 0 <= delay <= min(cap, base * 2**attempt), where


JS_HARNESS = """
const made = [];
let issued = 0;
globalThis.location = { protocol: "https:", host: "chat.example" };
globalThis.getToken = async () => "t" + ++issued;
globalThis.WebSocket = class {
  constructor(url, protocols) {
    Object.assign(this, { url, protocols });
    made.push(this);
  }
};
globalThis.setTimeout = (fn) => fn();
console.info = () => {};
const tick = () => new Promise((resolve) => setImmediate(resolve));
(async () => {
  const frames = [];
  connect("lobby", (frame) => frames.push(frame.type));
  await tick();
  const batch = { type: "batch", frames: [{ type: "message" }, { type: "presence" }] };
  made[0].onmessage({ data: JSON.stringify(batch) });
  made[0].onclose({ code: 4401, reason: "token_expired: token has expired" });
  await tick();
  made[1].onclose({ code: 4401, reason: "token_invalid: signature does not match" });
  await tick();
  connect("lobby", () => {});
  await tick();
  made[2].onclose({ code: 4403, reason: "forbidden: not allowed in this chat" });
  await tick();
  const sockets = made.map((ws) => [ws.url, ws.protocols]);
  console.log(JSON.stringify({ sockets, frames }));
})();
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
def test_js_client_reads_the_close_event(tmp_path: Path) -> None:
    text = (DOCS / "close-codes.md").read_text()
    snippet = re.search(r"```js\n(// Milliseconds.*?)```", text, re.S)
    assert snippet is not None
    script = tmp_path / "client.js"
    script.write_text(snippet.group(1) + JS_HARNESS)
    run = subprocess.run(
        ["node", str(script)], capture_output=True, text=True, timeout=30, check=True
    )
    result = json.loads(run.stdout)
    assert result["frames"] == ["message", "presence"]  # a batch is unpacked
    url = "wss://chat.example/ws/chat/lobby"
    assert result["sockets"] == [
        [url, ["wschat.v1", "bearer.t1"]],
        [url, ["wschat.v1", "bearer.t2"]],  # after 4401: once, with a new token
        [url, ["wschat.v1", "bearer.t3"]],  # a fresh connect; its 4403 is final
    ]
