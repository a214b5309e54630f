"""The ``wschat`` command line, run as a user runs it: in a real subprocess.

``wschat token`` must print a token that wschat's own verifier accepts, and answer bad
input with one line and exit code 2. ``wschat demo`` must serve the page, the demo-only
token endpoint, the chat socket and ``/ws/status``, then stop cleanly on Ctrl+C.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.support.common import SECRET, ServerThread, frames_of, free_port, serve
from wschat import TokenVerifier, WSChatError
from wschat.demo import LOOPBACK_HOSTS, create_app
from wschat.testing import generate_secret

TIMEOUT = 15.0


def run_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m wschat`` with ``args``; WSCHAT_SECRET is unset unless given."""
    base = {k: v for k, v in os.environ.items() if k != "WSCHAT_SECRET"}
    return subprocess.run(
        [sys.executable, "-m", "wschat", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**base, **(env or {})},
        check=False,
    )


def verify(token: str, algorithms: Sequence[str] = ("HS256",), **kw: Any) -> Any:
    return TokenVerifier(SECRET, algorithms=list(algorithms), **kw).verify(token)


# -- wschat token ---------------------------------------------------------------------


def test_token_prints_a_jwt_that_verifies() -> None:
    result = run_cli("token", "--secret", SECRET, "--sub", "alice")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    token = result.stdout.strip()
    assert result.stdout == token + "\n", "stdout must be the token alone"
    principal = verify(token, ["HS256"])
    assert principal.user_id == "alice"
    assert principal.claims["exp"] - principal.claims["iat"] == 3600


def test_token_reads_env_secret_ttl_alg_and_claims() -> None:
    result = run_cli(
        "token",
        "--sub",
        "bob",
        "--ttl",
        "60",
        "--alg",
        "HS384",
        "--claim",
        "aud=chat",
        "--claim",
        "admin=true",
        "--claim",
        'rooms=["a","b"]',
        env={"WSCHAT_SECRET": SECRET},
    )
    assert result.returncode == 0, result.stderr
    principal = verify(result.stdout.strip(), ["HS384"], audience="chat")
    assert principal.user_id == "bob"
    assert principal.claims["exp"] - principal.claims["iat"] == 60
    assert principal.claims["admin"] is True
    assert principal.claims["rooms"] == ["a", "b"]


def test_token_secret_flag_wins_over_env() -> None:
    result = run_cli(
        "token", "--secret", SECRET, "--sub", "carol", env={"WSCHAT_SECRET": "y" * 40}
    )
    assert result.returncode == 0, result.stderr
    assert verify(result.stdout.strip()).user_id == "carol"


def test_token_over_a_day_is_signed_with_a_note() -> None:
    result = run_cli("token", "--secret", SECRET, "--sub", "dave", "--ttl", "90000")
    assert result.returncode == 0
    assert "over 24 h" in result.stderr
    token = result.stdout.strip()
    assert verify(token, max_lifetime=None).user_id == "dave"
    with pytest.raises(WSChatError, match="token_invalid"):
        verify(token)


