"""Per-user limits: the rate bucket shared by a user's connections, the connection
cap, the cap on sockets waiting for first-message auth, and ``ready`` never in a batch.

The bucket and the store run on a frozen clock with literal values. The endpoint
tests run the core on asyncio and trio with an in-memory socket; the same behaviour
through a real server is in ``test_e2e_limits.py``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from tests.support.common import SECRET, FakeTransport, frames_of
from wschat import ChatOptions, ConfigurationError, ConnectionManager, TokenVerifier
from wschat.auth import Principal
from wschat.endpoint import ChatEndpoint
from wschat.ids import ChatId, UserId
from wschat.limits import RateBucket, UserRates
from wschat.manager import DEFAULT_MAX_CONNECTIONS_PER_USER
from wschat.protocol import encode_batch
from wschat.testing import mint_token
from wschat.transport import Handshake

ROOM = ChatId("room-1")


class Clock:
    """A frozen monotonic clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def set(self, now: float) -> None:
        self.now = now


def drain(bucket: RateBucket) -> int:
    """Take tokens until the bucket refuses; how many it gave."""
    taken = 0
    while bucket.take():
        taken += 1
        assert taken <= 10_000, "the bucket never empties"
    return taken


# -- RateBucket on a frozen clock ---------------------------------------------------


def test_bucket_gives_exactly_its_burst_then_refuses() -> None:
    bucket = RateBucket(100.0, 200, Clock())
    assert drain(bucket) == 200
    assert not bucket.take()


def test_bucket_refills_at_its_rate_and_never_past_its_burst() -> None:
    clock = Clock(0.0)
    bucket = RateBucket(100.0, 200, clock)
    drain(bucket)
    clock.set(0.0099)  # 0.99 of a token at 100/s: not yet
    assert not bucket.take()
    clock.set(0.01)  # 1 token
    assert bucket.take()
    assert not bucket.take()
    clock.set(0.0625)  # 5.25 tokens
    assert drain(bucket) == 5
    clock.advance(3600.0)  # an hour refills to the burst, not beyond
    assert drain(bucket) == 200


# -- UserRates: one bucket per user, kept until it has refilled ---------------------


def test_a_users_connections_share_one_bucket() -> None:
    rates: UserRates[str] = UserRates(100.0, 200, Clock())
    first = rates.acquire("alice")
    second = rates.acquire("alice")
    assert first is second
    assert first.holders == 2
    assert rates.acquire("bob") is not first
    assert len(rates) == 2


def test_reconnecting_does_not_refill_the_bucket() -> None:
    clock = Clock()
    rates: UserRates[str] = UserRates(100.0, 200, clock)
    for _ in range(5):
        bucket = rates.acquire("mallory")
        if bucket.level == 200.0:
            assert drain(bucket) == 200  # only the first connection finds it full
        else:
            assert drain(bucket) == 0
        rates.release("mallory", bucket)
    assert len(rates) == 1


def test_a_released_bucket_is_kept_for_exactly_the_time_it_takes_to_refill() -> None:
    clock = Clock()
    rates: UserRates[str] = UserRates(100.0, 200, clock)
    assert rates.keep == 2.0  # 200 frames at 100/s
    bucket = rates.acquire("alice")
    drain(bucket)
    rates.release("alice", bucket)
    clock.advance(1.999)
    again = rates.acquire("alice")
    assert again is bucket  # still kept: 199.9 tokens, not 200
    assert drain(again) == 199
    rates.release("alice", again)
    clock.advance(2.0)
    rates.acquire("bob")  # expiry runs on acquire and release
    assert len(rates) == 1, "alice's refilled bucket is forgotten"
    fresh = rates.acquire("alice")
    assert fresh is not bucket
    assert drain(fresh) == 200  # a new bucket is what a refilled one would be


def test_an_earlier_release_does_not_drop_a_bucket_released_again_later() -> None:
    clock = Clock()
    rates: UserRates[str] = UserRates(100.0, 200, clock)
    bucket = rates.acquire("alice")
    rates.release("alice", bucket)  # may go at t+2.0
    clock.advance(1.5)
    assert rates.acquire("alice") is bucket
    drain(bucket)
    rates.release("alice", bucket)  # may go at t+3.5 only
    clock.advance(0.5)  # t+2.0: the first entry is due, but stale
    rates.acquire("bob")
    assert rates.acquire("alice") is bucket
    assert drain(bucket) == 50  # 0.5 s of refill, not a new full bucket


