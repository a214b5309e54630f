"""The endpoint does what the admission decision says, on fake sockets (both backends).

tests/core/test_admission.py tests the decision itself; here the endpoint's part: accept
or deny, the close code, the log lines (a crashing verifier's traceback), and the
count of sockets waiting for their ``auth`` frame on every way out of the wait.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from tests.support.common import SECRET, FakeTransport
from wschat import (
    ChatOptions,
    ConnectionManager,
    Principal,
    TokenVerifier,
    token_fingerprint,
)
from wschat.endpoint import ChatEndpoint
from wschat.errors import Forbidden
from wschat.ids import ChatId
from wschat.testing import mint_token
from wschat.transport import Handshake

pytestmark = pytest.mark.anyio

VERIFIER = TokenVerifier(SECRET, algorithms=["HS256"])


class Crashing:
    """A verifier with a bug: it raises something other than an AuthenticationError."""

    def __init__(self, after: int = 0) -> None:
        self.calls = 0
        self.after = after

    def verify(self, token: str) -> Principal:
        self.calls += 1
        if self.calls > self.after:
            raise RuntimeError("session store unreachable")
        return VERIFIER.verify(token)


def handshake(query: str = "", origin: str | None = None) -> Handshake:
    headers = {"host": "chat.example"}
    if origin is not None:
        headers["origin"] = origin
    return Handshake("lobby", query.encode(), headers, ["wschat.v1"], "ws", "1.2.3.4:5")


@asynccontextmanager
async def endpoint(
    verifier: Any = VERIFIER, manager: ConnectionManager | None = None, **options: Any
) -> AsyncIterator[Callable[[Handshake], FakeTransport]]:
    """Yield ``open(handshake) -> transport``, each socket served in a task."""
    chat = ChatEndpoint(
        manager or ConnectionManager(), verifier, ChatOptions(**options)
    )
    transports: list[FakeTransport] = []
    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:

                def open_(hs: Handshake) -> FakeTransport:
                    transport = FakeTransport()
                    transports.append(transport)
                    tg.start_soon(chat.serve, hs, transport)
                    return transport

                yield open_
                for transport in transports:
                    transport.hang_up()
    finally:
        for transport in transports:
            transport.aclose_streams()


def crash_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno == logging.ERROR
        and r.getMessage() == "wschat: the verifier raised (not an AuthenticationError)"
    ]


def assert_logged_crash(caplog: pytest.LogCaptureFixture) -> None:
    (record,) = crash_lines(caplog)
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)
    assert "session store unreachable" in caplog.text  # the traceback is there


async def test_a_crashing_verifier_closes_1011_and_logs_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = mint_token(SECRET, "alice")
    async with endpoint(Crashing()) as open_:
        socket = open_(handshake(f"token={token}"))
        await socket.ended.wait()
    assert socket.accepted == ["wschat.v1"]
    assert socket.closed == (1011, "internal_error: the server hit an unexpected error")
    assert_logged_crash(caplog)
    assert token not in caplog.text


async def test_a_verifier_crashing_on_the_auth_frame_closes_1011(
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = ConnectionManager()
    async with endpoint(Crashing(), manager, first_message_auth=True) as open_:
        socket = open_(handshake())
        socket.feed(json.dumps({"type": "auth", "token": mint_token(SECRET, "a")}))
        await socket.ended.wait()
    assert socket.closed == (1011, "internal_error: the server hit an unexpected error")
    assert_logged_crash(caplog)
    assert manager.stats().pending_auth == 0


async def test_a_verifier_crashing_on_a_refresh_closes_1011(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with endpoint(Crashing(after=1)) as open_:
        socket = open_(handshake(f"token={mint_token(SECRET, 'alice')}"))
        assert (await socket.next_frame())["type"] == "ready"
        socket.feed(json.dumps({"type": "auth", "token": mint_token(SECRET, "alice")}))
        await socket.ended.wait()
    assert socket.closed == (1011, "internal_error: the server hit an unexpected error")
    assert_logged_crash(caplog)


async def test_a_refused_origin_is_denied_before_accept_and_never_verified(
    caplog: pytest.LogCaptureFixture,
) -> None:
    verifier = Crashing()
    async with endpoint(verifier) as open_:
        socket = open_(handshake("token=abc", origin="https://evil.example"))
        await socket.ended.wait()
    assert (socket.accepted, socket.denied) == ([], (403, None))
    assert verifier.calls == 0
    assert "wschat refused origin 'https://evil.example' for chat 'lobby'" in (
        caplog.text
    )


async def test_the_refusal_line_names_the_token_by_fingerprint(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="wschat")
    async with endpoint() as open_:
        socket = open_(handshake("token=abc&token=def"))
        await socket.ended.wait()
    assert socket.closed is not None
    assert socket.closed[0] == 4401
    assert (
        "code=4401 reason='token_malformed: token parameter given 2 times; send it "
        "once' token=sha256:ba7816bf8f01,sha256:cb8379ac2098 client=1.2.3.4:5"
    ) in caplog.text


async def test_a_room_refusal_names_the_token_by_fingerprint(
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = mint_token(SECRET, "alice")
    async with endpoint(authorize=lambda principal, chat_id: False) as open_:
        socket = open_(handshake(f"token={token}"))
        await socket.ended.wait()
    assert socket.accepted == ["wschat.v1"]
    assert socket.closed is not None
    assert socket.closed[0] == 4403
    assert "code=4403 reason='forbidden" in caplog.text
    assert f"token={token_fingerprint(token)} client=1.2.3.4:5" in caplog.text
    assert token not in caplog.text


def send_auth(token: str) -> Callable[[FakeTransport], None]:
    return lambda socket: socket.feed(json.dumps({"type": "auth", "token": token}))


async def test_the_wait_for_auth_frames_is_counted_and_capped_on_every_way_out() -> (
    None
):
    """max_pending_auth=1: a second waiting socket is refused with 1013 while the
    first waits; the count is back to 0 however the wait ended (authenticated,
    refused, gone, timed out), and the next socket may wait again."""
    manager = ConnectionManager()
    options = {"first_message_auth": True, "max_pending_auth": 1, "auth_timeout": 0.3}
    endings: list[tuple[Callable[[FakeTransport], None], tuple[int, str] | None]] = [
        (send_auth(mint_token(SECRET, "a")), None),
        (send_auth("junk"), (4401, "token_malformed")),
        (FakeTransport.hang_up, None),
        (lambda socket: None, (4408, "auth_timeout")),
    ]
    async with endpoint(VERIFIER, manager, **options) as open_:
        for end, closed in endings:
            first = open_(handshake())
            await anyio.wait_all_tasks_blocked()
            assert manager.stats().pending_auth == 1
            second = open_(handshake())
            await second.ended.wait()
            assert second.closed == (
                1013,
                "try_again_later: too many sockets waiting to authenticate "
                "(max_pending_auth=1)",
            )
            end(first)
            if closed is not None:
                await first.ended.wait()
                assert first.closed is not None
                assert (first.closed[0], first.closed[1].split(":")[0]) == closed
            await anyio.wait_all_tasks_blocked()
            assert manager.stats().pending_auth == 0
            first.hang_up()
            await anyio.wait_all_tasks_blocked()
    assert manager.stats().pending_auth == 0


class Quiet:
    """A transport that records nothing: what a refusal leaves behind is wschat's."""

    async def accept(self, subprotocol: str | None) -> None:
        pass

    async def receive(self) -> str | bytes | None:
        return None

    async def send_text(self, text: str) -> None:
        pass

    async def send_many(self, texts: Sequence[str]) -> None:
        pass

    async def close(self, code: int, reason: str) -> None:
        pass

    async def deny(self, status: int, body: str | None) -> None:
        pass


