"""docs/deployment.md, checked: each server setting does what the page says.

The server runs as a deployment runs it, ``python -m uvicorn tests.apps:asgi_app``
with the page's flags in a subprocess (hypercorn too where the page covers it), and
its memory is read from ``/proc``. The flags come from the page itself, so the page
cannot drift from what is tested.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from wschat.asgi_server import ServerSettings, message_limit_warning, server_settings
from wschat.testing import mint_token

from .server_support import (
    DEFLATE_OFFER,
    WS_IMPLS,
    Hypercorn,
    RawClient,
    ServerProcess,
    Uvicorn,
    raw_upgrade,
    rss_mib,
    unfinished_message,
)
from .support import SECRET

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "deployment.md"
#: Connections that each send an unfinished message in the memory tests.
ATTACKERS = 20


def checklist_command() -> list[str]:
    """The uvicorn command line of the page's production checklist."""
    text = PAGE.read_text()
    match = re.search(r"```bash\n(uvicorn [^`]*?)\n```", text)
    assert match, "docs/deployment.md has no ```bash uvicorn ...``` block"
    return shlex.split(match.group(1).replace("\\\n", " "))


def checklist_flags() -> list[str]:
    """The checklist's flags, without the app and without --host/--port."""
    words = checklist_command()[2:]  # drop "uvicorn myapp:app"
    flags: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in ("--host", "--port"):
            skip = True
        else:
            flags.append(word)
    return flags


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
    with Uvicorn("tests.apps:asgi_app", ["--log-level", "info"]) as server:
        # At startup (chat_app sees the lifespan), before any connection.
        assert len(warnings_in(server.output())) == 1, server.output()
        connect_and_leave(server)
        output = server.stop()
    (line,) = warnings_in(output)
    # The page shows the line exactly as it is printed.
    assert f"```\n{line}\n```" in PAGE.read_text()


@pytest.mark.parametrize("app", ["starlette_app", "fastapi_app"])
def test_framework_apps_warn_at_the_first_connection(app: str) -> None:
    with Uvicorn(f"tests.apps:{app}", ["--log-level", "info"]) as server:
        # Starlette runs the lifespan: wschat sees the server at the first socket.
        assert warnings_in(server.output()) == []
        connect_and_leave(server)
        output = server.stop()
    assert len(warnings_in(output)) == 1, output


@pytest.mark.parametrize("app", ["asgi_app", "starlette_app"])
def test_checklist_flags_raise_no_warning(app: str) -> None:
    with Uvicorn(f"tests.apps:{app}", checklist_flags()) as server:
        connect_and_leave(server)
        output = server.stop()
    assert warnings_in(output) == []
    assert "WARNING" not in output


def hypercorn_config(tmp_path: Path, **settings: object) -> list[str]:
    path = tmp_path / "hypercorn.toml"
    path.write_text("".join(f"{k} = {v!r}\n" for k, v in settings.items()))
    return ["--workers", "0", "--config", str(path)]


def test_hypercorn_default_limit_is_warned_once(tmp_path: Path) -> None:
    with Hypercorn("tests.apps:asgi_app", hypercorn_config(tmp_path)) as server:
        connect_and_leave(server)
        output = server.stop()
    (line,) = warnings_in(output)
    assert "hypercorn accepts WebSocket messages of up to 16777216 bytes" in line
    assert "Set websocket_max_message_size = 65536" in line


def test_hypercorn_with_the_limit_set_is_quiet(tmp_path: Path) -> None:
    flags = hypercorn_config(tmp_path, websocket_max_message_size=65536)
    with Hypercorn("tests.apps:asgi_app", flags) as server:
        connect_and_leave(server)
        output = server.stop()
    assert warnings_in(output) == []


def test_hypercorn_behind_starlette_cannot_be_read_and_says_nothing(
    tmp_path: Path,
) -> None:
    # Starlette wraps send, and hypercorn's receive is a queue's: nothing to read,
    # so nothing is guessed (docs/deployment.md says so).
    with Hypercorn("tests.apps:starlette_app", hypercorn_config(tmp_path)) as server:
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
