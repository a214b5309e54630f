"""A Redis that hangs (SIGSTOP), then runs again (SIGCONT): issue 10, bug 2.

Each test runs its own ``redis-server`` on a free loopback port and pauses it for a
second or two during traffic. What a paused Redis does: its sockets stay open and
the kernel still takes bytes for it, so nothing fails, nothing is answered, and what
it received runs when it resumes. The promises checked (docs/scaling.md, "When Redis
goes away"):

- the hang is noticed within ``op_timeout`` of the first unanswered call, and within
  ``ping_interval + op_timeout`` without traffic; ``/ws/status`` says ``degraded``
  from that moment;
- every message is either received by every member, or that member gets a ``resync``
  after it, on every process, however short the hang;
- the sender gets exactly one ``delivery_degraded`` per message Redis did not
  publish (a plain subscriber with no timeouts records what Redis published: the
  ground truth), naming its ``id``, and none for a message Redis published late;
- after SIGCONT the backplane is healthy again and traffic flows.

Two managers in this test process stand for two processes; the last test repeats
the main case with two uvicorn processes and real ``websockets`` clients.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import TaskGroup
from redis import asyncio as aioredis

from tests.support.cluster import ROOM, Client, Sink, cluster, ready_frame
from tests.support.redis_server import RedisServer, unique_prefix
from wschat import ConnectionManager
from wschat.auth import Principal
from wschat.backplane.redis import RedisBackplane
from wschat.errors import ConfigurationError
from wschat.ids import ChatId, UserId
from wschat.status import status_payload

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

OP_TIMEOUT = 0.4
PING_INTERVAL = 0.3
#: Slack for a noisy 2-core machine on top of each documented bound.
SLACK = 1.0
WAIT = 10.0


def backplane(url: str, prefix: str, **options: Any) -> RedisBackplane:
    knobs: dict[str, Any] = {
        "op_timeout": OP_TIMEOUT,
        "ping_interval": PING_INTERVAL,
        "reconnect_min": 0.05,
        "reconnect_max": 0.3,
    }
    return RedisBackplane(url, prefix=prefix, **{**knobs, **options})


class TimedSink(Sink):
    """A :class:`Sink` that also notes when each frame reached the client."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[float, dict[str, Any]]] = []

    async def send_text(self, text: str) -> None:
        self.log.append((time.monotonic(), json.loads(text)))
        await super().send_text(text)

    async def send_many(self, texts: Sequence[str]) -> None:
        for text in texts:
            await self.send_text(text)

    def of(self, kind: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, f) for t, f in self.log if f["type"] == kind]


class Member(Client):
    sink: TimedSink

    def __init__(self, manager: ConnectionManager, user: str, room: ChatId) -> None:
        conn = manager.connect(
            Principal(UserId(user)), room, first_frame=ready_frame(manager)
        )
        super().__init__(manager, conn)
        self.sink = TimedSink()

    def ids(self) -> set[str]:
        return {f["id"] for _, f in self.sink.of("message")}

    def bodies(self) -> list[Any]:
        return [f["body"] for _, f in self.sink.of("message")]

    def id_of(self, body: Any) -> str:
        """The id the server gave this member's own message ``body``."""
        return next(
            str(f["id"]) for _, f in self.sink.of("message") if f["body"] == body
        )

    def resynced_after(self, moment: float) -> bool:
        return any(t > moment for t, _ in self.sink.of("resync"))

    def degraded(self) -> list[dict[str, Any]]:
        return [f for _, f in self.sink.of("error") if f["code"] == "delivery_degraded"]


def own_join(client: Member) -> bool:
    return heard_join(client, client.conn.user_id)


def heard_join(client: Member, user: str) -> bool:
    """Whether ``client`` was told that ``user`` joined its room."""
    return any(user in f["joins"] for _, f in client.sink.of("presence"))


def member(tg: TaskGroup, manager: ConnectionManager, user: str, room: str) -> Member:
    client = Member(manager, user, ChatId(room))
    tg.start_soon(client.conn.run_writer, client.sink)
    return client


