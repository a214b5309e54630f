"""docs/deployment.md, checked: each server setting does what the page says.

The server runs as a deployment runs it, ``python -m uvicorn
tests.support.apps:asgi_app`` with the page's flags in a subprocess (hypercorn too
where the page covers it), and its memory is read from ``/proc``. The flags come from
the page itself, so the page cannot drift from what is tested.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin, Subprotocol

from tests.support.common import SECRET
from tests.support.server_process import (
    DEFLATE_OFFER,
    PAGE,
    WS_IMPLS,
    Hypercorn,
    RawClient,
    ServerProcess,
    Uvicorn,
    checklist_flags,
    open_sockets,
    raw_upgrade,
    rss_mib,
    unfinished_message,
)
from wschat.asgi_server import ServerSettings, message_limit_warning, server_settings
from wschat.testing import mint_token

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
#: Connections that each send an unfinished message in the memory tests.
ATTACKERS = 20


def flag(flags: list[str], name: str) -> str:
    return flags[flags.index(name) + 1]


def token(user: str) -> str:
    return mint_token(SECRET, user)


def chat_path(user: str = "mallory") -> str:
    return f"/ws/chat/lobby?token={token(user)}"


# -- 1. the server's message limit ----------------------------------------------------


def test_the_checklist_sets_the_server_limit_to_max_message_bytes() -> None:
    flags = checklist_flags()
    assert flag(flags, "--ws-max-size") == "65536"  # max_message_bytes' default
    assert flag(flags, "--ws-per-message-deflate") == "false"


@contextlib.contextmanager
def attack(
    server: ServerProcess, *, compressed: bool, count: int = ATTACKERS
) -> Iterator[list[RawClient]]:
    """``count`` connections that each send an unfinished message and then wait."""
    frame = unfinished_message(compressed=compressed)

    def send(raw: RawClient) -> None:
        # The server may stop reading (and close) mid-way.
        raw.sock.settimeout(2)
        with contextlib.suppress(OSError):
            raw.sock.sendall(frame)

    with contextlib.ExitStack() as stack:
        attackers = []
        for i in range(count):
            raw = stack.enter_context(
                raw_upgrade(
                    server.port,
                    chat_path(f"m{i}"),
                    extensions=DEFLATE_OFFER if compressed else None,
                )
            )
            assert raw.status == 101, raw.head
            attackers.append(raw)
        with ThreadPoolExecutor(count) as pool:
            list(pool.map(send, attackers))
        yield attackers


def grown(server: ServerProcess, before: float, at_least: float) -> float:
    """The RSS growth once it reaches ``at_least`` MiB, or after 20 s."""
    deadline = time.monotonic() + 20
    growth = rss_mib(server.pid) - before
    while growth < at_least and time.monotonic() < deadline:
        time.sleep(0.1)
        growth = rss_mib(server.pid) - before
    return growth


@pytest.mark.parametrize("compressed", [True, False], ids=["deflate-bomb", "plain"])
def test_default_flags_hold_unfinished_messages_in_memory(compressed: bool) -> None:
    """The problem: 20 sockets, each sending an unfinished 15 MiB message (15 KB on
    the wire when compressed), make uvicorn hold about 300 MiB that wschat cannot
    see, since the server assembles a message before the app gets it."""
    with Uvicorn(flags=["--log-level", "warning"]) as server:
        before = rss_mib(server.pid)
        with attack(server, compressed=compressed) as attackers:
            growth = grown(server, before, at_least=200)
            # Nothing refused them: every attacker is still connected.
            assert not any(raw.ended(0.05) for raw in attackers)
    assert growth >= 200, f"RSS grew by {growth:.0f} MiB only"


@pytest.mark.parametrize("ws", WS_IMPLS)
@pytest.mark.parametrize("compressed", [True, False], ids=["deflate-bomb", "plain"])
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_checklist_flags_bound_unfinished_messages(ws: str, compressed: bool) -> None:
    """The same attack against the checklist's flags: the server refuses each
    message at 64 KiB (or refuses compression), and memory stays flat."""
    with Uvicorn(flags=[*checklist_flags(), "--ws", ws]) as server:
        before = rss_mib(server.pid)
        with attack(server, compressed=compressed) as attackers:
            closed = [raw.ended(10) for raw in attackers]
            growth = rss_mib(server.pid) - before
        assert all(closed), f"{closed.count(False)} attackers still connected"
    assert growth <= 16, f"RSS grew by {growth:.0f} MiB"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_wsproto_inflates_a_whole_frame_before_the_limit_applies() -> None:
    """Why the checklist turns compression off even with the limit set: wsproto
    inflates each compressed frame whole, then uvicorn checks its size."""
    flags = [*with_flag(checklist_flags(), "--ws-per-message-deflate", "true")]
    with Uvicorn(flags=[*flags, "--ws", "wsproto"]) as server:
        before = rss_mib(server.pid)
        with attack(server, compressed=True) as attackers:
            assert all(raw.ended(10) for raw in attackers)
            growth = rss_mib(server.pid) - before
    assert growth >= 16, f"RSS grew by {growth:.0f} MiB only"


# -- 1b. the startup warning ----------------------------------------------------------


def warnings_in(output: str) -> list[str]:
    return [
        line for line in output.splitlines() if "accepts WebSocket messages" in line
    ]


def connect_and_leave(server: ServerProcess, times: int = 3) -> None:
    for _ in range(times):
        with raw_upgrade(server.port, chat_path("alice")) as raw:
            assert raw.status == 101, raw.head


def test_uvicorn_default_limit_is_warned_once_at_startup() -> None:
    with Uvicorn("tests.support.apps:asgi_app", ["--log-level", "info"]) as server:
        # At startup (chat_app sees the lifespan), before any connection.
        assert len(warnings_in(server.output())) == 1, server.output()
        connect_and_leave(server)
        output = server.stop()
    (line,) = warnings_in(output)
    # The page shows the line exactly as it is printed.
    assert f"```\n{line}\n```" in PAGE.read_text()


@pytest.mark.parametrize("app", ["starlette_app", "fastapi_app"])
def test_framework_apps_warn_at_the_first_connection(app: str) -> None:
    with Uvicorn(f"tests.support.apps:{app}", ["--log-level", "info"]) as server:
        # Starlette runs the lifespan: wschat sees the server at the first socket.
        assert warnings_in(server.output()) == []
        connect_and_leave(server)
        output = server.stop()
    assert len(warnings_in(output)) == 1, output


@pytest.mark.parametrize("app", ["asgi_app", "starlette_app"])
def test_checklist_flags_raise_no_warning(app: str) -> None:
    with Uvicorn(f"tests.support.apps:{app}", checklist_flags()) as server:
        connect_and_leave(server)
        output = server.stop()
    assert warnings_in(output) == []
    assert "WARNING" not in output


def hypercorn_config(tmp_path: Path, **settings: object) -> list[str]:
    path = tmp_path / "hypercorn.toml"
    path.write_text("".join(f"{k} = {v!r}\n" for k, v in settings.items()))
    return ["--workers", "0", "--config", str(path)]


def test_hypercorn_default_limit_is_warned_once(tmp_path: Path) -> None:
    with Hypercorn("tests.support.apps:asgi_app", hypercorn_config(tmp_path)) as server:
        connect_and_leave(server)
        output = server.stop()
    (line,) = warnings_in(output)
    assert "hypercorn accepts WebSocket messages of up to 16777216 bytes" in line
    assert "Set websocket_max_message_size = 65536" in line


def test_hypercorn_with_the_limit_set_is_quiet(tmp_path: Path) -> None:
    flags = hypercorn_config(tmp_path, websocket_max_message_size=65536)
    with Hypercorn("tests.support.apps:asgi_app", flags) as server:
        connect_and_leave(server)
        output = server.stop()
    assert warnings_in(output) == []


def test_hypercorn_behind_starlette_cannot_be_read_and_says_nothing(
    tmp_path: Path,
) -> None:
    # Starlette wraps send, and hypercorn's receive is a queue's: nothing to read,
    # so nothing is guessed (docs/deployment.md says so).
    with Hypercorn(
        "tests.support.apps:starlette_app", hypercorn_config(tmp_path)
    ) as server:
        connect_and_leave(server)
        output = server.stop()
    assert warnings_in(output) == []


def test_warning_boundaries() -> None:
    """Read from uvicorn's real protocol object, as the server builds it."""
    import asyncio

    from uvicorn.config import Config
    from uvicorn.protocols.websockets.websockets_sansio_impl import (
        WebSocketsSansIOProtocol,
    )
    from uvicorn.server import ServerState

    async def app(scope: object, receive: object, send: object) -> None: ...

    def read(size: int, deflate: bool) -> ServerSettings:
        config = Config(app, ws_max_size=size, ws_per_message_deflate=deflate)
        config.load()
        loop = asyncio.new_event_loop()
        try:
            protocol = WebSocketsSansIOProtocol(config, ServerState(), {}, _loop=loop)
            found = server_settings(protocol.receive, protocol.send)
        finally:
            loop.close()
        assert found is not None
        return found

    assert read(65536, True) == ServerSettings(
        "uvicorn", 65536, True, "--ws-max-size {}"
    )
    assert message_limit_warning(read(65536, True), 65536) is None
    assert message_limit_warning(read(1024, True), 65536) is None
    text = message_limit_warning(read(65537, False), 65536)
    assert text is not None
    assert "up to 65537 bytes but max_message_bytes is 65536" in text
    assert "inflated" not in text  # compression is off in this config
    assert "Set --ws-max-size 65536" in text
    # A function that belongs to no server object is not read.
    assert server_settings(print, print) is None


