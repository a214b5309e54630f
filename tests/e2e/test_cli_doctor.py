"""``wschat doctor`` and ``wschat connect``, run as a user runs them, against real
servers: uvicorn in a thread (the three adapters), uvicorn without a WebSocket
library in a subprocess, and a port nothing listens on.

doctor prints one line per check, the fix under the first failure, never the
token (only its fingerprint), and exits 0 only when ``ready`` was reached.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import jwt
import pytest

import wschat
from tests.support.common import SECRET, free_port, source_env
from tests.support.e2e import FLAVORS, Chat, Flavor, chat_server
from tests.support.server_process import ServerProcess
from wschat import token_fingerprint
from wschat.schema import policy_for
from wschat.testing import mint_token

pytestmark = pytest.mark.e2e

TIMEOUT = 30


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``python -m wschat ARGS`` with this tree's sources."""
    return subprocess.run(
        [sys.executable, "-m", "wschat", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=TIMEOUT,
        env=source_env(),
        check=False,
    )


def lines(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Check name -> ``status`` of each check line doctor printed."""
    found = {}
    for line in result.stdout.splitlines():
        status, _, rest = line.partition(" ")
        name = rest.strip().split(":", 1)[0]
        if status in ("ok", "warn", "FAIL", "skip"):
            found[name] = status
    return found


def fixes(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [
        line.strip()[len("fix: ") :]
        for line in result.stdout.splitlines()
        if line.strip().startswith("fix: ")
    ]


@pytest.fixture(scope="module")
def chat() -> Iterator[Chat]:
    """The raw ASGI adapter (the good token runs on all three)."""
    with chat_server("asgi") as server:
        yield server


@pytest.mark.parametrize("flavor", [f for f in FLAVORS if f != "asgi"])
def test_every_adapter_reaches_ready(flavor: Flavor) -> None:
    with chat_server(flavor) as chat:
        result = doctor(chat, "--token", mint_token(SECRET, "alice"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok    ready: user 'alice' in 'lobby', protocol 1" in result.stdout


def doctor(chat: Chat, *args: str) -> subprocess.CompletedProcess[str]:
    return run("doctor", chat.url("lobby"), *args)


def test_a_good_token_reaches_ready(chat: Chat) -> None:
    tok = mint_token(SECRET, "alice")
    result = doctor(chat, "--token", tok)
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines(result) == {
        "tcp": "ok",
        "status": "ok",
        "upgrade": "ok",
        "token": "ok",
        "handshake": "ok",
        "ready": "ok",
    }
    out = result.stdout
    assert f"wschat {wschat.__version__}, status ok" in out
    assert "algorithm HS256, sub 'alice'" in out
    assert "ready: user 'alice' in 'lobby', protocol 1" in out
    assert token_fingerprint(tok) in out
    assert tok not in out + result.stderr
    assert tok.split(".")[2] not in out
    assert fixes(result) == []


def test_the_literal_test_is_not_a_jwt(chat: Chat) -> None:
    result = doctor(chat, "--token", "test")
    assert result.returncode == 1
    out = result.stdout
    assert "FAIL  token: not a JWT" in out
    assert fixes(result) == [policy_for(4401, "token_malformed").fix]
    assert "the server closed with 4401 token_malformed" in out
    assert lines(result)["ready"] == "skip"
    assert token_fingerprint("test") in out


def test_an_expired_token_says_when(chat: Chat) -> None:
    tok = mint_token(SECRET, "alice", ttl=-120)
    result = doctor(chat, "--token", tok)
    assert result.returncode == 1
    assert "FAIL  token: expired at " in result.stdout
    assert "s ago)" in result.stdout
    assert fixes(result) == [policy_for(4401, "token_expired").fix]
    assert "the server closed with 4401 token_expired" in result.stdout
    assert tok not in result.stdout


def _crafted(kind: str) -> str:
    """A token with one thing wrong that doctor sees without the key."""
    now = int(time.time())
    claims: dict[str, object] = {"sub": "alice", "exp": now + 600}
    if kind == "no sub":
        del claims["sub"]
    elif kind == "no exp":
        del claims["exp"]
    elif kind == "nbf":
        claims["nbf"] = now + 600
    elif kind == "garbage":
        return "bm90.anNvbg.c2ln"  # base64url of "not", "json", "sig"
    algorithm = "none" if kind == "alg none" else "HS256"
    return jwt.encode(claims, "" if kind == "alg none" else SECRET, algorithm)


@pytest.mark.parametrize(
    ("kind", "said", "reason"),
    [
        ("no sub", "no sub claim (algorithm HS256)", "token_invalid"),
        ("no exp", "no exp claim (algorithm HS256): wschat requires exp", None),
        ("alg none", "algorithm none: an unsigned token is always refused", None),
        ("nbf", "not valid before ", "token_not_yet_valid"),
        ("garbage", "not a JWT: its header or payload is not base64url", None),
    ],
)
def test_what_is_wrong_with_a_token_is_said_before_the_handshake(
    chat: Chat, kind: str, said: str, reason: str | None
) -> None:
    tok = _crafted(kind)
    result = doctor(chat, "--token", tok)
    assert result.returncode == 1
    assert f"FAIL  token: {said}" in result.stdout
    assert token_fingerprint(tok) in result.stdout
    assert tok not in result.stdout + result.stderr
    assert "the server closed with 4401 token_" in result.stdout  # it agrees
    if reason is not None:
        assert f"the server closed with 4401 {reason}" in result.stdout
        assert fixes(result) == [policy_for(4401, reason).fix]


def test_a_token_signed_with_another_key_is_refused_by_the_server(chat: Chat) -> None:
    tok = mint_token("another-secret-" + "y" * 40, "alice")
    result = doctor(chat, "--token", tok)
    assert result.returncode == 1
    checks = lines(result)
    assert checks["token"] == "ok"  # it decodes: only the server can verify it
    assert checks["close"] == "FAIL"
    assert "the server closed with 4401 token_invalid" in result.stdout
    assert fixes(result) == [
        policy_for(4401, "token_invalid").fix
        + " (a client should: "
        + policy_for(4401, "token_invalid").client_should
        + ")"
    ]


def test_a_refused_origin_is_named(chat: Chat) -> None:
    tok = mint_token(SECRET, "alice")
    result = doctor(chat, "--token", tok, "--origin", "https://evil.example")
    assert result.returncode == 1
    assert "FAIL  upgrade: HTTP 403: the server refuses the Origin" in result.stdout
    (fix,) = fixes(result)
    assert "add 'https://evil.example' to allowed_origins" in fix
    # The page's own origin passes.
    assert doctor(chat, "--token", tok, "--origin", chat.origin).returncode == 0


@pytest.fixture(scope="module")
def denying() -> Iterator[Chat]:
    """A server with ``http_denials=True``: refusals are HTTP statuses."""
    with chat_server("asgi", http_denials=True) as server:
        yield server


def test_http_denials_is_not_a_proxy_that_dropped_upgrade(denying: Chat) -> None:
    """Without a token the upgrade probe gets ``401 token_missing``: that is wschat
    answering, not a proxy; the checks go on to the handshake with the token."""
    result = doctor(denying, "--token", mint_token(SECRET, "alice"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "ok    upgrade: the server speaks WebSocket and refuses with HTTP statuses "
        "(http_denials): without a token, HTTP 401 token_missing" in result.stdout
    )
    assert "proxy" not in result.stdout
    assert lines(result)["ready"] == "ok"


def test_http_denials_shows_the_refusal_and_its_fix(denying: Chat) -> None:
    tok = mint_token(SECRET, "alice", ttl=-120)
    result = doctor(denying, "--token", tok)
    assert result.returncode == 1
    assert "FAIL  handshake: refused with HTTP 401: token_expired" in result.stdout
    assert fixes(result) == [policy_for(4401, "token_expired").fix]
    assert lines(result)["upgrade"] == "ok"


def test_http_denials_still_names_a_refused_origin(denying: Chat) -> None:
    tok = mint_token(SECRET, "alice")
    result = doctor(denying, "--token", tok, "--origin", "https://evil.example")
    assert result.returncode == 1
    assert "FAIL  upgrade: HTTP 403: the server refuses the Origin" in result.stdout


def test_no_token_is_a_warning_then_token_missing(chat: Chat) -> None:
    result = doctor(chat)
    assert result.returncode == 1
    assert lines(result)["token"] == "warn"
    assert "4401 token_missing" in result.stdout
    assert fixes(result) == [
        policy_for(4401, "token_missing").fix
        + " (a client should: get a token, then connect)"
    ]


def test_a_server_that_is_down() -> None:
    port = free_port()
    result = run("doctor", f"ws://127.0.0.1:{port}/ws/chat/lobby", "--token", "x")
    assert result.returncode == 1
    assert "refused the connection: nothing listens there" in result.stdout
    assert lines(result) == {"tcp": "FAIL", "ready": "skip"}
    assert fixes(result)[0].startswith("start the server")


def test_a_host_that_does_not_resolve() -> None:
    result = run("doctor", "ws://no-such-host.invalid/ws/chat/lobby")
    assert result.returncode == 1
    assert lines(result)["dns"] == "FAIL"


@pytest.mark.parametrize(
    "app", ["tests.support.apps:asgi_app", "tests.support.apps:fastapi_app"]
)
def test_uvicorn_without_websocket_support(app: str) -> None:
    port = free_port()
    command = [sys.executable, "-m", "tests.support.no_ws_libs", app]
    command += ["--host", "127.0.0.1", "--port", str(port), "--ws-max-size", "65536"]
    with ServerProcess(command, port):
        result = run(
            "doctor",
            f"ws://127.0.0.1:{port}/ws/chat/lobby",
            "--token",
            mint_token(SECRET, "alice"),
        )
    assert result.returncode == 1
    assert "FAIL  upgrade: HTTP 404: the server cannot speak WebSocket" in result.stdout
    assert "install uvicorn[standard]" in fixes(result)[0]


def test_a_proxy_that_drops_upgrade() -> None:
    """A server that answers the handshake as plain HTTP without wschat's header."""

    async def plain(scope: object, receive: object, send: object) -> None:
        assert isinstance(scope, dict)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200})  # type: ignore[operator]
            await send({"type": "http.response.body", "body": b"hello"})  # type: ignore[operator]

    from tests.support.common import serve

    with serve(plain) as server:
        result = run("doctor", f"{server.ws}/ws/chat/lobby")
    assert result.returncode == 1
    assert "a proxy dropped Upgrade" in result.stdout
    assert "proxy_set_header Upgrade" in fixes(result)[0]