@contextlib.asynccontextmanager
async def ground_truth(url: str, channels: list[str]) -> AsyncIterator[set[str]]:
    """Ids of the chat messages Redis publishes on ``channels`` (no timeouts)."""
    published: set[str] = set()
    client = aioredis.Redis.from_url(url)
    pubsub = client.pubsub()
    await pubsub.subscribe(*channels)

    async def read() -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                kind, _, payload = message["data"].split(b"|", 2)
                if kind == b"m":
                    published.add(json.loads(payload)["id"])

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            yield published
            tg.cancel_scope.cancel()
    finally:
        await pubsub.aclose()
        await client.aclose()


class Timeline:
    """When each manager first reported itself unhealthy (polled every 5 ms)."""

    def __init__(self, managers: dict[str, ConnectionManager]) -> None:
        self.managers = managers
        self.first_degraded: dict[str, float] = {}
        self.statuses: dict[str, str] = {}

    async def watch(self) -> None:
        while True:
            for name, manager in self.managers.items():
                if name not in self.first_degraded:
                    payload = status_payload(manager)
                    if payload["status"] != "ok":
                        self.first_degraded[name] = time.monotonic()
                        self.statuses[name] = payload["status"]
            await anyio.sleep(0.005)


async def wait_healthy(*managers: ConnectionManager) -> None:
    with anyio.fail_after(WAIT):
        while not all(m.backplane_health()["healthy"] for m in managers):  # noqa: ASYNC110
            await anyio.sleep(0.01)


async def until(check: Any, what: str) -> None:
    """Poll a cheap in-memory condition, bounded."""
    try:
        with anyio.fail_after(WAIT):
            while not check():  # noqa: ASYNC110
                await anyio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"not within {WAIT:g} s: {what}") from None


def assert_nothing_lost_silently(
    members: Sequence[Member], sent: Sequence[tuple[float, str]]
) -> None:
    """Each member got each message (by id), or a resync after it was sent."""
    for client in members:
        got = client.ids()
        silent = [i for t, i in sent if i not in got and not client.resynced_after(t)]
        assert not silent, f"{client.conn.user_id} silently missed {silent[:5]}"


def assert_one_degraded_per_unpublished(
    sender: Member, sent: Sequence[tuple[float, str]], published: set[str]
) -> None:
    unpublished = {i for _, i in sent} - published
    errors = sender.degraded()
    assert len(errors) == len(unpublished), "one delivery_degraded per unpublished"
    named = [f["id"] for f in errors]
    assert len(named) == len(set(named)), "a message got delivery_degraded twice"
    assert set(named) == unpublished, (
        f"delivery_degraded for published {sorted(set(named) - unpublished)[:5]}, "
        f"none for unpublished {sorted(unpublished - set(named))[:5]}"
    )


