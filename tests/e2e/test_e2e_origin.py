"""End to end: the Origin check, the one guard a browser gives a WebSocket.

A refused Origin is answered with a bare HTTP 403 before accept (a hostile page learns
nothing) and one WARNING that names the origin and how to allow it. Listed origins,
the site's own origin and non-browser clients (no Origin) get in.
"""

from __future__ import annotations

import logging

import pytest
from websockets.exceptions import InvalidStatus

from tests.support.e2e import (
    Flavor,
    LogRecorder,
    chat_server,
    client,
    next_frame,
    token,
)

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

ALICE = token("alice")
ALLOWED = "https://app.example.com"


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "https://app.example.com:8443", "null"]
)
async def test_refused_origin_gets_403_before_accept(
    flavor: Flavor, origin: str
) -> None:
    with (
        LogRecorder() as logs,
        chat_server(flavor, allowed_origins=[ALLOWED]) as chat,
    ):
        with pytest.raises(InvalidStatus) as refused:
            async with client(chat.url("room1", ALICE), origin=origin):
                pass
        assert refused.value.response.status_code == 403
        # A bare 403: nothing that would help a hostile page.
        assert not refused.value.response.body
        status = await chat.status()
        assert (status["connections"], status["messages"]) == (0, 0)

    warnings = logs.of("wschat", logging.WARNING)
    assert len(warnings) == 1, logs.text()
    line = warnings[0].getMessage()
    assert origin in line
    assert "allowed_origins" in line
    assert ALICE not in logs.text()
    denied = [
        r.getMessage() for r in logs.of("uvicorn.error") if " 403" in r.getMessage()
    ]
    assert len(denied) == 1, logs.text()
    assert "token=[redacted]" in denied[0]
    assert logs.at_least(logging.ERROR) == [], logs.text()


async def test_allowed_origins_pass(flavor: Flavor) -> None:
    with LogRecorder() as logs, chat_server(flavor, allowed_origins=[ALLOWED]) as chat:
        for origin in (ALLOWED, "https://APP.example.com:443", chat.origin, None):
            async with client(chat.url("room1", ALICE), origin=origin) as ws:
                ready = await next_frame(ws, "ready")
                assert ready["user"] == "alice", origin
    assert logs.of("wschat", logging.WARNING) == [], logs.text()


async def test_missing_origin_can_be_refused(flavor: Flavor) -> None:
    with chat_server(flavor, allow_missing_origin=False) as chat:
        with pytest.raises(InvalidStatus) as refused:
            async with client(chat.url("room1", ALICE)):
                pass
        assert refused.value.response.status_code == 403
        # A browser page from the site itself still gets in.
        async with client(chat.url("room1", ALICE), origin=chat.origin) as ws:
            await next_frame(ws, "ready")


async def test_same_origin_can_be_switched_off(flavor: Flavor) -> None:
    with chat_server(flavor, allow_same_origin=False) as chat:
        with pytest.raises(InvalidStatus) as refused:
            async with client(chat.url("room1", ALICE), origin=chat.origin):
                pass
        assert refused.value.response.status_code == 403
