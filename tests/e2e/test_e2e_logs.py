"""End to end: what the server log says, and what it never says.

One WARNING per reason per interval for refused connections, naming the reason code
and a token fingerprint; never the token itself, neither in wschat's lines nor in
uvicorn's ``[accepted]`` and ``403`` lines (the adapter rewrites
``scope["query_string"]`` before uvicorn logs it).
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
    closed,
    messages,
    next_frame,
    send_message,
    token,
)
from wschat import token_fingerprint

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


async def test_tokens_never_reach_a_log_line(flavor: Flavor) -> None:
    good, other, bad = token("alice"), token("bob"), token("carol", ttl=-60)
    with LogRecorder() as logs, chat_server(flavor) as chat:
        # Accepted, with the token in the query and with other parameters around it.
        async with client(chat.url("room1", good, batch="0")) as ws:
            await next_frame(ws, "ready")
            await send_message(ws, "hi")
            await messages(ws, 1)
        # Accepted, with the token in a subprotocol.
        async with client(
            chat.url("room1"), subprotocols=["wschat.v1", f"bearer.{other}"]
        ) as ws:
            await next_frame(ws, "ready")
        # Refused after accept (expired), and refused before accept (origin).
        async with client(chat.url("room1", bad)) as ws:
            assert (await closed(ws)).code == 4401
        with pytest.raises(InvalidStatus):
            async with client(chat.url("room1", good), origin="http://evil.example"):
                pass
        await chat.wait_connections(0)

    text = logs.text()
    for secret in (good, other, bad):
        assert secret not in text
        # Not even a recognisable part of it (the signature is the secret part).
        assert secret.rsplit(".", 1)[1] not in text
    lines = [r.getMessage() for r in logs.of("uvicorn.error")]
    accepted = [line for line in lines if "[accepted]" in line]
    denied = [line for line in lines if line.endswith(" 403")]
    assert len(accepted) == 3, text
    assert len(denied) == 1, text
    for line in accepted[:1] + accepted[2:] + denied:
        assert "token=[redacted]" in line, line
    assert "batch=0" in accepted[0]
    warnings = logs.of("wschat", logging.WARNING)
    assert len(warnings) == 2, text
    assert token_fingerprint(bad) in warnings[0].getMessage()
    assert "token_expired" in warnings[0].getMessage()
    assert "evil.example" in warnings[1].getMessage()


async def test_a_burst_of_refusals_is_one_warning_per_reason(flavor: Flavor) -> None:
    """A flood must not become a flood of log lines: the first refusal of each reason
    is logged in full, the others only counted (tests/core/test_refusal_log.py has the
    count line and the interval, on a fake clock)."""
    junk = [f"not-a-jwt-{n}" for n in range(30)]
    expired = [token(f"user{n}", ttl=-60) for n in range(5)]
    with LogRecorder() as logs, chat_server(flavor) as chat:
        for tok in junk + expired:
            async with client(chat.url("room1", tok)) as ws:
                assert (await closed(ws)).code == 4401
        with pytest.raises(InvalidStatus):
            async with client(chat.url("room1", junk[0]), origin="http://evil.example"):
                pass
    warnings = [r.getMessage() for r in logs.of("wschat", logging.WARNING)]
    assert len(warnings) == 3, logs.text()
    assert "reason='token_malformed" in warnings[0]
    assert token_fingerprint(junk[0]) in warnings[0]
    assert "reason='token_expired" in warnings[1]
    assert token_fingerprint(expired[0]) in warnings[1]
    assert warnings[2].startswith("wschat refused origin 'http://evil.example'")
    for tok in junk + expired:
        assert tok not in logs.text()


async def test_unknown_socket_path_does_not_log_the_token() -> None:
    """The raw ASGI app also answers sockets on paths it does not serve."""
    tok = token("alice")
    with LogRecorder() as logs, chat_server("asgi") as chat:
        for path in ("/ws/elsewhere", "/other"):
            with pytest.raises(InvalidStatus) as refused:
                async with client(f"{chat.server.ws}{path}?token={tok}"):
                    pass
            assert refused.value.response.status_code == 403
    assert tok not in logs.text()
    lines = [r.getMessage() for r in logs.of("uvicorn.error")]
    denied = [line for line in lines if line.endswith(" 403")]
    assert len(denied) == 2, logs.text()
    assert all("token=[redacted]" in line for line in denied)