async def test_a_hang_during_traffic_is_detected_signalled_and_recovered(
    own_redis: RedisServer,
) -> None:
    prefix = unique_prefix()
    url = own_redis.url
    channels = [f"{prefix}r:{ROOM}", f"{prefix}r:gone"]
    async with (
        ground_truth(url, channels) as published,
        cluster(backplane(url, prefix), backplane(url, prefix)) as (tg, (a, b)),
    ):
        alice, carol = member(tg, a, "alice", ROOM), member(tg, a, "carol", ROOM)
        bob = member(tg, b, "bob", ROOM)
        # A room whose publish fails and that empties on a before Redis is back.
        dave, erin = member(tg, a, "dave", "gone"), member(tg, b, "erin", "gone")
        for client in (alice, carol, bob, dave, erin):
            await client.ready()
        timeline = Timeline({"a": a, "b": b})
        said: list[tuple[float, int]] = []
        sending = True

        async def talk() -> None:
            n = 0
            while sending:
                said.append((time.monotonic(), n))
                alice.say(n)
                n += 1
                await anyio.sleep(0.02)

        tg.start_soon(timeline.watch)
        tg.start_soon(talk)
        await until(lambda: len(said) >= 10, "traffic before the hang")
        own_redis.pause()
        paused_at = time.monotonic()
        dave.say("lost with its room")
        gone_at = time.monotonic()
        await until(lambda: "a" in timeline.first_degraded, "a degraded")
        await until(lambda: "b" in timeline.first_degraded, "b degraded")
        await anyio.sleep(0.6)  # traffic goes on while Redis hangs
        dave.leave()
        own_redis.resume()
        await wait_healthy(a, b)
        resumed_count = len(said)
        await until(lambda: len(said) >= resumed_count + 10, "traffic after")
        sending = False
        last = said[-1][1]
        for client in (alice, carol, bob):
            await until(lambda c=client: last in c.bodies(), "caught up")
        sent = [(t, alice.id_of(n)) for t, n in said]
        # Detection: within op_timeout for the sender's process (its publishes
        # time out), within ping_interval + op_timeout for the idle one.
        assert timeline.statuses == {"a": "degraded", "b": "degraded"}
        assert timeline.first_degraded["a"] - paused_at < OP_TIMEOUT + SLACK
        bound = PING_INTERVAL + OP_TIMEOUT + SLACK
        assert timeline.first_degraded["b"] - paused_at < bound
        assert alice.degraded(), "messages sent during the hang were not published"
        first_error = min(t for t, f in alice.sink.of("error"))
        assert first_error - paused_at < OP_TIMEOUT + SLACK
        assert_nothing_lost_silently([alice, carol, bob], sent)
        assert_one_degraded_per_unpublished(alice, sent, published)
        # The room that emptied on a: erin on b still learns she missed a message.
        gone = [(gone_at, dave.id_of("lost with its room"))]
        assert_one_degraded_per_unpublished(dave, gone, published)
        await until(lambda: erin.resynced_after(gone_at), "erin resynced")
        # Recovered: traffic flows both ways again.
        bob.say("back")
        await until(lambda: "back" in alice.bodies(), "traffic flows again")
        assert status_payload(a)["status"] == status_payload(b)["status"] == "ok"


@pytest.mark.parametrize("hold", [0.0, 5.5], ids=["short", "past-5s"])
async def test_a_process_that_never_noticed_is_told_to_resync(
    own_redis: RedisServer, hold: float
) -> None:
    """b's link survives the hang untouched; only a's publishes failed.

    ``past-5s``: redis-py's own default socket timeout is 5 s; with it, the message
    in flight when Redis stopped was dropped by redis-py (counted as not published)
    and then run by Redis when it resumed: one ``delivery_degraded`` too many.
    """
    prefix = unique_prefix()
    url = own_redis.url
    quiet = backplane(url, prefix, ping_interval=60.0)  # b never pings in this test
    # Nor renews presence (every ttl / 3): b sends Redis nothing during the hang.
    async with cluster(backplane(url, prefix), quiet, presence_ttl=300) as (
        tg,
        (a, b),
    ):
        alice, bob = member(tg, a, "alice", ROOM), member(tg, b, "bob", ROOM)
        dave, erin = member(tg, a, "dave", "gone"), member(tg, b, "erin", "gone")
        for client in (alice, bob, dave, erin):
            await client.ready()
        # ``ready`` comes before each process leases and announces its joins: wait
        # until every announcement went through Redis (each heard on the other
        # process), or b would still be publishing one when Redis hangs.
        for client, other in ((alice, bob), (bob, alice), (dave, erin), (erin, dave)):
            user = other.conn.user_id
            await until(lambda c=client, u=user: heard_join(c, u), f"{user} joined")
        alice.say("before")
        await until(lambda: len(bob.sink.of("message")) == 1, "before")
        reconnects = b.backplane_health()["reconnects"]
        own_redis.pause()
        hung_at = time.monotonic()
        alice.say("in flight")  # sent to the paused Redis: runs when it resumes
        await until(lambda: not a.backplane_health()["healthy"], "a degraded")
        refused_at = time.monotonic()
        alice.say("refused")  # not sent at all while Redis hangs
        dave.say("refused too")
        await until(lambda: len(alice.degraded()) == 1, "refused at once")
        assert time.monotonic() - refused_at < 0.5  # no op_timeout to wait
        await until(lambda: len(dave.degraded()) == 1, "refused at once")
        dave.leave()  # its room empties on a before Redis is back
        await anyio.sleep(hold)
        own_redis.resume()
        await until(lambda: bob.resynced_after(hung_at), "bob told to resync")
        await until(lambda: erin.resynced_after(hung_at), "erin told to resync")
        await wait_healthy(a, b)
        assert b.backplane_health()["reconnects"] == reconnects, "b's link never broke"
        assert bob.bodies() == ["before", "in flight"]
        # Exactly one delivery_degraded, for the message Redis never got.
        errors = alice.degraded()
        assert len(errors) == 1
        assert errors[0]["id"] == alice.id_of("refused")
        await anyio.sleep(2 * OP_TIMEOUT)
        assert len(alice.degraded()) == 1, "the in-flight message was published"
        bob.say("after")
        await until(lambda: "after" in alice.bodies(), "traffic flows again")


