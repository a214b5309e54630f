"""docs/troubleshooting.md: for each symptom, what ``wschat doctor`` prints.

Every row of the page's tables with a "`wschat doctor` prints" column is run: the
row's cause is set up for real (a refused Origin, a path that is no chat route,
``http_denials``, uvicorn without WebSocket support or with ``--ws none``, a proxy
that answers plain HTTP, a server that is down, each close code doctor can meet), and
each quoted piece of that cell (``...`` at its end cut off) must be in what doctor
printed, with exit status 0 where the cell says ``(exit 0)`` and 1 elsewhere.
"""

from __future__ import annotations

import contextlib
import functools
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.e2e.test_cli_doctor import run
from tests.support.common import SECRET, free_port, serve
from tests.support.e2e import WAIT, Chat, chat_server
from tests.support.server_process import ServerProcess
from wschat import ConnectionManager
from wschat.testing import mint_token

pytestmark = pytest.mark.e2e

PAGE = Path(__file__).resolve().parents[2] / "docs" / "troubleshooting.md"
COLUMN = "`wschat doctor` prints"
Result = subprocess.CompletedProcess[str]


def doctor_rows() -> list[tuple[str, str]]:
    """(first cell, doctor cell) of each row of a table with the doctor column."""
    rows = []
    lines = PAGE.read_text().splitlines()
    for i, line in enumerate(lines):
        if not (line.startswith("| ") and COLUMN in line):
            continue
        column = line[2:-2].split(" | ").index(COLUMN)
        for row in lines[i + 2 :]:
            if not row.startswith("| "):
                break
            cells = row[2:-2].split(" | ")
            rows.append((cells[0], cells[column]))
    return rows


def good() -> str:
    return mint_token(SECRET, "alice")


def doctor(chat: Chat, *args: str, room: str = "lobby") -> Result:
    return run("doctor", chat.url(room), *args)


@contextlib.contextmanager
def held(url: str) -> Iterator[ClientConnection]:
    """A socket held open while doctor runs."""
    with connect(url, open_timeout=WAIT) as ws:
        yield ws


# -- the causes ------------------------------------------------------------------------


def healthy() -> list[Result]:
    with chat_server("asgi") as chat:
        return [doctor(chat, "--token", good())]


def origin() -> list[Result]:
    with chat_server("asgi") as chat:
        return [doctor(chat, "--token", good(), "--origin", "https://evil.example")]


def not_a_route() -> list[Result]:
    with chat_server("asgi") as chat:
        url = chat.url("lobby").replace("/ws/chat/", "/api/chat/")
        return [run("doctor", url, "--token", good())]


def http_denials() -> list[Result]:
    with chat_server("asgi", http_denials=True) as chat:
        return [doctor(chat, "--token", "test")]


def uvicorn_process(*args: str) -> list[Result]:
    port = free_port()
    command = [*args, "tests.support.apps:asgi_app", "--host", "127.0.0.1"]
    with ServerProcess([*command, "--port", str(port)], port):
        return [run("doctor", f"ws://127.0.0.1:{port}/ws/chat/a", "--token", good())]


def no_websocket_library() -> list[Result]:
    return uvicorn_process(sys.executable, "-m", "tests.support.no_ws_libs")


def ws_none() -> list[Result]:
    return uvicorn_process(sys.executable, "-m", "uvicorn", "--ws", "none")


def plain_http() -> list[Result]:
    async def plain(scope: dict[str, object], receive: object, send: object) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200})  # type: ignore[operator]
            await send({"type": "http.response.body", "body": b"hi"})  # type: ignore[operator]

    with serve(plain) as server:
        return [run("doctor", f"{server.ws}/ws/chat/a", "--token", good())]


def down() -> list[Result]:
    return [run("doctor", f"ws://127.0.0.1:{free_port()}/ws/chat/a")]


def unreachable() -> list[Result]:
    return [*down(), run("doctor", "ws://no-such-host.invalid/ws/chat/a")]


def tokens() -> list[Result]:
    with chat_server("asgi") as chat:
        expired = mint_token(SECRET, "alice", ttl=-60)
        return [doctor(chat, "--token", "test"), doctor(chat, "--token", expired)]