def with_flag(flags: list[str], name: str, value: str) -> list[str]:
    """``flags`` with ``name``'s value replaced (for a shorter timing)."""
    changed = list(flags)
    changed[changed.index(name) + 1] = value
    return changed


def test_checklist_values() -> None:
    flags = checklist_flags()
    assert (flag(flags, "--ws-ping-interval"), flag(flags, "--ws-ping-timeout")) == (
        "20",
        "20",
    )
    assert flag(flags, "--timeout-keep-alive") == "5"
    assert flag(flags, "--h11-max-incomplete-event-size") == "16384"
    assert flag(flags, "--limit-concurrency") == "1000"
    assert flag(flags, "--log-level") == "info"
    assert "--no-proxy-headers" in flags


SERVER_REASONS = {
    "websockets-sansio": "frame with 65537 bytes exceeds limit of 65536 bytes",
    "wsproto": "Message exceeds the maximum size (65536 bytes)",
    "websockets": "",
}


@pytest.mark.parametrize("ws", WS_IMPLS)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_server_refuses_a_message_over_the_limit_with_1009(ws: str) -> None:
    envelope = len(json.dumps({"type": "message", "body": ""}))
    with (
        Uvicorn(flags=[*checklist_flags(), "--ws", ws]) as server,
        connect(f"ws://127.0.0.1:{server.port}{chat_path('alice')}") as client,
    ):
        assert json.loads(client.recv(timeout=5))["type"] == "ready"
        # Exactly max_message_bytes passes the server and wschat...
        body = "x" * (65536 - envelope)
        client.send(json.dumps({"type": "message", "body": body}))
        assert _next_of(client, "message")["body"] == body
        # ...one byte more is refused by the server, with its own reason.
        client.send(json.dumps({"type": "message", "body": body + "x"}))
        with pytest.raises(ConnectionClosed) as ended:
            client.recv(timeout=10)
    assert ended.value.rcvd is not None
    assert (ended.value.rcvd.code, ended.value.rcvd.reason) == (
        1009,
        SERVER_REASONS[ws],
    )