def test_a_held_bucket_is_never_dropped() -> None:
    clock = Clock()
    rates: UserRates[str] = UserRates(100.0, 200, clock)
    first = rates.acquire("alice")
    second = rates.acquire("alice")
    rates.release("alice", first)
    clock.advance(60.0)
    rates.acquire("bob")
    assert rates.acquire("alice") is second


def test_memory_is_bounded_no_entry_per_user_forever() -> None:
    clock = Clock()
    rates: UserRates[str] = UserRates(100.0, 200, clock)
    for i in range(10_000):
        user = f"u{i}"
        rates.release(user, rates.acquire(user))
        clock.advance(0.001)
    # Only users who left in the last 2 s are remembered.
    assert len(rates) == 2_001
    clock.advance(2.0)
    rates.release("last", rates.acquire("last"))
    assert len(rates) == 1


# -- defaults and validation, literal values ----------------------------------------


def test_defaults() -> None:
    options = ChatOptions()
    assert (options.rate_limit, options.rate_burst) == (100.0, 200)
    assert options.max_pending_auth == 1000
    assert DEFAULT_MAX_CONNECTIONS_PER_USER == 16
    assert ConnectionManager().max_connections_per_user == 16
    assert (
        ConnectionManager(max_connections_per_user=None).max_connections_per_user
        is None
    )
    assert ConnectionManager().stats().pending_auth == 0


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "16"])
def test_connection_cap_must_be_a_positive_int(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_connections_per_user"):
        ConnectionManager(max_connections_per_user=bad)


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, "10"])
def test_pending_auth_cap_must_be_a_positive_int(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_pending_auth"):
        ChatOptions(max_pending_auth=bad)


def test_smallest_caps_are_accepted() -> None:
    assert ConnectionManager(max_connections_per_user=1).max_connections_per_user == 1
    assert ChatOptions(max_pending_auth=1).max_pending_auth == 1
    assert ChatOptions(max_pending_auth=None).max_pending_auth is None


def test_begin_auth_counts_up_to_the_cap() -> None:
    manager = ConnectionManager()
    assert manager.begin_auth(2)
    assert manager.begin_auth(2)
    assert not manager.begin_auth(2)
    assert manager.stats().pending_auth == 2
    manager.end_auth()
    assert manager.stats().pending_auth == 1
    assert manager.begin_auth(2)
    assert manager.begin_auth(None)
    assert manager.stats().pending_auth == 3


# -- the endpoint, on asyncio and trio ----------------------------------------------


def handshake(
    token: str | None, subprotocols: tuple[str, ...] = ("wschat.v1",)
) -> Handshake:
    query = f"token={token}".encode() if token is not None else b""
    return Handshake(
        ROOM, query, {"host": "chat.example"}, list(subprotocols), "ws", "1.2.3.4:5"
    )


def token_for(user: str) -> str:
    return mint_token(SECRET, user, ttl=600)


Open = Callable[[Handshake], FakeTransport]


@asynccontextmanager
async def serving(
    manager: ConnectionManager | None = None, **options: Any
) -> AsyncIterator[tuple[Open, ChatEndpoint]]:
    """Serve each handshake given to ``open_`` in a task; check nothing leaks."""
    manager = manager if manager is not None else ConnectionManager()
    endpoint = ChatEndpoint(
        manager, TokenVerifier(SECRET, algorithms=["HS256"]), ChatOptions(**options)
    )
    transports: list[FakeTransport] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:

            def open_(hs: Handshake) -> FakeTransport:
                transport = FakeTransport()
                transports.append(transport)
                tg.start_soon(endpoint.serve, hs, transport)
                return transport

            yield open_, endpoint
            for transport in transports:
                transport.hang_up()
    for transport in transports:
        transport.aclose_streams()
    assert len(manager) == 0, "a connection outlived its socket"
    assert manager.stats().pending_auth == 0


async def frame_of(transport: FakeTransport, kind: str) -> dict[str, Any]:
    while True:
        for frame in frames_of(await transport.next_text()):
            if frame["type"] == kind:
                return frame


async def pongs(transport: FakeTransport, count: int) -> None:
    for _ in range(count):
        await frame_of(transport, "pong")


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll a count no event announces, bounded."""
    with anyio.fail_after(5):
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.005)


def ping(transport: FakeTransport, count: int = 1) -> None:
    for _ in range(count):
        transport.feed('{"type": "ping"}')


@pytest.mark.anyio
async def test_reconnecting_does_not_refill_the_rate_limit() -> None:
    # 0.01 frames/s: no token comes back during the test, so counts are exact.
    async with serving(rate_limit=0.01, rate_burst=5) as (open_, endpoint):
        first = open_(handshake(token_for("mallory")))
        await frame_of(first, "ready")
        ping(first, 3)
        await pongs(first, 3)
        first.hang_up()
        await wait_until(lambda: not endpoint.manager.connections())
        second = open_(handshake(token_for("mallory")))
        await frame_of(second, "ready")
        ping(second, 2)  # the 4th and 5th frame of the burst: served
        await pongs(second, 2)
        ping(second)  # the 6th: over the user's burst, on a new socket
        code, reason = await second.wait_closed()
        assert (code, reason) == (4429, "rate_limited: at most 0.01 frames/s per user")
        # Another user is not affected.
        bob = open_(handshake(token_for("bob")))
        await frame_of(bob, "ready")
        ping(bob, 5)
        await pongs(bob, 5)


@pytest.mark.anyio
async def test_a_users_open_connections_share_the_rate_limit() -> None:
    async with serving(rate_limit=0.01, rate_burst=4) as (open_, _):
        tabs = [open_(handshake(token_for("alice"))) for _ in range(2)]
        for tab in tabs:
            await frame_of(tab, "ready")
        ping(tabs[0], 2)
        await pongs(tabs[0], 2)
        ping(tabs[1], 2)
        await pongs(tabs[1], 2)
        ping(tabs[1])  # 5th frame of the user: refused on whichever socket sent it
        code, reason = await tabs[1].wait_closed()
        assert (code, reason.split(":")[0]) == (4429, "rate_limited")
        assert tabs[0].closed is None


@pytest.mark.anyio
async def test_the_default_cap_refuses_the_17th_connection_of_a_user() -> None:
    manager = ConnectionManager()
    async with serving(manager) as (open_, _):
        tabs = [open_(handshake(token_for("alice"))) for _ in range(16)]
        for tab in tabs:
            await frame_of(tab, "ready")
        extra = open_(handshake(token_for("alice")))
        code, reason = await extra.wait_closed()
        assert (code, reason) == (
            4429,
            "too_many_connections: at most 16 connections per user",
        )
        assert extra.accepted == ["wschat.v1"]  # a browser can read the code
        assert [t.closed for t in tabs] == [None] * 16
        # Another user is not affected; one tab closing makes room again.
        await frame_of(open_(handshake(token_for("bob"))), "ready")
        tabs[0].hang_up()
        await wait_until(lambda: len(manager.user_connections(UserId("alice"))) == 15)
        await frame_of(open_(handshake(token_for("alice"))), "ready")


@pytest.mark.anyio
async def test_pending_auth_is_counted_and_capped() -> None:
    manager = ConnectionManager()
    async with serving(
        manager, first_message_auth=True, auth_timeout=5, max_pending_auth=2
    ) as (open_, _):
        waiting = [open_(handshake(None)) for _ in range(2)]
        await wait_until(lambda: manager.stats().pending_auth == 2)
        third = open_(handshake(None))
        code, reason = await third.wait_closed()
        assert (code, reason) == (
            1013,
            "try_again_later: too many sockets waiting to authenticate "
            "(max_pending_auth=2)",
        )
        assert third.accepted == ["wschat.v1"]  # accepted, so a browser reads it
        assert manager.stats().pending_auth == 2
        # One authenticates: it becomes a connection and frees its place.
        waiting[0].feed(json.dumps({"type": "auth", "token": token_for("alice")}))
        await frame_of(waiting[0], "ready")
        assert (manager.stats().pending_auth, manager.stats().connections) == (1, 1)
        # One vanishes while waiting: its place is freed too.
        waiting[1].hang_up()
        await wait_until(lambda: manager.stats().pending_auth == 0)
        # One sends a bad token: refused, and its place is freed.
        bad = open_(handshake(None))
        await wait_until(lambda: manager.stats().pending_auth == 1)
        bad.feed(json.dumps({"type": "auth", "token": "test"}))
        code, _ = await bad.wait_closed()
        assert code == 4401
        assert manager.stats().pending_auth == 0
        again = open_(handshake(None))
        await wait_until(lambda: manager.stats().pending_auth == 1)
        again.feed(json.dumps({"type": "auth", "token": token_for("bob")}))
        await frame_of(again, "ready")
        assert manager.stats().pending_auth == 0


@pytest.mark.anyio
async def test_auth_timeout_frees_the_pending_place() -> None:
    manager = ConnectionManager()
    async with serving(manager, first_message_auth=True, auth_timeout=0.2) as (
        open_,
        _,
    ):
        late = open_(handshake(None))
        await wait_until(lambda: manager.stats().pending_auth == 1)
        code, _ = await late.wait_closed()
        assert code == 4408
        assert manager.stats().pending_auth == 0


@pytest.mark.anyio
async def test_pending_auth_refusal_with_http_denials_is_503() -> None:
    manager = ConnectionManager()
    async with serving(
        manager, first_message_auth=True, max_pending_auth=1, http_denials=True
    ) as (open_, _):
        assert manager.begin_auth(None)  # one socket already waits
        refused = open_(handshake(None))
        with anyio.fail_after(5):
            await refused.ended.wait()
        manager.end_auth()
    assert refused.denied == (
        503,
        "try_again_later: too many sockets waiting to authenticate "
        "(max_pending_auth=1)",
    )
    assert refused.accepted == []


# -- ready is never inside a batch ---------------------------------------------------


@pytest.mark.anyio
async def test_batch_client_gets_ready_alone_then_batches() -> None:
    async with serving() as (open_, _):
        alice = open_(handshake(token_for("alice"), ("wschat.v1", "wschat.batch")))
        first = json.loads(await alice.next_text())
        assert first["type"] == "ready"
        assert first["batch"] is True
        # Its own join came right behind ready; it was not folded into it.
        assert [f["type"] for f in frames_of(await alice.next_text())] == ["presence"]


@pytest.mark.anyio
async def test_ready_is_alone_when_room_traffic_queued_behind_it() -> None:
    manager = ConnectionManager(presence=False, history=False)
    transport = FakeTransport()
    traffic = [json.dumps({"type": "notice", "n": n}) for n in range(10)]

    def ready(conn: Any) -> str:
        return json.dumps({"type": "ready", "user": conn.user_id})

    conn = manager.connect(
        Principal(UserId("bob")), ROOM, batch=True, first_frame=ready
    )
    for frame in traffic:  # the room was busy between connect and the first send
        assert manager.broadcast_nowait(ROOM, frame) == 1
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await conn.open(transport, tg)  # sends what is queued, from this task
    manager.disconnect(conn)
    conn.release()
    transport.aclose_streams()
    assert transport.sent == [ready(conn), encode_batch(traffic)]


@pytest.mark.anyio
async def test_each_mounted_endpoint_has_its_own_buckets() -> None:
    # docs/options.md: the rate is per process and per mounted endpoint.
    manager = ConnectionManager()
    verifier = TokenVerifier(SECRET, algorithms=["HS256"])
    options = ChatOptions(rate_limit=0.01, rate_burst=2)
    first, second = (ChatEndpoint(manager, verifier, options) for _ in range(2))
    assert first.rates is not None
    assert second.rates is not None
    a = first.rates.acquire(UserId("alice"))
    b = second.rates.acquire(UserId("alice"))
    assert a is not b
    assert first.rates.acquire(UserId("alice")) is a
    assert ChatEndpoint(manager, verifier, ChatOptions(rate_limit=None)).rates is None


def test_rate_micro_benchmark_runs() -> None:
    from benchmarks import micro

    result = micro.rate(frames=200, rounds=1)
    assert result["ns_per_take"] > 0
    assert result["us_per_frame_rate_on"] > 0