def forbidden() -> list[Result]:
    with chat_server("asgi", authorize=lambda principal, chat_id: False) as chat:
        return [doctor(chat, "--token", good())]


def invalid_chat_id() -> list[Result]:
    with chat_server("asgi") as chat:
        return [doctor(chat, "--token", good(), room="-not-a-room")]


def auth_frame_only() -> list[Result]:
    with chat_server("asgi", token_sources=("auth_frame",)) as chat:
        return [doctor(chat, "--token", good())]


def too_many_connections() -> list[Result]:
    manager = ConnectionManager(max_connections_per_user=1)
    with chat_server("asgi", manager) as chat, held(chat.url("lobby", good())) as ws:
        assert '"ready"' in str(ws.recv(WAIT))
        return [doctor(chat, "--token", good())]


def authorize_raises() -> list[Result]:
    def broken(principal: object, chat_id: str) -> bool:
        raise RuntimeError("a bug in authorize")

    with chat_server("asgi", authorize=broken) as chat:
        return [doctor(chat, "--token", good())]


def pending_auth_full() -> list[Result]:
    with (
        chat_server("asgi", token_sources=("auth_frame",), max_pending_auth=1) as chat,
        held(chat.url("lobby")),
    ):
        status = f"{chat.server.http}/ws/status"
        deadline = time.monotonic() + WAIT
        while httpx.get(status, timeout=WAIT).json()["pending_auth"] < 1:
            assert time.monotonic() < deadline, "the held socket never waited for auth"
            time.sleep(0.02)
        return [doctor(chat, "--token", good())]


# -- which cause each row is about -----------------------------------------------------

CAUSES: dict[str, Callable[[], list[Result]]] = {
    "`wschat refused origin": origin,
    'only `"WebSocket /some/path" 403`': not_a_route,
    "`wschat refused connection: ... code=4401": http_denials,
    "`Unsupported upgrade request`": no_websocket_library,
    "`wschat: uvicorn cannot serve WebSockets`": ws_none,
    '`"GET /ws/chat/... HTTP/1.1" 404`': plain_http,
    "nothing at all": unreachable,
    "every idle connection drops": healthy,
    "all clients drop at once": down,
    "all clients get 1012": healthy,
    "4401": tokens,
    "4403 `forbidden`": forbidden,
    "4400 `invalid_chat_id`": invalid_chat_id,
    "4400 `bad_request`": healthy,
    "4408 `auth_timeout`": auth_frame_only,
    "4429 `rate_limited`": healthy,
    "4429 `too_many_connections`": too_many_connections,
    "1003 `text_only`": healthy,
    "1009 `message_too_big`": healthy,
    "1009 with another reason": healthy,
    "1011 `internal_error`": authorize_raises,
    "1013 `slow_consumer`": healthy,
    "1013 `try_again_later`": pending_auth_full,
}


def cause_of(first_cell: str) -> Callable[[], list[Result]]:
    found = [cause for key, cause in CAUSES.items() if first_cell.startswith(key)]
    assert len(found) == 1, f"no one cause for the row {first_cell!r}"
    return found[0]


@functools.cache
def printed(cause: Callable[[], list[Result]]) -> tuple[Result, ...]:
    return tuple(cause())


def test_every_row_has_a_cause_and_every_cause_a_row() -> None:
    rows = doctor_rows()
    assert len(rows) == len(CAUSES) == 23
    for first, cell in rows:
        cause_of(first)
        assert re.search(r"`[^`]+`", cell), f"no doctor output quoted for {first!r}"
    assert {k for k in CAUSES if any(f.startswith(k) for f, _ in rows)} == set(CAUSES)


@pytest.mark.parametrize(
    ("first", "cell"), doctor_rows(), ids=[f[:40] for f, _ in doctor_rows()]
)
def test_doctor_prints_what_the_row_says(first: str, cell: str) -> None:
    results = printed(cause_of(first))
    everything = "\n".join(r.stdout for r in results)
    for piece in re.findall(r"`([^`]+)`", cell):
        assert piece.removesuffix("...").rstrip() in everything, (piece, everything)
    expected = 0 if "(exit 0)" in cell else 1
    assert [r.returncode for r in results] == [expected] * len(results), everything