async def test_a_publish_redis_never_answers_is_given_up_and_reported(
    own_redis: RedisServer,
) -> None:
    """Redis answers everything but publishes (``CLIENT PAUSE ... WRITE``).

    The held publish is in doubt; once the listener hears Redis again it gets
    ``5 * op_timeout`` more, then its connection is dropped (Redis then never runs
    it) and it counts as not published: one ``delivery_degraded``, and a ``resync``
    for the members elsewhere once publishes go through again.
    """
    prefix = unique_prefix()
    url = own_redis.url
    give_up = 5 * OP_TIMEOUT
    pause_ms = int((give_up + 2.0) * 1000)
    admin = aioredis.Redis.from_url(url)
    try:
        async with (
            ground_truth(url, [f"{prefix}r:{ROOM}"]) as published,
            cluster(backplane(url, prefix), backplane(url, prefix)) as (tg, (a, b)),
        ):
            alice, bob = member(tg, a, "alice", ROOM), member(tg, b, "bob", ROOM)
            for client in (alice, bob):
                await client.ready()
            # Both leases taken (presence scripts are paused by WRITE too).
            for client in (alice, bob):
                await until(lambda c=client: own_join(c), "joined")
            await admin.execute_command(  # type: ignore[no-untyped-call]
                "CLIENT", "PAUSE", pause_ms, "WRITE"
            )
            paused_at = time.monotonic()
            alice.say("held")
            await until(lambda: not a.backplane_health()["healthy"], "degraded")
            assert time.monotonic() - paused_at < OP_TIMEOUT + SLACK
            assert "did not answer a publish" in a.backplane_health()["detail"]
            await until(lambda: bool(alice.degraded()), "given up")
            took = time.monotonic() - paused_at
            assert give_up <= took < give_up + 2 * OP_TIMEOUT + SLACK, took
            (error,) = alice.degraded()
            assert error["id"] == alice.id_of("held")
            await until(lambda: bool(bob.sink.of("resync")), "bob told to resync")
            await wait_healthy(a, b)
            alice.say("after")
            await until(lambda: "after" in bob.bodies(), "traffic flows again")
            assert "held" not in bob.bodies()
            assert alice.id_of("held") not in published  # Redis never ran it
            assert len(alice.degraded()) == 1
    finally:
        await admin.aclose()