def refuse_room(principal: Principal, chat_id: ChatId) -> bool:
    if chat_id == "vault":
        raise Forbidden("the vault is closed")
    return chat_id != "attic"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_refused_handshakes_leave_no_reference_cycles(backend: str) -> None:
    """A refusal keeps its error's words, not its traceback: a traceback holds the
    frames that decided, which hold the refusal, and a flood of refused handshakes
    would become work for the cyclic GC (it was one cycle of about 40 objects per
    refusal)."""
    good = mint_token(SECRET, "alice")
    expired = mint_token(SECRET, "alice", ttl=-60)
    queries = [
        "token=junk",  # the verifier: malformed
        f"token={good[:-4]}AAAA",  # the verifier: bad signature
        f"token={expired}",  # the verifier: expired
        "token=a&token=b",  # find_token: given twice
        "",  # no token
    ]
    handshakes = [handshake(q) for q in queries]
    handshakes += [
        Handshake("a b", b"token=junk", {"host": "h"}, ()),  # invalid chat id
        handshake("token=junk", origin="https://evil.example"),  # origin
        Handshake("attic", f"token={good}".encode(), {"host": "h"}, ()),  # False
        Handshake("vault", f"token={good}".encode(), {"host": "h"}, ()),  # raises
    ]
    chat = ChatEndpoint(
        ConnectionManager(),
        VERIFIER,
        ChatOptions(authorize=refuse_room, allowed_origins=None),
    )
    logging.getLogger("wschat").disabled = True

    def cyclic_garbage(rounds: int) -> int:
        async def serve_all() -> None:
            for _ in range(rounds):
                for hs in handshakes:
                    await chat.serve(hs, Quiet())

        gc.collect()
        gc.disable()
        try:
            anyio.run(serve_all, backend=backend)
            return gc.collect()
        finally:
            gc.enable()

    try:
        cyclic_garbage(1)  # first-use caches
        assert cyclic_garbage(20) == cyclic_garbage(0)
    finally:
        logging.getLogger("wschat").disabled = False
