"""End to end: every refused connection says why, to the client and to the log.

The original bug: a token that was the literal string ``test`` reached the browser as a
bare 1006. Through a real uvicorn and the real ``websockets`` client, each refusal must
arrive as a close code and a reason the client can read, and as exactly one WARNING
that names the reason code and a token fingerprint, never the token.
"""

from __future__ import annotations

import logging
import time

import pytest
from websockets.exceptions import InvalidStatus

from tests.support.common import SECRET
from tests.support.e2e import (
    Chat,
    Flavor,
    LogRecorder,
    chat_server,
    client,
    closed,
    token,
)
from wschat import Principal, token_fingerprint
from wschat.ids import ChatId

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

VALID = token("alice")
EXPIRED = token("alice", now=time.time() - 7200, ttl=60)


def only_public_rooms(principal: Principal, chat_id: ChatId) -> bool:
    return chat_id != "secret"


def url_for(chat: Chat, case: str) -> tuple[str, str | None]:
    """The URL a case connects to, and the token it carries (if any)."""
    base = chat.server.ws + "/ws/chat/"
    if case == "malformed":
        return base + "room1?token=test", "test"
    if case == "missing":
        return base + "room1", None
    if case == "expired":
        return base + f"room1?token={EXPIRED}", EXPIRED
    if case == "forbidden":
        return base + f"secret?token={VALID}", VALID
    if case == "invalid_chat_id":
        return base + f"bad%20id?token={VALID}", VALID
    if case == "duplicated":
        return base + f"room1?token={VALID}&token={VALID}", VALID
    raise AssertionError(case)


CASES = [
    ("malformed", 4401, "token_malformed"),
    ("missing", 4401, "token_missing"),
    ("expired", 4401, "token_expired"),
    ("forbidden", 4403, "forbidden"),
    ("invalid_chat_id", 4400, "invalid_chat_id"),
    ("duplicated", 4401, "token_malformed"),
]


@pytest.mark.parametrize(("case", "code", "reason"), CASES, ids=[c[0] for c in CASES])
async def test_refusal_reaches_client_and_log(
    flavor: Flavor, case: str, code: int, reason: str
) -> None:
    with (
        LogRecorder() as logs,
        chat_server(flavor, authorize=only_public_rooms) as chat,
    ):
        url, tok = url_for(chat, case)
        async with client(url) as ws:
            result = await closed(ws)
        # What the browser sees: a code and a reason, not 1006, and no ready frame.
        assert result.code == code
        assert result.reason.startswith(reason + ":")
        assert len(result.reason.encode()) <= 123
        assert result.frames == []
        status = await chat.status()
        assert status["connections"] == 0

    warnings = logs.of("wschat", logging.WARNING)
    assert len(warnings) == 1, logs.text()
    line = warnings[0].getMessage()
    assert f"code={code}" in line
    assert reason in line
    assert logs.at_least(logging.ERROR) == [], logs.text()
    accepted = [r for r in logs.of("uvicorn.error") if "[accepted]" in r.getMessage()]
    assert len(accepted) == 1, logs.text()
    if tok is not None:
        assert token_fingerprint(tok) in line
        assert tok not in logs.text()
        assert "token=[redacted]" in accepted[0].getMessage()


async def test_the_literal_token_test_is_explained(flavor: Flavor) -> None:
    """The issue's exact report: ``?token=test`` gives 4401 and says what is wrong."""
    with chat_server(flavor) as chat:
        async with client(chat.url("room1", "test")) as ws:
            result = await closed(ws)
    assert result.code == 4401
    assert result.reason.startswith("token_malformed")
    assert "not a JWT" in result.reason


async def test_a_token_signed_with_another_key_is_invalid(flavor: Flavor) -> None:
    forged = token("alice").rsplit(".", 1)[0] + ".c2lnbmF0dXJl"
    assert SECRET not in forged
    with chat_server(flavor) as chat:
        async with client(chat.url("room1", forged)) as ws:
            result = await closed(ws)
    assert (result.code, result.reason.split(":")[0]) == (4401, "token_invalid")


async def test_http_denials_answer_before_accept(flavor: Flavor) -> None:
    """With ``http_denials`` a non-browser client gets an HTTP status and a reason."""
    with (
        LogRecorder() as logs,
        chat_server(flavor, http_denials=True) as chat,
        pytest.raises(InvalidStatus) as refused,
    ):
        async with client(chat.url("room1", "test")):
            pass
    response = refused.value.response
    assert response.status_code == 401
    assert response.body is not None
    assert response.body.decode().startswith("token_malformed")
    assert len(logs.of("wschat", logging.WARNING)) == 1
    assert "test" not in "".join(
        r.getMessage()
        for r in logs.of("uvicorn.error")
        if "WebSocket" in r.getMessage()
    )


@pytest.mark.parametrize(
    ("query", "offered", "code"),
    [
        ("", ["wschat.v1", "bearer.test"], "token_malformed"),
        # The same token in both is one token; another one is ambiguous.
        (f"?token={EXPIRED}", ["wschat.v1", f"bearer.{VALID}"], "token_ambiguous"),
        (
            "",
            ["wschat.v1", f"bearer.{VALID}", f"bearer.{VALID}"],
            "token_malformed",
        ),
    ],
    ids=["malformed", "query-and-subprotocol", "two-subprotocols"],
)
async def test_subprotocol_token_refusals(
    flavor: Flavor, query: str, offered: list[str], code: str
) -> None:
    with LogRecorder() as logs, chat_server(flavor) as chat:
        url = chat.server.ws + "/ws/chat/room1" + query
        async with client(url, subprotocols=offered) as ws:
            # A browser fails a handshake that selects none of its subprotocols.
            assert ws.subprotocol == "wschat.v1"
            result = await closed(ws)
    assert result.code == 4401
    assert result.reason.startswith(code)
    assert len(logs.of("wschat", logging.WARNING)) == 1
    assert VALID not in logs.text()
    assert EXPIRED not in logs.text()
