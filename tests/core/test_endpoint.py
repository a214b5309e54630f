"""ChatEndpoint.serve on asyncio and trio with a fake socket: the frame rules (size,
binary, bad JSON, rate), hooks, authorize, first-message auth and refresh, the
handshake refusals, and tokens kept out of logs and close reasons."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import anyio
import pytest
from anyio.lowlevel import checkpoint

from tests.support.common import (
    SECRET,
    SERVER_CLOSE_CODES,
    frames_of,
    server_close,
)
from tests.support.core import (
    chat,
    handshake,
    sending_to_alice,
    token_for,
    wait_until,
)
from wschat import ChatHooks, Connection, ConnectionManager, Veto
from wschat.auth import Principal
from wschat.connection import ConnectionState
from wschat.errors import SlowConsumer, TokenExpired, TransportClosed
from wschat.ids import ChatId, UserId
from wschat.protocol import JSON
from wschat.testing import mint_token

pytestmark = pytest.mark.anyio


async def test_bad_json_gives_error_frame_then_4400_after_a_burst() -> None:
    async with chat(malformed_limit=3) as open_:
        alice = open_(handshake(token_for("alice")))
        await alice.recv_type("ready")
        alice.t.feed("this is not json")
        err = await alice.recv_type("error")
        assert err["code"] == "bad_json"
        alice.t.feed('{"type": "shout"}')
        assert (await alice.recv_type("error"))["code"] == "unknown_type"
        alice.t.feed("[]")
        assert (await alice.recv_type("error"))["code"] == "bad_frame"
        alice.t.feed("{")
        code, reason = await alice.t.wait_closed()
        assert code == 4400
        assert reason.startswith("bad_request")


async def test_binary_frame_closes_1003() -> None:
    async with chat() as open_:
        alice = open_(handshake(token_for("alice")))
        await alice.recv_type("ready")
        alice.t.feed(b'{"type": "ping"}')
        code, reason = await alice.t.wait_closed()
        assert (code, reason.split(":")[0]) == (1003, "text_only")


async def test_too_big_closes_1009() -> None:
    async with chat(max_message_bytes=100) as open_:
        alice = open_(handshake(token_for("alice")))
        await alice.recv_type("ready")
        alice.send({"type": "message", "body": "x" * 80})  # 110 bytes
        code, reason = await alice.t.wait_closed()
        assert (code, reason.split(":")[0]) == (1009, "message_too_big")
        assert "100" in reason


async def test_too_big_counts_utf8_bytes() -> None:
    async with chat(max_message_bytes=100) as open_:
        alice = open_(handshake(token_for("alice")))
        await alice.recv_type("ready")
        alice.t.feed('{"type":"message","body":"' + "é" * 40 + '"}')  # 107 bytes
        code, _ = await alice.t.wait_closed()
        assert code == 1009


async def test_rate_limit_closes_4429() -> None:
    async with chat(rate_limit=1, rate_burst=3) as open_:
        alice = open_(handshake(token_for("alice")))
        await alice.recv_type("ready")
        for _ in range(6):
            alice.send({"type": "ping"})
        code, reason = await alice.t.wait_closed()
        assert (code, reason.split(":")[0]) == (4429, "rate_limited")
        pongs = [json.loads(f) for f in alice.t.sent if '"pong"' in f]
        assert len(pongs) <= 3


class VetoHooks(ChatHooks):
    async def on_message(self, conn: Connection, body: JSON) -> JSON:
        if body == "spam":
            raise Veto("no spam here", code="spam")
        return {"wrapped": body}


async def test_hook_veto_gives_error_frame_and_keeps_connection() -> None:
    async with chat(hooks=VetoHooks()) as open_:
        alice = open_(handshake(token_for("alice")))
        await alice.recv_type("ready")
        bob = open_(handshake(token_for("bob")))
        await bob.recv_type("ready")
        alice.send({"type": "message", "body": "spam"})
        err = await alice.recv_type("error")
        assert err == {"type": "error", "code": "spam", "message": "no spam here"}
        alice.send({"type": "message", "body": "hello"})
        assert (await alice.recv_type("message"))["body"] == {"wrapped": "hello"}
        # Bob never saw the vetoed message: the first message he gets is the second.
        assert (await bob.recv_type("message"))["body"] == {"wrapped": "hello"}
        assert alice.t.closed is None


class BrokenHooks(ChatHooks):
    async def on_message(self, conn: Connection, body: JSON) -> JSON:
        raise RuntimeError("database password is hunter2")


async def test_hook_raising_closes_1011_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="wschat")
    async with chat(hooks=BrokenHooks()) as open_:
        alice = open_(handshake(token_for("alice")))
        await alice.recv_type("ready")
        bob = open_(handshake(token_for("bob")))
        await bob.recv_type("ready")
        alice.send({"type": "message", "body": "hi"})
        code, reason = await alice.t.wait_closed()
        assert (code, reason.split(":")[0]) == (1011, "internal_error")
        assert "hunter2" not in reason
        # Bob is unaffected.
        bob.send({"type": "ping"})
        assert (await bob.recv_type("pong"))["type"] == "pong"
    logged = [
        r for r in caplog.records if r.exc_info and "hunter2" in str(r.exc_info[1])
    ]
    assert len(logged) == 1
    assert logged[0].levelno == logging.ERROR


async def test_authorize_false_closes_4403_after_accept() -> None:
    def only_bob(principal: Principal, chat_id: ChatId) -> bool:
        return principal.user_id == "bob"

    async with chat(authorize=only_bob) as open_:
        alice = open_(handshake(token_for("alice")))
        code, reason = await alice.t.wait_closed()
        assert (code, reason.split(":")[0]) == (4403, "forbidden")
        assert alice.t.accepted == ["wschat.v1"]  # accepted so the browser can read it
        assert alice.t.sent == []
        bob = open_(handshake(token_for("bob")))
        assert (await bob.recv())["type"] == "ready"


async def test_async_authorize_is_awaited() -> None:
    async def nobody(principal: Principal, chat_id: ChatId) -> bool:
        await checkpoint()
        return False

    async with chat(authorize=nobody) as open_:
        alice = open_(handshake(token_for("alice")))
        assert (await alice.t.wait_closed())[0] == 4403


async def test_literal_test_token_closes_4401_token_malformed() -> None:
    async with chat() as open_:
        client = open_(handshake("test"))
        code, reason = await client.t.wait_closed()
        assert code == 4401
        assert reason.startswith("token_malformed: not a JWT")
        assert client.t.accepted == ["wschat.v1"]


async def test_missing_token_closes_4401_token_missing() -> None:
    async with chat() as open_:
        client = open_(handshake(None))
        code, reason = await client.t.wait_closed()
        assert (code, reason.split(":")[0]) == (4401, "token_missing")


async def test_http_denials_option() -> None:
    async with chat(http_denials=True) as open_:
        client = open_(handshake("test"))
        with anyio.fail_after(2):
            await client.t.ended.wait()
        assert client.t.denied is not None
        assert client.t.denied[0] == 401
        assert client.t.accepted == []


async def test_refused_origin_is_a_bare_403_before_accept() -> None:
    async with chat(allowed_origins=["https://app.example"]) as open_:
        client = open_(handshake(token_for("alice"), origin="https://evil.example"))
        with anyio.fail_after(2):
            await client.t.ended.wait()
        assert client.t.denied == (403, None)
        assert client.t.accepted == []
        ok = open_(handshake(token_for("alice"), origin="https://app.example"))
        assert (await ok.recv())["type"] == "ready"


async def test_invalid_chat_id_closes_4400() -> None:
    async with chat() as open_:
        client = open_(handshake(token_for("alice"), chat_id="../etc"))
        code, reason = await client.t.wait_closed()
        assert (code, reason.split(":")[0]) == (4400, "invalid_chat_id")


async def test_first_message_auth() -> None:
    async with chat(first_message_auth=True, auth_timeout=2) as open_:
        alice = open_(handshake(None))
        alice.send({"type": "auth", "token": token_for("alice")})
        ready = await alice.recv()
        assert (ready["type"], ready["user"]) == ("ready", "alice")
        alice.send({"type": "message", "body": "x"})
        assert (await alice.recv_type("message"))["user"] == "alice"


async def test_first_message_auth_timeout_closes_4408() -> None:
    async with chat(first_message_auth=True, auth_timeout=0.1) as open_:
        alice = open_(handshake(None))
        code, reason = await alice.t.wait_closed()
        assert (code, reason.split(":")[0]) == (4408, "auth_timeout")
        assert alice.t.accepted == ["wschat.v1"]


async def test_first_message_auth_wrong_first_frame() -> None:
    async with chat(first_message_auth=True, auth_timeout=2) as open_:
        alice = open_(handshake(None))
        alice.send({"type": "message", "body": "hi"})
        code, reason = await alice.t.wait_closed()
        assert (code, reason.split(":")[0]) == (4401, "token_missing")
        bob = open_(handshake(None))
        bob.send({"type": "auth", "token": "test"})
        code, reason = await bob.t.wait_closed()
        assert (code, reason.split(":")[0]) == (4401, "token_malformed")


async def test_token_refresh_must_keep_the_same_sub() -> None:
    async with chat() as open_:
        alice = open_(handshake(token_for("alice")))
        await alice.recv_type("ready")
        alice.send({"type": "auth", "token": token_for("alice")})
        ok = await alice.recv_type("auth")
        assert ok["ok"] is True
        alice.send({"type": "auth", "token": token_for("mallory")})
        code, reason = await alice.t.wait_closed()
        assert (code, reason.split(":")[0]) == (4401, "token_invalid")


async def test_every_close_by_the_server_arms_the_drop() -> None:
    async with chat(close_timeout=2.5) as open_:
        kicked = open_(handshake(token_for("a")))
        gone = open_(handshake(token_for("b")))
        for client in (kicked, gone):
            await client.recv_type("ready")
        gone.t.hang_up()
        kicked.send({"type": "message", "body": "x" * (64 * 1024)})
        assert (await kicked.t.wait_closed())[0] == 1009
    assert kicked.t.drops == [2.5]
    assert gone.t.drops == []


async def test_what_a_close_left_queued_waits_at_most_close_timeout() -> None:
    # A client that stopped reading: the frames queued before close_room cannot
    # go, and the connection does not wait for them longer than close_timeout
    # (then the close frame gets its own close_timeout).
    manager = ConnectionManager()
    async with chat(manager, close_timeout=0.3) as open_:
        stuck = open_(handshake(token_for("stuck")))
        await stuck.recv_type("ready")
        (conn,) = manager.connections()
        stuck.t.gate = anyio.Event()  # stops reading
        for n in range(3):
            manager.broadcast_nowait(conn.chat_id, json.dumps({"type": "x", "n": n}))
        started = time.monotonic()
        assert manager.close_room(conn.chat_id) == 1
        with anyio.fail_after(5):
            await wait_until(lambda: conn.state is ConnectionState.RELEASED)
        assert 0.3 <= time.monotonic() - started < 0.6
        stuck.t.gate.set()


@pytest.mark.parametrize("close", ["room", "user", "all"])
async def test_a_send_in_progress_at_a_close_ends_before_the_close_frame(
    close: str,
) -> None:
    # The writer had taken the frames from the outbox and was sending them when
    # the close came: cancelling that send lost them, and nobody was told. The
    # send now ends first (within close_timeout), then the close frame goes.
    manager = ConnectionManager()
    async with chat(manager, close_timeout=5) as open_:
        notices = [json.dumps({"type": "x", "n": n}) for n in range(3)]
        alice, conn, (bob,) = await sending_to_alice(manager, open_, notices, ["bob"])
        assert server_close(manager, conn, close) == (1 if close == "user" else 2)
        # Frames the client sends meanwhile are not read: the connection is closing.
        alice.send({"type": "message", "body": "after the close"})
        await anyio.sleep(0.05)
        alice.t.gate.set()
        started = time.monotonic()
        assert (await alice.t.wait_closed())[0] == SERVER_CLOSE_CODES[close]
        assert time.monotonic() - started < 0.5  # as soon as the send ended
        if close == "user":  # bob is still in the room, and can talk
            bob.send({"type": "message", "body": "bob's"})
            for n in range(3):
                assert (await bob.recv_type("x"))["n"] == n
            assert (await bob.recv_type("message"))["body"] == "bob's"
    sent = [json.loads(text) for text in alice.t.sent]
    assert [f["n"] for f in sent if f["type"] == "x"] == [0, 1, 2]
    for client in (alice, bob):
        assert '"after the close"' not in "".join(client.t.sent)


@pytest.mark.parametrize("why", ["expired", "slow", "gone", "reset", "stuck"])
async def test_a_close_that_cannot_wait_cancels_the_send_in_progress(
    why: str,
) -> None:
    # An expired token (nothing more may go), a slow consumer (its outbox is what
    # it could not take) and a client that is gone do not wait for the send; nor
    # does any close once close_timeout has passed.
    manager = ConnectionManager()
    async with chat(manager, close_timeout=1.0) as open_:
        notice = json.dumps({"type": "x"})
        alice, conn, _ = await sending_to_alice(manager, open_, [notice])
        started = time.monotonic()
        if why == "stuck":
            assert manager.close_room(conn.chat_id) == 1
        else:
            errors: dict[str, Any] = {
                "expired": TokenExpired("expired"),
                "slow": SlowConsumer("full"),
                "reset": TransportClosed(),  # what a transport raises
            }
            conn.abort(errors.get(why))  # "gone": None
        with anyio.fail_after(2):
            await wait_until(lambda: conn.state is ConnectionState.RELEASED)
        waited = time.monotonic() - started
        # At once: well under close_timeout, however loaded the machine.
        assert (1.0 <= waited < 2.0) if why == "stuck" else waited < 0.5
        alice.t.gate.set()
    assert not [t for t in alice.t.sent if '"x"' in t]


async def test_deeply_nested_body_gets_an_error_frame_not_1011(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="wschat")
    depths = [65, 300, 900, *range(950, 1000, 5), 5000]
    async with chat(rate_limit=None, malformed_limit=100) as open_:
        alice = open_(handshake(token_for("alice")))
        await alice.recv_type("ready")
        for depth in depths:
            alice.t.feed('{"type":"message","body":' + "[" * depth + "]" * depth + "}")
            err = await alice.recv_type("error")
            assert err["code"] == "bad_frame", depth
        alice.send({"type": "message", "body": [[["fine"]]]})
        assert (await alice.recv_type("message"))["body"] == [[["fine"]]]
        assert alice.t.closed is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_first_message_auth_frame_over_the_size_limit_closes_1009() -> None:
    async with chat(first_message_auth=True, max_message_bytes=1024) as open_:
        alice = open_(handshake(None))
        alice.send({"type": "auth", "token": token_for("alice"), "pad": "x" * 2000})
        code, reason = await alice.t.wait_closed()
        assert (code, reason.split(":")[0]) == (1009, "message_too_big")


async def test_batch_opt_in_through_the_endpoint() -> None:
    async with chat() as open_:
        alice = open_(
            handshake(token_for("alice"), subprotocols=("wschat.v1", "wschat.batch"))
        )
        # ready and the presence frame queued together, but ready is never in a
        # batch: a client that looks for it among frames must find it alone.
        first = json.loads(await alice.t.next_text())
        assert first["type"] == "ready"
        assert first["batch"] is True
        assert [f["type"] for f in frames_of(await alice.t.next_text())] == ["presence"]
        # The server selects wschat.v1, never the opt-in marker.
        assert alice.t.accepted == ["wschat.v1"]
        alice.send({"type": "message", "body": 1})
        assert frames_of(await alice.t.next_text())[0]["body"] == 1


async def test_token_in_bearer_subprotocol_through_the_endpoint() -> None:
    token = token_for("alice")
    async with chat() as open_:
        alice = open_(handshake(None, subprotocols=("wschat.v1", f"bearer.{token}")))
        assert (await alice.recv())["user"] == "alice"
        assert alice.t.accepted == ["wschat.v1"]
        # The same token in the query too: one token.
        same = open_(handshake(token, subprotocols=("wschat.v1", f"bearer.{token}")))
        assert (await same.recv())["user"] == "alice"
        # Another token in the query: ambiguous, and neither is echoed.
        other = token_for("bob")
        both = open_(handshake(other, subprotocols=("wschat.v1", f"bearer.{token}")))
        code, reason = await both.t.wait_closed()
        assert (code, reason.split(":")[0]) == (4401, "token_ambiguous")
        assert both.t.accepted == ["wschat.v1"]
        assert token not in reason
        assert other not in reason


class ExpiredVerifier:
    """A custom verifier whose principal expired while connected."""

    def verify(self, token: str) -> Principal:
        return Principal(UserId("alice"), expires_at=int(time.time()) - 60)


async def test_a_token_past_its_exp_closes_4401_token_expired_without_a_frame() -> None:
    # The verifier let a token 60 s past its exp in: the connection gets its ready
    # frame, then is closed at once, whether or not it sends anything (it used to
    # live until it sent a message).
    verifier: Any = ExpiredVerifier()
    async with chat(verifier=verifier) as open_:
        alice = open_(handshake("anything"))
        await alice.recv_type("ready")
        code, reason = await alice.t.wait_closed()
        assert (code, reason.split(":")[0]) == (4401, "token_expired")
        # What open() sends before the deadline is set: ready and its own join.
        assert [json.loads(f)["type"] for f in alice.t.sent] == ["ready", "presence"]


async def test_authorize_raising_closes_1011_and_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(principal: Principal, chat_id: ChatId) -> bool:
        raise KeyError("secret-db-row")

    caplog.set_level(logging.WARNING, logger="wschat")
    async with chat(authorize=broken) as open_:
        alice = open_(handshake(token_for("alice")))
        code, reason = await alice.t.wait_closed()
        assert (code, reason.split(":")[0]) == (1011, "internal_error")
        assert "secret-db-row" not in reason
    logged = [r for r in caplog.records if r.exc_info]
    assert len(logged) == 1


class JoinFails(ChatHooks):
    async def on_join(self, conn: Connection) -> None:
        raise RuntimeError("boom")


async def test_on_join_raising_closes_1011() -> None:
    manager = ConnectionManager()
    async with chat(manager, hooks=JoinFails()) as open_:
        alice = open_(handshake(token_for("alice")))
        code, _ = await alice.t.wait_closed()
        assert code == 1011


async def test_first_message_auth_client_leaves_before_auth() -> None:
    async with chat(first_message_auth=True, auth_timeout=2) as open_:
        alice = open_(handshake(None))
        alice.t.hang_up()
        # Returns quietly; chat() checks that nothing was registered or leaked.
    assert alice.t.closed is None
    assert alice.t.sent == []


async def test_tokens_never_reach_the_log_or_the_close_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    now = int(time.time())
    tokens = [
        mint_token(SECRET, "alice", ttl=-3600, now=now),  # expired
        mint_token("another-secret-" + "q" * 40, "alice"),  # wrong key
        mint_token(SECRET, "alice") + "tampered",
        mint_token(SECRET, "bob"),  # accepted
    ]
    async with chat(authorize=lambda p, c: p.user_id == "bob") as open_:
        clients = [open_(handshake(t)) for t in tokens[:3]]
        for client in clients:
            code, _ = await client.t.wait_closed()
            assert code == 4401
        bob = open_(handshake(tokens[3]))
        await bob.recv_type("ready")
        bob.send({"type": "auth", "token": tokens[0]})  # refresh with an expired one
        code, _ = await bob.t.wait_closed()
        assert code == 4401
    texts = [r.getMessage() for r in caplog.records]
    texts += [logging.Formatter().format(r) for r in caplog.records]
    texts += [c for client in [*clients, bob] for c in client.t.sent]
    texts += [str(client.t.closed) for client in [*clients, bob]]
    assert len(caplog.records) >= 3
    for token in tokens:
        for part in (token, token.split(".")[2]):
            assert not any(part in text for text in texts), part
