"""Revocation across real processes on one Redis: ``manager.revoke_user`` on one
process ends the user's sessions on both with 4401 ``token_revoked``.

Two ``uvicorn benchmarks/redis_app.py`` processes on the shared Redis (a unique key
prefix per test); the admin route ``POST /admin/revoke/{user}`` calls
``manager.revoke_user`` on the process it reaches.
"""

from __future__ import annotations

import anyio
import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.support.redis_processes import WAIT, Client, Server, opened

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.e2e]


async def closing(client: Client) -> tuple[int | None, str | None]:
    """Read until the server closes the socket; its close code and reason."""
    with anyio.fail_after(WAIT):
        try:
            while True:
                await client.next()
        except ConnectionClosed:
            return client.ws.close_code, client.ws.close_reason


async def test_revoke_user_on_one_process_closes_sessions_on_both(
    servers: list[Server],
) -> None:
    a, b = servers
    room = "revocation"
    async with (
        opened(a, "victim", room) as v1,
        opened(b, "victim", room) as v2,
        opened(b, "bystander", room) as other,
    ):
        assert v1.node != v2.node
        async with httpx.AsyncClient(timeout=5) as http:
            answer = await http.post(f"{a.http}/admin/revoke/victim")
        assert answer.json()["closed_here"] == 1
        for tab in (v1, v2):
            assert await closing(tab) == (
                4401,
                "token_revoked: this token or session was revoked; sign in again",
            )
        left = await other.until("presence", leaves=["victim"])
        assert left["count"] == 1
        await other.say("still here")
        assert "still here" in await other.messages(1)
