"""docs/clients.md: its Python examples run against a real server, and its tables
are the client's (the reconnect policy, the events, the limits).

The history example needs a server with history; tests/e2e/test_client_resume.py
runs it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.support.client import counted_server
from tests.support.e2e import clients, next_frame, token
from wschat.client import (
    ClientError,
    Event,
    Members,
    close_policy,
    connect,
    policy_for,
)
from wschat.client import events as client_events
from wschat.client.chat import DEFAULT_MAX_EVENTS, DEFAULT_MAX_QUEUE
from wschat.frames import Frame

PAGE = Path(__file__).resolve().parents[2] / "docs" / "clients.md"

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def text() -> str:
    return PAGE.read_text()


def snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", text(), re.DOTALL)


def snippet(name: str) -> dict[str, Any]:
    """Run the page's example that defines ``name``; return its namespace."""
    (code,) = [s for s in snippets() if f"def {name}(" in s]
    namespace: dict[str, Any] = {}
    exec(compile(code, f"docs/clients.md ({name})", "exec"), namespace)
    return namespace


def section(heading: str) -> str:
    return text().split(heading + "\n", 1)[1].split("\n#", 1)[0]


def test_the_page_has_four_python_examples() -> None:
    assert len(snippets()) == 4


async def test_the_connect_example_chats(capsys: pytest.CaptureFixture[str]) -> None:
    (code,) = [s for s in snippets() if "token=token" in s]
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/clients.md (connect)", "exec"), namespace)
    with counted_server() as server:
        await namespace["main"](server.url("lobby"), token("alice"))
        assert server.handshakes == 1
    assert capsys.readouterr().out == "alice: {'text': 'hello'}\n"


async def test_the_token_provider_example_asks_for_the_first_token() -> None:
    (code,) = [s for s in snippets() if "token_provider=login" in s]
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/clients.md (provider)", "exec"), namespace)
    asked: list[str] = []

    async def login() -> str:
        asked.append("bob")
        return token("bob")

    with counted_server() as server:
        await namespace["main"](server.url("lobby"), login)
        assert server.handshakes == 1
    assert asked == ["bob"]


async def test_the_members_example_pages_the_whole_room() -> None:
    everyone = snippet("everyone")["everyone"]
    others = ["bob", "carol", "dave", "erin"]
    with counted_server() as server:
        async with (
            clients([server.url("room", token(user)) for user in others]) as sockets,
            connect(server.url("room"), token=token("alice")) as chat,
        ):
            for ws in sockets:
                await next_frame(ws, "ready")
            asked: list[tuple[str | None, int]] = []
            members = chat.members

            async def counted(cursor: str | None = None, limit: int = 100) -> Members:
                asked.append((cursor, limit))
                return await members(cursor=cursor, limit=limit)

            chat.members = counted  # type: ignore[method-assign]
            # Pages of 2: three requests for five users, each after the last.
            assert await everyone(chat, 2) == ["alice", *others]
            assert [limit for _, limit in asked] == [2, 2, 2]
            assert asked[0][0] is None
            assert None not in [cursor for cursor, _ in asked[1:]]
            asked.clear()
            assert await everyone(chat) == ["alice", *others]
            assert asked == [(None, 100)]


def test_the_reconnect_table_is_the_policy() -> None:
    rows = re.findall(
        r"^\| ([^|]+) \| (retry|refresh_token|stop)[^|]*\| ([^|]*)\|$",
        section("### The reconnect policy"),
        re.MULTILINE,
    )
    assert len(rows) == 8
    named: dict[tuple[int, str], tuple[str, tuple[int, int] | None]] = {}
    for closes, action, backoff in rows:
        ms: tuple[int, int] | None = None
        if action == "retry":
            base, cap = re.findall(r"([\d.]+) s", backoff)
            ms = (int(float(base) * 1000), int(float(cap) * 1000))
        for match in re.finditer(r"(\d{4})(?: `(\w+)`)?", closes):
            named[int(match.group(1)), match.group(2) or ""] = (action, ms)
    # Every entry of the data is a row of the table: by its reason, else its code.
    for entry in close_policy():
        row = named.get((entry.code, entry.reason)) or named[entry.code, ""]
        assert row == (entry.action, entry.backoff_ms), entry
    for code, reason in named:
        assert any(e.code == code for e in close_policy()), code
        if reason:
            assert policy_for(code, reason).reason == reason, (code, reason)
    assert "3 times at most" in section("### The reconnect policy")
    assert policy_for(4408).max_attempts == 3
    assert policy_for(4999).action == "stop"  # "any other code"


def test_the_events_table_names_every_event_type() -> None:
    types = set(
        re.findall(r"^\| `(\w+)` \| `(\w+)` \|", section("### Events"), re.MULTILINE)
    )
    classes = {cls.__name__: cls for cls in (*Frame.__args__, *Event.__args__)}
    for kind, name in types:
        assert classes[name].type == kind, name
    assert {name for _, name in types} == set(classes) - {"OtherFrame", "Pong"}
    assert {"Disconnected", "Reconnected"} <= set(client_events.__all__)


def test_the_limits_the_page_states() -> None:
    assert DEFAULT_MAX_QUEUE == 100
    assert "(at most 100,\n`max_queue=`)" in text()
    assert DEFAULT_MAX_EVENTS == 1000
    assert "at most 1,000 events (`max_events`)" in text()


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_the_page_says_asyncio_only_and_trio_gets_that_error() -> None:
    """The issue asks "asyncio (and trio if websockets allows; say which)": the page
    says asyncio only, and quotes the start of the error a trio program gets."""
    page = " ".join(text().split())
    assert "runs on **asyncio only**: `websockets` has no trio support" in page
    (quoted,) = re.findall(r'raises `ClientError\("([^"]*?) \.\.\."\)`', page)
    with pytest.raises(ClientError) as raised:
        async with connect("ws://127.0.0.1:1/ws/chat/lobby", token="t"):
            pytest.fail("entered under trio")
    assert str(raised.value).startswith(quoted)