@pytest.mark.parametrize(
    "url",
    ["http://", "ws://127.0.0.1:8000/ws/status", "ftp://x/ws/chat/a"],
)
def test_a_url_that_is_not_a_chat_socket_is_a_usage_error(url: str) -> None:
    result = run("doctor", url)
    assert result.returncode == 2
    assert result.stderr.startswith("wschat doctor: error: ")
    assert "Traceback" not in result.stderr


# -- wschat connect -------------------------------------------------------------------


def test_connect_sends_stdin_lines_and_prints_events(chat: Chat) -> None:
    result = run(
        "connect",
        chat.url("lobby"),
        "--token",
        mint_token(SECRET, "carol"),
        stdin="hello\n\nsecond line\n",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout.splitlines()
    assert out[0].startswith("connected to lobby as carol (here: ")
    assert "<carol> hello" in out
    assert "<carol> second line" in out
    assert out.index("<carol> hello") < out.index("<carol> second line")
    assert len([line for line in out if line.startswith("<carol>")]) == 2


def test_connect_with_a_bad_token_prints_the_close_and_the_fix(chat: Chat) -> None:
    result = run("connect", chat.url("lobby"), "--token", "test", stdin="hi\n")
    assert result.returncode == 1
    assert "closed: 4401 token_malformed" in result.stdout
    assert "fix: " + policy_for(4401, "token_malformed").fix in result.stdout


def test_connect_needs_a_token() -> None:
    result = run("connect", "ws://127.0.0.1:1/ws/chat/lobby")
    assert result.returncode == 2
    assert "--token" in result.stderr