async def test_a_publish_in_flight_when_redis_dies_is_reported(
    own_redis: RedisServer,
) -> None:
    """Hung, then killed and restarted: the held message is gone, and said so."""
    prefix = unique_prefix()
    url = own_redis.url
    async with cluster(backplane(url, prefix), backplane(url, prefix)) as (tg, (a, b)):
        alice, bob = member(tg, a, "alice", ROOM), member(tg, b, "bob", ROOM)
        for client in (alice, bob):
            await client.ready()
        own_redis.pause()
        died_at = time.monotonic()
        alice.say("doomed")
        await until(lambda: not a.backplane_health()["healthy"], "degraded")
        assert alice.degraded() == []  # in doubt: Redis may still run it
        own_redis.kill()
        own_redis.start()
        await until(lambda: bool(alice.degraded()), "reported")
        (error,) = alice.degraded()
        assert error["id"] == alice.id_of("doomed")
        await until(lambda: bob.resynced_after(died_at), "bob resynced")
        await wait_healthy(a, b)
        alice.say("after")
        await until(lambda: "after" in bob.bodies(), "traffic flows again")
        assert "doomed" not in bob.bodies()


async def test_an_idle_process_notices_a_hang_within_ping_interval_and_op_timeout(
    own_redis: RedisServer,
) -> None:
    prefix = unique_prefix()
    async with cluster(backplane(own_redis.url, prefix)) as (tg, (a,)):
        alice = member(tg, a, "alice", ROOM)
        await alice.ready()
        await until(lambda: bool(alice.sink.of("presence")), "her lease is taken")
        own_redis.pause()
        paused_at = time.monotonic()
        await until(lambda: not a.backplane_health()["healthy"], "degraded")
        took = time.monotonic() - paused_at
        assert took < PING_INTERVAL + OP_TIMEOUT + SLACK, took
        health = a.backplane_health()
        assert "did not answer a PING within 0.4 s" in health["detail"]
        own_redis.resume()
        await wait_healthy(a)
        await until(lambda: bool(alice.sink.of("resync")), "resync after reconnect")
        assert a.backplane_health()["reconnects"] == 1


@pytest.mark.parametrize(
    "call", ["presence_join", "presence_members", "subscribe", "unsubscribe"]
)
async def test_every_kind_of_call_has_a_deadline(
    own_redis: RedisServer, call: str
) -> None:
    """Each call to a hung Redis ends, and marks it degraded, within op_timeout.

    The listener's own PING is out of the picture (``ping_interval`` of a minute):
    the call alone must notice. (Publishes: the tests above.)
    """
    from wschat.backplane import BackplaneUnavailable

    quiet = backplane(own_redis.url, unique_prefix(), ping_interval=60.0)
    async with cluster(quiet) as (_, (a,)):
        await quiet.subscribe("r:other")
        own_redis.pause()
        started = time.monotonic()
        with (
            anyio.fail_after(OP_TIMEOUT + SLACK),
            contextlib.suppress(BackplaneUnavailable),
        ):
            if call == "presence_join":
                await quiet.presence_join("room", "alice", "n1", 30)
            elif call == "presence_members":
                await quiet.presence_members("room")
            elif call == "subscribe":
                await quiet.subscribe("r:new")
            else:
                await quiet.unsubscribe("r:other")  # returns at once: no answer
        await until(lambda: not a.backplane_health()["healthy"], "degraded")
        assert time.monotonic() - started < OP_TIMEOUT + SLACK
        assert status_payload(a)["status"] == "degraded"
        assert "within 0.4 s" in a.backplane_health()["detail"]
        own_redis.resume()
        await wait_healthy(a)


