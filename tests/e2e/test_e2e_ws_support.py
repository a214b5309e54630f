"""A server that cannot serve WebSockets is named in one WARNING.

uvicorn with ``--ws none``, or with neither ``websockets`` nor ``wsproto`` installed,
passes every WebSocket handshake on to the app as a plain HTTP request, and the
client gets HTTP 404. ``chat_app`` reads uvicorn's config at startup (its lifespan);
``chat_routes`` and ``chat_router`` see no lifespan, and say it at the first
handshake that reaches them as plain HTTP. Real uvicorn servers in a subprocess.
"""

from __future__ import annotations

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from tests.support.common import free_port
from tests.support.e2e import token
from tests.support.log_servers import Subprocess

pytestmark = pytest.mark.e2e

APPS = {
    "chat_app": "tests.support.apps:asgi_app",
    "chat_routes": "tests.support.apps:starlette_app",
    "chat_router": "tests.support.apps:fastapi_app",
}
NONE_WARNING = (
    "wschat: uvicorn cannot serve WebSockets: it runs with --ws none; drop that flag "
    "(the default is auto). Until then every chat socket is answered with HTTP 404 "
    "before wschat sees it (docs/troubleshooting.md)"
)
MISSING_WARNING = (
    "wschat: uvicorn cannot serve WebSockets: neither websockets nor wsproto is "
    "installed; pip install 'uvicorn[standard]' (or 'wschat[server]'). Until then "
    "every chat socket is answered with HTTP 404 before wschat sees it "
    "(docs/troubleshooting.md)"
)
PLAIN_WARNING = (
    "wschat: a WebSocket handshake for '/ws/chat/lobby' reached the app as a plain "
    "HTTP request: this server cannot serve WebSockets, and answers every chat "
    "socket with HTTP 404. Install a server that speaks WebSocket: pip install "
    "'uvicorn[standard]' (or 'wschat[server]'), and do not run uvicorn with "
    "--ws none (docs/troubleshooting.md)"
)


def uvicorn(app: str, port: int, *extra: str) -> list[str]:
    return ["uvicorn", app, "--host", "127.0.0.1", "--port", str(port), *extra]


def try_to_chat(port: int) -> list[int]:
    """Two handshakes (token in the query, then as a subprotocol): their statuses."""
    url = f"ws://127.0.0.1:{port}/ws/chat/lobby"
    statuses = []
    for kwargs in (
        {"uri": f"{url}?token={token('alice')}"},
        {
            "uri": url,
            "subprotocols": [
                Subprotocol("wschat.v1"),
                Subprotocol(f"bearer.{token('bob')}"),
            ],
        },
    ):
        with pytest.raises(InvalidStatus) as refused:
            connect(open_timeout=5, **kwargs)
        statuses.append(refused.value.response.status_code)
    return statuses


def wschat_warnings(output: str) -> list[str]:
    return [line for line in output.splitlines() if "cannot serve WebSockets" in line]


@pytest.mark.parametrize("adapter", APPS)
def test_ws_none_is_one_warning(adapter: str) -> None:
    port = free_port()
    argv = uvicorn(APPS[adapter], port, "--ws", "none", "--ws-max-size", "65536")
    with Subprocess(argv, port) as server:
        assert try_to_chat(port) == [404, 404]
    (warning,) = wschat_warnings(server.output)
    if adapter == "chat_app":
        # At startup, before any client tried: the lifespan read uvicorn's config.
        assert warning.endswith(NONE_WARNING)
        startup = server.output.index("Application startup complete")
        assert server.output.index(NONE_WARNING) < startup
    else:
        assert warning.endswith(PLAIN_WARNING)
    # No token in any line: the handshakes that reached the app were redacted.
    assert token("alice").rsplit(".", 1)[1] not in server.output
    assert "Traceback" not in server.output, server.output


def test_no_websocket_library_is_one_warning_at_startup() -> None:
    port = free_port()
    argv = ["tests.support.no_ws_libs", APPS["chat_app"]]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--ws-max-size", "65536"]
    with Subprocess(argv, port) as server:
        assert try_to_chat(port) == [404, 404]
    assert wschat_warnings(server.output) == [MISSING_WARNING], server.output
    # uvicorn's own hint, for the same cause.
    assert "No supported WebSocket library detected" in server.output


@pytest.mark.parametrize("adapter", APPS)
def test_a_server_that_serves_websockets_gets_no_warning(adapter: str) -> None:
    port = free_port()
    argv = uvicorn(APPS[adapter], port, "--ws", "websockets-sansio")
    with (
        Subprocess([*argv, "--ws-max-size", "65536"], port) as server,
        connect(
            f"ws://127.0.0.1:{port}/ws/chat/lobby?token={token('alice')}",
            open_timeout=5,
        ) as ws,
    ):
        assert '"type":"ready"' in str(ws.recv(timeout=5))
    assert wschat_warnings(server.output) == []
    assert "reached the app as a plain HTTP request" not in server.output