def test_console_script_and_version() -> None:
    script = shutil.which("wschat", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the wschat console script is not installed next to this Python")
    result = subprocess.run(
        [script, "--version"], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 0
    assert result.stdout.startswith("wschat 0.")


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--secret", "short", "--sub", "a"], {}, "HS256 needs at least 32"),
        (["--secret", "x" * 40, "--sub", "a", "--alg", "HS512"], {}, "at least 64"),
        (["--sub", "a"], {}, "pass --secret or set WSCHAT_SECRET"),
        (["--sub", "a"], {"WSCHAT_SECRET": ""}, "pass --secret or set WSCHAT_SECRET"),
        (["--secret", SECRET], {}, "--sub"),
        (["--secret", SECRET, "--sub", ""], {}, "--sub must be 1 to 256"),
        (["--secret", SECRET, "--sub", "a", "--ttl", "0"], {}, "must be positive"),
        (["--secret", SECRET, "--sub", "a", "--ttl", "1h"], {}, "whole seconds"),
        (["--secret", SECRET, "--sub", "a", "--alg", "none"], {}, "invalid choice"),
        (["--secret", SECRET, "--sub", "a", "--claim", "admin"], {}, "key=value"),
        (["--secret", SECRET, "--sub", "a", "--claim", "=1"], {}, "key=value"),
        (["--secret", SECRET, "--sub", "a", "--claim", "sub=bob"], {}, "--sub"),
        (["--secret", SECRET, "--sub", "a", "--claim", "exp=1"], {}, "--ttl"),
        (["--secret", SECRET, "--sub", "a", "--bogus"], {}, "unrecognized"),
    ],
)
def test_token_bad_input_is_one_line_and_exit_2(
    args: list[str], env: dict[str, str], expected: str
) -> None:
    result = run_cli("token", *args, env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("wschat token: error: ")
    assert expected in lines[0]


def test_no_command_prints_help_and_exits_2() -> None:
    result = run_cli()
    assert result.returncode == 2
    assert "token" in result.stderr
    assert "demo" in result.stderr


# -- wschat demo (subprocess) ---------------------------------------------------------


class Output:
    """Collects a process's merged output on a thread, so its pipe never fills."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        self._stream = proc.stdout
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        for line in self._stream:
            self.lines.append(line)
            self._queue.put(line)

    def wait_for(self, pattern: str, timeout: float = TIMEOUT) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matched {pattern!r}:\n{self.text()}")
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            match = re.search(pattern, line)
            if match:
                return match

    def text(self) -> str:
        self._thread.join(0.1)
        return "".join(self.lines)


@pytest.fixture
def demo_process() -> Iterator[tuple[subprocess.Popen[str], Output, int]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wschat", "demo", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        yield proc, Output(proc), port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(TIMEOUT)
        assert proc.stdout is not None
        proc.stdout.close()


def get_token(client: httpx.Client, name: str) -> str:
    response = client.post("/demo/token", json={"name": name})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["expires_in"] == 3600
    token: str = body["token"]
    return token


def recv_frame(ws: ClientConnection) -> dict[str, Any]:
    (frame,) = frames_of(ws.recv(timeout=TIMEOUT))
    return frame


def recv_until(ws: ClientConnection, kind: str, **fields: Any) -> dict[str, Any]:
    """Receive until a frame of type ``kind`` with ``fields``; skip the others."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        left = max(0.01, deadline - time.monotonic())
        for frame in frames_of(ws.recv(timeout=left)):
            if frame["type"] == kind and fields.items() <= frame.items():
                return frame


def drain(ws: ClientConnection) -> None:
    """Receive until the server closes (ConnectionClosed) or TIMEOUT passes."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            ws.recv(timeout=max(0.01, deadline - time.monotonic()))
    raise AssertionError(f"the socket stayed open for {TIMEOUT} s")


@pytest.mark.e2e
def test_demo_serves_page_tokens_chat_and_status(
    demo_process: tuple[subprocess.Popen[str], Output, int],
) -> None:
    proc, output, port = demo_process
    url = output.wait_for(r"wschat demo: open (\S+) in two tabs").group(1)
    assert url == f"http://127.0.0.1:{port}/"
    ws_base = f"ws://127.0.0.1:{port}/ws/chat"

    with httpx.Client(base_url=url, timeout=TIMEOUT) as http:
        page = http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "wschat demo" in page.text
        assert "default-src 'none'" in page.headers["content-security-policy"]

        alice_token = get_token(http, "alice")
        bob_token = get_token(http, "bob")
        refused = http.post("/demo/token", json={"name": "not a name"})
        assert refused.status_code == 400
        assert refused.json()["error"] == "invalid_name"

        # Offering the subprotocol proves nothing asks for compression either.
        with (
            connect(f"{ws_base}/lobby?token={alice_token}") as alice,
            connect(f"{ws_base}/lobby?token={bob_token}") as bob,
        ):
            assert alice.response is not None
            assert "permessage-deflate" not in (
                alice.response.headers.get("sec-websocket-extensions") or ""
            )
            ready = recv_frame(alice)
            assert (ready["type"], ready["user"]) == ("ready", "alice")
            assert recv_frame(bob)["type"] == "ready"
            joined = recv_until(alice, "presence", joins=["bob"])
            assert joined["leaves"] == []

            alice.send('{"type": "message", "body": "hi bob"}')
            for ws in (alice, bob):
                message = recv_until(ws, "message")
                assert (message["user"], message["body"]) == ("alice", "hi bob")

            status = http.get("/ws/status").json()
            assert status["status"] == "ok"
            assert status["connections"] == 2
            assert status["messages"] == 1

            with (
                connect(f"{ws_base}/lobby?token=test") as bad,
                pytest.raises(ConnectionClosed) as closed,
            ):
                bad.recv(timeout=TIMEOUT)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 4401
            assert closed.value.rcvd.reason.startswith("token_malformed")

            # Ctrl+C: the server closes open sockets and exits without a traceback.
            proc.send_signal(signal.SIGINT)
            with pytest.raises(ConnectionClosed):
                drain(alice)

    assert proc.wait(TIMEOUT) in (0, 130)
    log = output.text()
    assert "Traceback" not in log
    assert alice_token not in log, "a token reached the server log"
    assert "[redacted]" in log


def test_demo_server_settings_are_the_production_checklist() -> None:
    """``wschat demo`` runs uvicorn with docs/deployment.md's checklist."""
    from tests.support.server_process import checklist_flags
    from wschat.cli import DEMO_SERVER_SETTINGS

    flags = checklist_flags()
    as_config = {
        "ws_max_size": int(flags[flags.index("--ws-max-size") + 1]),
        "ws_per_message_deflate": False,
        "ws_ping_interval": float(flags[flags.index("--ws-ping-interval") + 1]),
        "ws_ping_timeout": float(flags[flags.index("--ws-ping-timeout") + 1]),
        "timeout_keep_alive": int(flags[flags.index("--timeout-keep-alive") + 1]),
        "h11_max_incomplete_event_size": int(
            flags[flags.index("--h11-max-incomplete-event-size") + 1]
        ),
        "limit_concurrency": int(flags[flags.index("--limit-concurrency") + 1]),
        "proxy_headers": "--no-proxy-headers" not in flags,
    }
    assert flags[flags.index("--ws-per-message-deflate") + 1] == "false"
    assert as_config == DEMO_SERVER_SETTINGS


@pytest.mark.e2e
def test_demo_server_refuses_oversize_messages_itself(
    demo_process: tuple[subprocess.Popen[str], Output, int],
) -> None:
    proc, output, port = demo_process
    url = output.wait_for(r"wschat demo: open (\S+) in two tabs").group(1)
    with httpx.Client(base_url=url, timeout=TIMEOUT) as http:
        token = get_token(http, "alice")
    envelope = len('{"type": "message", "body": ""}')
    with connect(f"ws://127.0.0.1:{port}/ws/chat/lobby?token={token}") as ws:
        assert recv_frame(ws)["type"] == "ready"
        ws.send('{"type": "message", "body": "%s"}' % ("x" * (65537 - envelope)))
        with pytest.raises(ConnectionClosed) as closed:
            drain(ws)
    assert closed.value.rcvd is not None
    # uvicorn's own refusal (--ws-max-size), not wschat's message_too_big.
    assert closed.value.rcvd.code == 1009
    assert not closed.value.rcvd.reason.startswith("message_too_big")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(TIMEOUT) in (0, 130)
    # The server's limit matches max_message_bytes: no warning about it.
    assert "accepts WebSocket messages" not in output.text()


def test_demo_port_in_use_is_one_line_and_exit_2() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("demo", "--port", str(port))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(
        f"wschat demo: error: cannot listen on 127.0.0.1:{port}"
    )
    assert result.stdout == ""


def test_demo_bad_port_is_exit_2() -> None:
    result = run_cli("demo", "--port", "70000")
    assert result.returncode == 2
    assert "port must be 0-65535" in result.stderr


# -- the demo app in process: the token endpoint's edges ------------------------------


SERVER_SECRET = generate_secret()


@pytest.fixture(scope="module")
def demo_server() -> Iterator[ServerThread]:
    app = create_app(SERVER_SECRET, trusted_hosts=LOOPBACK_HOSTS)
    with serve(app, log_level="warning") as server:
        yield server


@pytest.fixture
def demo_client(demo_server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=demo_server.http, timeout=TIMEOUT) as client:
        yield client


@pytest.mark.parametrize("name", ["alice", "a", "Bob_2", "x.y-z", "9lives", "n" * 64])
def test_demo_token_accepts_simple_names(demo_client: httpx.Client, name: str) -> None:
    response = demo_client.post("/demo/token", json={"name": name})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"token", "expires_in"}
    principal = TokenVerifier(SERVER_SECRET, algorithms=["HS256"]).verify(body["token"])
    assert principal.user_id == name


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "n" * 65},
        {"name": "has space"},
        {"name": "_leading"},
        {"name": "<script>"},
        {"name": "\u00e9"},
        {"name": 42},
        {"name": None},
        {},
        ["alice"],
    ],
)
def test_demo_token_refuses_bad_names_with_400_json(
    demo_client: httpx.Client, body: Any
) -> None:
    response = demo_client.post("/demo/token", json=body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_name"
    assert "letters, digits" in response.json()["message"]


def test_demo_token_needs_small_json(demo_client: httpx.Client) -> None:
    not_json = demo_client.post(
        "/demo/token", content=b"{", headers={"content-type": "application/json"}
    )
    assert (not_json.status_code, not_json.json()["error"]) == (400, "bad_json")
    # A cross-site form post cannot send JSON without a preflight; refuse the rest.
    form = demo_client.post("/demo/token", data={"name": "alice"})
    assert form.status_code == 415
    huge = demo_client.post("/demo/token", json={"name": "a", "pad": "x" * 2000})
    assert huge.status_code == 413
    assert demo_client.get("/demo/token").status_code == 405


def test_demo_answers_only_loopback_hosts(demo_client: httpx.Client) -> None:
    port = demo_client.base_url.port
    for host in ("127.0.0.1", "localhost", "[::1]"):
        page = demo_client.get("/", headers={"host": f"{host}:{port}"})
        assert page.status_code == 200, host
    # A DNS-rebinding page reaches 127.0.0.1 under its own name.
    rebound = demo_client.post(
        "/demo/token", json={"name": "a"}, headers={"host": f"evil.example:{port}"}
    )
    assert rebound.status_code == 400
    assert "eyJ" not in rebound.text, "a rebinding page must not get a token"


def test_demo_refuses_rebinding_sockets(demo_server: ServerThread) -> None:
    # Dial 127.0.0.1 but name another host, as a rebinding page does.
    sock = socket.create_connection(("127.0.0.1", demo_server.port), TIMEOUT)
    with contextlib.closing(sock), pytest.raises(InvalidStatus) as refused:
        connect(
            f"ws://evil.example:{demo_server.port}/ws/chat/lobby?token=x",
            sock=sock,
            open_timeout=TIMEOUT,
        )
    assert refused.value.response.status_code == 403