async def test_connection_setup_to_a_hung_redis_times_out_and_retries(
    own_redis: RedisServer,
) -> None:
    """The kernel accepts connections for a stopped Redis; the handshake hangs."""
    own_redis.pause()
    manager = ConnectionManager(backplane=backplane(own_redis.url, unique_prefix()))
    with anyio.fail_after(OP_TIMEOUT + SLACK):
        async with manager:
            assert manager.backplane_health()["healthy"] is False
            own_redis.resume()
            await wait_healthy(manager)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("op_timeout", float("nan"), "between 0.01 and 60 seconds"),
        ("op_timeout", float("inf"), "between 0.01 and 60 seconds"),
        ("op_timeout", 0, "between 0.01 and 60 seconds"),
        ("op_timeout", -1, r"\(got -1\); the default is 1"),
        ("op_timeout", 61, "between 0.01 and 60 seconds"),
        ("op_timeout", True, "must be a number of seconds, not bool"),
        ("op_timeout", "1", "must be a number of seconds, not str"),
        ("subscribe_timeout", 301, "between 0.01 and 300 seconds"),
        ("subscribe_timeout", float("nan"), "the default is 5"),
        ("reconnect_min", 0, "between 0.001 and 60 seconds"),
        ("reconnect_max", 3601, "between 0.001 and 3600 seconds"),
        ("reconnect_max", 0.01, r"reconnect_max \(0.01\) must be at least"),
        ("ping_interval", 0.001, "between 0.01 and 300 seconds"),
        ("ping_interval", False, "not bool"),
    ],
)
def test_numeric_options_are_checked(option: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        RedisBackplane("redis://127.0.0.1:1", **{option: value})
    assert option in str(caught.value)


def test_option_defaults_and_boundaries() -> None:
    backplane = RedisBackplane("redis://127.0.0.1:1")
    assert backplane.op_timeout == 1.0
    assert backplane.ping_interval == 1.0
    assert backplane.subscribe_timeout == 5.0
    assert (backplane.reconnect_min, backplane.reconnect_max) == (0.05, 5.0)
    edge = RedisBackplane(
        "redis://127.0.0.1:1",
        op_timeout=0.01,
        subscribe_timeout=300,
        reconnect_min=60,
        ping_interval=300,
    )
    assert edge.op_timeout == 0.01
    assert edge.reconnect_max == 60.0  # follows a larger reconnect_min
    assert RedisBackplane("redis://127.0.0.1:1", op_timeout=60).op_timeout == 60.0


class Reader:
    """A real ``websockets`` client that records every frame and when it came."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.log: list[tuple[float, dict[str, Any]]] = []

    async def run(self) -> None:
        with contextlib.suppress(Exception):
            async for raw in self.ws:
                self.log.append((time.monotonic(), json.loads(raw)))

    def of(self, kind: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, f) for t, f in self.log if f["type"] == kind]

    def bodies(self) -> list[Any]:
        return [f["body"] for _, f in self.of("message")]


@pytest.mark.e2e
async def test_a_hang_through_real_servers_and_clients(own_redis: RedisServer) -> None:
    """Two uvicorn processes with the defaults (op_timeout 1 s, ping_interval 1 s)."""
    from websockets.asyncio.client import connect

    from tests.support.redis_processes import SECRET, Server
    from wschat.testing import mint_token

    prefix = unique_prefix()
    env = {
        "WSCHAT_REDIS_URL": own_redis.url,
        "WSCHAT_PREFIX": prefix,
        "WSCHAT_SECRET": SECRET,
    }
    a, b = Server(env), Server(env)
    room = "hang"
    try:
        a.start()
        b.start()
        async with contextlib.AsyncExitStack() as stack:
            readers: dict[str, Reader] = {}
            for name, server in (("sender", a), ("near", a), ("far", b)):
                url = f"ws://127.0.0.1:{server.port}/ws/chat/{room}?token="
                ws = await stack.enter_async_context(
                    connect(url + mint_token(SECRET, name), max_queue=None)
                )
                with anyio.fail_after(WAIT):
                    assert json.loads(await ws.recv())["type"] == "ready"
                readers[name] = Reader(ws)
            published = await stack.enter_async_context(
                ground_truth(own_redis.url, [f"{prefix}r:{room}"])
            )
            tg = await stack.enter_async_context(anyio.create_task_group())
            for reader in readers.values():
                tg.start_soon(reader.run)
            sender, near, far = readers["sender"], readers["near"], readers["far"]
            degraded_at: dict[str, float] = {}

            async def poll(name: str, server: Server) -> None:
                while name not in degraded_at:
                    status = await anyio.to_thread.run_sync(server.status)
                    if status["status"] == "degraded":
                        degraded_at[name] = time.monotonic()
                    await anyio.sleep(0.02)

            said: list[tuple[float, int]] = []
            sending = True

            async def talk() -> None:
                n = 0
                while sending:
                    said.append((time.monotonic(), n))
                    await sender.ws.send(json.dumps({"type": "message", "body": n}))
                    n += 1
                    await anyio.sleep(0.03)

            tg.start_soon(talk)
            await until(lambda: len(far.bodies()) >= 10, "traffic before the hang")
            tg.start_soon(poll, "a", a)
            tg.start_soon(poll, "b", b)
            own_redis.pause()
            paused_at = time.monotonic()
            await until(lambda: len(degraded_at) == 2, "both degraded")
            await anyio.sleep(1.0)
            own_redis.resume()
            await until(lambda: bool(far.of("resync")), "far resynced")

            def healthy() -> bool:
                return bool(a.status()["status"] == b.status()["status"] == "ok")

            with anyio.fail_after(WAIT):
                while not await anyio.to_thread.run_sync(healthy):  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            count = len(said)
            await until(lambda: len(said) >= count + 10, "traffic after")
            sending = False
            last = said[-1][1]
            for reader in readers.values():
                await until(lambda r=reader: last in r.bodies(), "caught up")
            tg.cancel_scope.cancel()
        # Detection: a sends (its publish times out), b only listens (its PING).
        assert degraded_at["a"] - paused_at < 1.0 + SLACK
        assert degraded_at["b"] - paused_at < 1.0 + 1.0 + SLACK
        errors = [f for _, f in sender.of("error") if f["code"] == "delivery_degraded"]
        assert errors, "messages sent during the hang were not published"
        first_error = min(t for t, f in sender.of("error"))
        assert first_error - paused_at < 1.0 + SLACK
        ids = {f["body"]: f["id"] for _, f in sender.of("message")}
        sent = [(t, ids[n]) for t, n in said]
        unpublished = {i for _, i in sent} - published
        named = [f["id"] for f in errors]
        assert len(named) == len(unpublished)
        assert set(named) == unpublished
        for reader in (sender, near, far):
            got = {f["id"] for _, f in reader.of("message")}
            silent = [
                i
                for t, i in sent
                if i not in got and not any(r > t for r, _ in reader.of("resync"))
            ]
            assert not silent, silent[:5]
    finally:
        a.stop()
        b.stop()


SCALING = Path(__file__).resolve().parents[2] / "docs" / "scaling.md"


def doc_section(heading: str) -> str:
    text = SCALING.read_text()
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end != -1 else None]


@pytest.mark.parametrize("option", ["op_timeout", "ping_interval", "subscribe_timeout"])
def test_the_documented_defaults_and_ranges_are_the_codes(option: str) -> None:
    table = doc_section("### `RedisBackplane` options")
    row = re.search(rf"\| `{option}` \| `([\d.]+)` \| ([\d.]+) to ([\d.]+) \|", table)
    assert row is not None, f"no row for {option}"
    default, low, high = (float(x) for x in row.groups())
    assert getattr(RedisBackplane("redis://127.0.0.1:1"), option) == default
    for ok in (low, high):
        accepted: dict[str, Any] = {option: ok}
        RedisBackplane("redis://127.0.0.1:1", **accepted)
    for bad in (low / 2, high * 1.5):
        refused: dict[str, Any] = {option: bad}
        with pytest.raises(ConfigurationError, match=option):
            RedisBackplane("redis://127.0.0.1:1", **refused)


def test_the_documented_detection_bounds_are_the_defaults() -> None:
    text = doc_section("## When Redis goes away")
    defaults = RedisBackplane("redis://127.0.0.1:1")
    op, ping = defaults.op_timeout, defaults.ping_interval
    assert f"| a message is being published | `op_timeout` | {op:g} s |" in text
    bound = f"{ping + op:g} s"
    assert f"| nothing is being sent | `ping_interval + op_timeout` | {bound} |" in text
    assert f"`op_timeout`\n({op:g} s by default)" in text
    assert f"`ping_interval` ({ping:g} s)" in text
    # The give-up delay the docs name is the one the CLIENT PAUSE test measures.
    assert "for `5 * op_timeout`" in text