def test_compression_is_not_offered_and_a_compressed_frame_is_refused() -> None:
    with (
        Uvicorn(flags=checklist_flags()) as server,
        raw_upgrade(server.port, chat_path(), extensions=DEFLATE_OFFER) as raw,
    ):
        assert raw.status == 101
        assert "sec-websocket-extensions" not in raw.head.lower()
        raw.sock.sendall(unfinished_message(compressed=True, size=1000))
        code, _reason = raw.close_frame(5)
    assert code == 1002


# -- dead peers ------------------------------------------------------------------------


@pytest.mark.parametrize("ws", WS_IMPLS)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_client_that_answers_no_ping_is_closed(ws: str) -> None:
    """With pings every 1 s and 1 s to answer: interval + timeout (plus the
    deprecated implementation's 10 s close timeout)."""
    flags = with_flag(checklist_flags(), "--ws-ping-interval", "1")
    flags = with_flag(flags, "--ws-ping-timeout", "1")
    bound = 2 + (10 if ws == "websockets" else 0) + 3
    with (
        Uvicorn(flags=[*flags, "--ws", ws]) as server,
        raw_upgrade(server.port, chat_path("mute")) as raw,
    ):
        started = time.monotonic()
        code, reason = raw.close_frame(bound)
        closed_after = time.monotonic() - started
        # ...and wschat forgets it (the deprecated implementation tells the app
        # only once its own close timeout is over).
        deadline = started + bound
        while status(server)["connections"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status(server)["connections"] == 0
    assert (code, reason) == (1011, "keepalive ping timeout")
    assert 1.5 <= closed_after <= 5


def status(server: ServerProcess) -> dict[str, Any]:
    payload: dict[str, Any] = httpx.get(server.url("/ws/status"), timeout=5).json()
    return payload


# -- half-open handshakes --------------------------------------------------------------

HALF_HANDSHAKE = b"GET /ws/chat/lobby?token=x HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@contextlib.contextmanager
def half_open(server: ServerProcess, count: int) -> Iterator[list[socket.socket]]:
    """``count`` sockets that send half a handshake and then nothing."""
    with contextlib.ExitStack() as stack:
        socks = []
        for _ in range(count):
            sock = stack.enter_context(
                socket.create_connection(("127.0.0.1", server.port), timeout=5)
            )
            sock.sendall(HALF_HANDSHAKE)
            socks.append(sock)
        yield socks


def still_open(sock: socket.socket) -> bool:
    """Whether the server has not closed ``sock`` (nothing to read, no EOF)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def read_to_end(sock: socket.socket, seconds: float) -> bytes:
    """Everything the server sends until it closes; fail if it does not in time."""
    data = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"the server did not close within {seconds} s: {data!r}")


def test_uvicorn_keeps_half_open_handshakes_past_timeout_keep_alive() -> None:
    flags = with_flag(checklist_flags(), "--timeout-keep-alive", "1")
    with Uvicorn(flags=flags) as server:
        # What --timeout-keep-alive does: an idle keep-alive connection is closed.
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        with contextlib.closing(idle):
            idle.sendall(b"GET /ws/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert read_to_end(idle, 5).startswith(b"HTTP/1.1 200")
        # What it does not: a handshake that never finishes stays.
        with half_open(server, 20) as socks:
            time.sleep(3)
            assert all(still_open(s) for s in socks)
            assert open_sockets(server.pid) >= 20


def test_uvicorn_out_of_descriptors_accepts_no_new_client() -> None:
    server = Uvicorn(flags=checklist_flags())
    server.nofile = 64
    with server, half_open(server, 70):
        url = f"ws://127.0.0.1:{server.port}{chat_path('alice')}"
        refused = (OSError, ConnectionClosed, InvalidHandshake, TimeoutError)
        with pytest.raises(refused), connect(url, open_timeout=3) as ws:
            ws.recv(timeout=3)
    # (the half-open sockets are closed here)
    server = Uvicorn(flags=checklist_flags())
    server.nofile = 64
    with server, connect(f"ws://127.0.0.1:{server.port}{chat_path()}") as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "ready"


def test_a_request_head_over_the_limit_is_refused_with_400() -> None:
    with Uvicorn(flags=checklist_flags()) as server:
        # A 7 KiB token fits in a handshake (websockets also caps each line of
        # the head at 8 KiB)...
        with raw_upgrade(server.port, f"/ws/chat/lobby?token={'x' * 7168}") as raw:
            assert raw.status == 101
        # ...a head over 16 KiB does not.
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        with contextlib.closing(sock):
            sock.sendall(HALF_HANDSHAKE + b"X-Pad: " + b"a" * (16 * 1024) + b"\r\n")
            answer = read_to_end(sock, 5)
            assert answer.startswith(b"HTTP/1.1 400"), answer


def test_hypercorn_closes_half_open_handshakes(tmp_path: Path) -> None:
    flags = hypercorn_config(tmp_path, keep_alive_timeout=1)
    with (
        Hypercorn("tests.support.apps:asgi_app", flags) as server,
        half_open(server, 20) as s,
    ):
        deadline = time.monotonic() + 5
        while any(still_open(x) for x in s) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(still_open(x) for x in s)


# -- --limit-concurrency ---------------------------------------------------------------


def test_limit_concurrency_answers_http_503_but_accepts_websockets() -> None:
    flags = with_flag(checklist_flags(), "--limit-concurrency", "3")
    base = f"ws://127.0.0.1:{{}}/ws/chat/lobby?token={token('alice')}"
    with Uvicorn(flags=flags) as server, contextlib.ExitStack() as stack:
        assert httpx.get(server.url("/ws/status")).status_code == 200
        for _ in range(4):  # one more than the limit: still accepted
            ws = stack.enter_context(connect(base.format(server.port)))
            assert json.loads(ws.recv(timeout=5))["type"] == "ready"
        assert httpx.get(server.url("/ws/status")).status_code == 503
    # Unfinished handshakes count too: a slowloris of 3 makes HTTP answer 503.
    with Uvicorn(flags=flags) as server, half_open(server, 3):
        assert httpx.get(server.url("/ws/status")).status_code == 503


# -- logs ------------------------------------------------------------------------------


@pytest.mark.parametrize("level", ["info", "debug", "trace"])
def test_no_level_logs_the_token(level: str) -> None:
    tok = token("alice")
    flags = with_flag(checklist_flags(), "--log-level", level)
    with Uvicorn(flags=flags) as server:
        url = f"ws://127.0.0.1:{server.port}/ws/chat/lobby"
        with connect(f"{url}?token={tok}") as ws:
            ws.recv(timeout=5)
        with connect(url, subprotocols=[Subprotocol("bearer." + tok)]) as ws:
            ws.recv(timeout=5)
        output = server.stop()
    assert "token=[redacted]" in output
    assert tok not in output
    assert tok.rsplit(".", 1)[1] not in output  # not even the signature
    if level != "info":
        # The request lines and headers are logged, redacted by the filter the
        # adapter installed on uvicorn's loggers.
        assert "bearer.[redacted]" in output, output


# -- proxies ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("proxy_flags", "trusted"),
    [
        ([], True),  # uvicorn's default: trust 127.0.0.1, where this test runs
        (["--no-proxy-headers"], False),
        (["--proxy-headers", "--forwarded-allow-ips", "192.0.2.10"], False),
    ],
    ids=["default", "no-proxy-headers", "another-proxy"],
)
def test_forwarded_headers_are_trusted_only_from_the_proxy(
    proxy_flags: list[str], trusted: bool
) -> None:
    flags = [f for f in checklist_flags() if f != "--no-proxy-headers"]
    with Uvicorn(flags=[*flags, *proxy_flags]) as server:
        url = f"ws://127.0.0.1:{server.port}/ws/chat/lobby?token=test"
        forwarded = {"X-Forwarded-For": "203.0.113.9"}
        with (
            connect(url, additional_headers=forwarded) as ws,
            contextlib.suppress(ConnectionClosed),
        ):
            ws.recv(timeout=5)
        # A page served over https by a TLS proxy: same origin only if the proxy's
        # X-Forwarded-Proto is trusted (the scheme is then wss).
        page = Origin(f"https://127.0.0.1:{server.port}")
        secure = f"ws://127.0.0.1:{server.port}{chat_path('alice')}"
        https = {"X-Forwarded-Proto": "https"}
        if trusted:
            with connect(secure, origin=page, additional_headers=https) as ws:
                assert json.loads(ws.recv(timeout=5))["type"] == "ready"
        else:
            with pytest.raises(InvalidStatus) as refused:
                connect(secure, origin=page, additional_headers=https)
            assert refused.value.response.status_code == 403
        output = server.stop()
    refusal = next(line for line in output.splitlines() if "refused connection" in line)
    if trusted:
        assert "client=203.0.113.9:" in refusal
    else:
        assert "client=127.0.0.1:" in refusal
        assert "203.0.113.9" not in output


# -- hypercorn: pings and read_timeout; its memory limit ------------------------------


def test_hypercorn_read_timeout_with_pings_closes_a_mute_client(tmp_path: Path) -> None:
    flags = hypercorn_config(tmp_path, websocket_ping_interval=0.5, read_timeout=2)
    with Hypercorn("tests.support.apps:asgi_app", flags) as server:
        url = f"ws://127.0.0.1:{server.port}{chat_path('alive')}"
        with (
            raw_upgrade(server.port, chat_path("mute")) as mute,
            connect(url) as alive,
        ):
            assert json.loads(alive.recv(timeout=5))["type"] == "ready"
            # The mute one reads nothing, so it answers no ping.
            assert mute.ended(6)
            # The live client answered every ping and is still connected.
            alive.send(json.dumps({"type": "ping"}))
            assert _next_of(alive, "pong")


def _next_of(ws: ClientConnection, kind: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while True:
        frame: dict[str, Any] = json.loads(
            ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        )
        if frame["type"] == kind:
            return frame


def test_hypercorn_message_limit_does_not_bound_memory(tmp_path: Path) -> None:
    """What the page says to prefer uvicorn for: hypercorn 0.18 keeps buffering a
    message past websocket_max_message_size."""
    flags = hypercorn_config(tmp_path, websocket_max_message_size=65536)
    with Hypercorn("tests.support.apps:asgi_app", flags) as server:
        before = rss_mib(server.pid)
        with attack(server, compressed=True):
            growth = grown(server, before, at_least=200)
    assert growth >= 200, growth


# -- the page's links ------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@pytest.mark.parametrize("page", sorted(p.name for p in (ROOT / "docs").glob("*.md")))
def test_links_to_sections_resolve(page: str) -> None:
    docs = ROOT / "docs"
    for target, anchor in re.findall(
        r"\]\(([\w.-]*)#([\w-]+)\)", (docs / page).read_text()
    ):
        text = (docs / (target or page)).read_text()
        anchors = {slug(h) for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}
        assert anchor in anchors, f"{page}: {target}#{anchor} not in {sorted(anchors)}"


def test_hypercorn_config_of_the_page_runs_quietly(tmp_path: Path) -> None:
    block = re.search(r"```toml\n(.*?)```", PAGE.read_text(), re.S)
    assert block is not None
    # Flat "key = number" lines (parsed by hand: tomllib needs Python 3.11).
    settings = {
        key: int(value)
        for key, value in re.findall(r"^(\w+) = (\d+)$", block.group(1), re.M)
    }
    assert len(settings) == len(block.group(1).strip().splitlines())
    assert settings == {
        "websocket_max_message_size": 65536,
        "keep_alive_timeout": 5,
        "h11_max_incomplete_size": 16384,
        "websocket_ping_interval": 20,
        "read_timeout": 60,
    }
    path = tmp_path / "hypercorn.toml"
    path.write_text(block.group(1))
    flags = ["--workers", "0", "--config", str(path)]
    with Hypercorn("tests.support.apps:asgi_app", flags) as server:
        connect_and_leave(server)
        output = server.stop()
    assert warnings_in(output) == []
