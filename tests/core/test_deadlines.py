"""Token deadlines (wschat/deadlines.py): the heap, the schedule, and the sweep.

The heap and :class:`Deadlines` are checked against a model with hypothesis
(connections come, go and refresh in any order, on a fake clock: each is closed at
its own cutoff, after its notice, and none twice). The sweep task and the writer's
cutoff are checked in process on asyncio and trio, through the endpoint with a fake
transport and real short-lived tokens.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import jwt
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

from tests.support.common import SECRET, FakeTransport
from wschat import ChatId, ConnectionManager, Principal, TokenVerifier, UserId
from wschat.deadlines import (
    DEFAULT_EXPIRY_NOTICE,
    EXPIRED,
    MAX_EXPIRY_LEEWAY,
    NOTICE_RETRY,
    DeadlineHeap,
    Deadlines,
    Schedule,
    schedule,
)
from wschat.endpoint import ChatEndpoint, expiry_leeway
from wschat.errors import TokenExpired, WSChatError
from wschat.options import ChatOptions
from wschat.protocol import encode_token_expiring
from wschat.testing import mint_token
from wschat.transport import Handshake

# -- the pure parts --------------------------------------------------------------------


def test_defaults_are_pinned() -> None:
    assert DEFAULT_EXPIRY_NOTICE == 60.0
    assert MAX_EXPIRY_LEEWAY == 5.0
    assert ChatOptions().expiry_notice == 60.0
    assert ChatOptions().is_revoked is None
    assert json.loads(encode_token_expiring(1764103600)) == {
        "type": "token_expiring",
        "exp": 1764103600,
    }


@pytest.mark.parametrize(
    ("exp", "now", "leeway", "notice", "iat", "expected"),
    [
        # A long token: the notice 60 s before exp; the cutoff 5 s after.
        (10_000, 1_000, 5.0, 60.0, None, (9_940, 10_005)),
        # Two minutes exactly: 60 s before is also half-way.
        (1_120, 1_000, 5.0, 60.0, 1_000, (1_060, 1_125)),
        # Shorter: half-way through the lifetime, from iat.
        (1_002, 1_000, 0.0, 60.0, 1_000, (1_001, 1_002)),
        (1_100, 1_050, 0.0, 60.0, 1_000, (1_050, 1_100)),
        # No iat: the lifetime counts from the verification.
        (1_010, 1_000, 0.0, 60.0, None, (1_005, 1_010)),
        # An iat in the future is not trusted to shorten the wait.
        (1_010, 1_000, 0.0, 60.0, 1_008, (1_005, 1_010)),
        # The leeway of a live connection is capped at 5 s.
        (1_000, 0, 300.0, 60.0, None, (940, 1_005)),
        (1_000, 0, -1.0, 60.0, None, (940, 1_000)),
        # No notice.
        (1_000, 0, 5.0, None, None, (None, 1_005)),
        # A token already past its exp: the notice is due at once.
        (900, 1_000, 5.0, 60.0, None, (900, 905)),
    ],
)
def test_schedule(
    exp: float,
    now: float,
    leeway: float,
    notice: float | None,
    iat: float | None,
    expected: tuple[float | None, float],
) -> None:
    plan = schedule(exp, now=now, leeway=leeway, notice=notice, issued_at=iat)
    assert (plan.notice_at, plan.cutoff) == expected
    assert plan == Schedule(*expected)


class _Leeway:
    def __init__(self, leeway: object) -> None:
        self.leeway = leeway

    def verify(self, token: str) -> Principal:
        raise NotImplementedError


@pytest.mark.parametrize(
    ("leeway", "expected"),
    [(5.0, 5.0), (0, 0.0), (2.5, 2.5), (5.0001, 5.0), (300, 5.0), (math.nan, 0.0)],
)
def test_expiry_leeway_is_the_verifiers_at_most_5_s(
    leeway: object, expected: float
) -> None:
    assert expiry_leeway(_Leeway(leeway)) == expected


def test_expiry_leeway_of_verifiers_without_one_is_0() -> None:
    assert expiry_leeway(_Leeway(True)) == 0.0
    assert expiry_leeway(_Leeway("5")) == 0.0
    assert expiry_leeway(TokenVerifier(SECRET, algorithms=["HS256"])) == 5.0


def test_heap_basics() -> None:
    heap: DeadlineHeap[str] = DeadlineHeap()
    assert heap.next_at() is None
    for key, when in [("a", 5.0), ("b", 3.0), ("c", 9.0), ("d", 1.0)]:
        heap.set(key, when)
    assert (len(heap), heap.next_at(), heap.when("b")) == (4, 1.0, 3.0)
    heap.set("c", 0.5)  # moved earlier
    heap.set("d", 7.0)  # moved later
    assert heap.discard("b") is True
    assert heap.discard("b") is False
    assert "b" not in heap
    assert heap.pop_due(6.0) == [("c", 0.5), ("a", 5.0)]
    assert heap.pop_due(6.0) == []
    assert heap.pop_due(7.0) == [("d", 7.0)]
    assert len(heap) == 0
    with pytest.raises(ValueError, match="nan"):
        heap.set("x", math.nan)


class HeapMachine(RuleBasedStateMachine):
    """The heap against a dict: any sequence of set, discard and pop_due."""

    def __init__(self) -> None:
        super().__init__()
        self.heap: DeadlineHeap[int] = DeadlineHeap()
        self.model: dict[int, float] = {}

    @rule(key=st.integers(0, 20), when=st.floats(-1e6, 1e6))
    def set(self, key: int, when: float) -> None:
        self.heap.set(key, when)
        self.model[key] = when

    @rule(key=st.integers(0, 20))
    def discard(self, key: int) -> None:
        assert self.heap.discard(key) == (key in self.model)
        self.model.pop(key, None)

    @rule(now=st.floats(-1e6, 1e6))
    def pop_due(self, now: float) -> None:
        due = self.heap.pop_due(now)
        expected = {k: w for k, w in self.model.items() if w <= now}
        assert dict(due) == expected
        assert [w for _, w in due] == sorted(w for _, w in due)
        for key in expected:
            del self.model[key]

    @invariant()
    def agrees(self) -> None:
        assert len(self.heap) == len(self.model)
        assert self.heap.next_at() == min(self.model.values(), default=None)
        for key, when in self.model.items():
            assert self.heap.when(key) == when


TestHeap = HeapMachine.TestCase
TestHeap.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)


# -- Deadlines on a fake clock, against a model -------------------------------------


class FakeConn:
    """What Deadlines needs of a connection, recording what it gets."""

    def __init__(self, name: int, exp: int, log: list[tuple[str, int, float]]) -> None:
        self.name = name
        self.principal = Principal(UserId(f"u{name}"), expires_at=exp)
        self.cutoff: float | None = None
        self.closing: WSChatError | None = None
        self.spawn: Callable[..., object] | None = None
        self.log = log
        self.now = 0.0

    def put_nowait(self, frame: str) -> bool:
        self.log.append(("notice", self.name, json.loads(frame)["exp"]))
        return True

    def abort(self, error: WSChatError | None) -> None:
        assert isinstance(error, TokenExpired)
        assert error.detail == EXPIRED
        self.log.append(("closed", self.name, self.now))
        self.closing = error

    def call_soon(self, func: Callable[..., object], *args: object) -> None:
        func(*args)

    def __repr__(self) -> str:
        return f"FakeConn({self.name})"


def _expected(plan: Schedule) -> tuple[float | None, float]:
    """A plan as the model holds it: a notice not before the cutoff is none."""
    notice = plan.notice_at
    return (
        notice if notice is not None and notice < plan.cutoff else None,
        plan.cutoff,
    )


class DeadlinesMachine(RuleBasedStateMachine):
    """However connections come, go and refresh: each is closed at its own cutoff
    (the first sweep at or after it), after its notice, and none twice."""

    conns = Bundle("conns")

    def __init__(self) -> None:
        super().__init__()
        self.now = 1_000.0
        self.log: list[tuple[str, int, float]] = []
        self.joined: set[int] = set()
        self.deadlines: Deadlines[FakeConn] = Deadlines(
            lambda c: c.name in self.joined, clock=lambda: self.now
        )
        # The model: each open connection's (notice_at or None once sent, cutoff).
        self.model: dict[int, tuple[float | None, float]] = {}
        self.closed: set[int] = set()
        self.notified: dict[int, int] = {}
        self.next_name = 0
        self.every: list[FakeConn] = []

    @initialize()
    def start(self) -> None:
        pass

    def _plan(self, ttl: int, notice: float | None, leeway: float) -> Schedule:
        exp = int(self.now) + ttl
        return schedule(exp, now=self.now, leeway=leeway, notice=notice)

    @rule(
        target=conns,
        ttl=st.integers(-10, 200),
        notice=st.none() | st.sampled_from([0.0, 1.0, 60.0]),
        leeway=st.sampled_from([0.0, 2.0, 5.0]),
        joined=st.booleans(),
    )
    def connect(
        self, ttl: int, notice: float | None, leeway: float, joined: bool
    ) -> FakeConn:
        name = self.next_name
        self.next_name += 1
        plan = self._plan(ttl, notice, leeway)
        conn = FakeConn(name, int(self.now) + ttl, self.log)
        self.every.append(conn)
        if joined:
            self.joined.add(name)
        self.deadlines.track(conn, plan)
        self.model[name] = _expected(plan)
        return conn

    @rule(conn=conns)
    def join(self, conn: FakeConn) -> None:
        self.joined.add(conn.name)

    @rule(conn=conns, ttl=st.integers(1, 200))
    def refresh(self, conn: FakeConn, ttl: int) -> None:
        if conn.name not in self.model:
            return  # closed or gone: a refresh cannot happen
        plan = self._plan(ttl, 60.0, 5.0)
        conn.principal = Principal(
            conn.principal.user_id, expires_at=int(self.now) + ttl
        )
        self.deadlines.track(conn, plan)
        self.model[conn.name] = _expected(plan)

    @rule(conn=consumes(conns))
    def disconnect(self, conn: FakeConn) -> None:
        self.deadlines.discard(conn)
        self.model.pop(conn.name, None)

    @rule(step=st.sampled_from([0.0, 0.01, 0.5, 1.0, 7.0, 61.0]))
    def advance(self, step: float) -> None:
        self.now += step
        before = len(self.log)
        for conn in self._all():
            conn.now = self.now
        self.deadlines.fire_due(self.now)
        fired = self.log[before:]
        closed_now = {name for kind, name, _ in fired if kind == "closed"}
        noticed_now = [name for kind, name, _ in fired if kind == "notice"]
        # Exactly those whose cutoff has come are closed, once.
        due = {n for n, (_, cutoff) in self.model.items() if cutoff <= self.now}
        assert closed_now == due
        assert not closed_now & self.closed
        self.closed |= closed_now
        for name in noticed_now:
            notice_at, cutoff = self.model[name]
            assert notice_at is not None
            assert notice_at <= self.now < cutoff
            assert name in self.joined  # never before its ready frame
            self.notified[name] = self.notified.get(name, 0) + 1
            self.model[name] = (None, cutoff)
        for name in closed_now:
            del self.model[name]
        # A notice due before the connection joined waits NOTICE_RETRY s more.
        for name, (notice_at, cutoff) in list(self.model.items()):
            due_now = notice_at is not None and notice_at <= self.now
            if due_now and name not in self.joined:
                retry = min(self.now + NOTICE_RETRY, cutoff)
                self.model[name] = (retry if retry < cutoff else None, cutoff)
        # A joined connection whose notice is due got it (or was closed first).
        for name, (notice_at, _) in self.model.items():
            if notice_at is not None and notice_at <= self.now and name in self.joined:
                raise AssertionError(f"notice of {name} due at {notice_at} not sent")

    def _all(self) -> list[FakeConn]:
        return self.every

    @invariant()
    def heap_matches_model(self) -> None:
        assert len(self.deadlines) == len(self.model)


TestDeadlines = DeadlinesMachine.TestCase
TestDeadlines.settings = settings(
    max_examples=150, stateful_step_count=50, deadline=None
)


# -- the sweep and the writer, through the endpoint, on asyncio and trio -------------

ROOM = ChatId("lobby")


@contextlib.contextmanager
def closing(*transports: FakeTransport) -> Iterator[None]:
    """Close the fake transports' streams once the test is done with them."""
    try:
        yield
    finally:
        for t in transports:
            t.aclose_streams()


async def wait_for(check: Callable[[], bool], seconds: float = 3.0) -> None:
    """Poll ``check`` until true, bounded."""
    with anyio.fail_after(seconds):
        while not check():  # noqa: ASYNC110 - the manager has no event to wait on
            await anyio.sleep(0.01)


def _handshake(token: str) -> Handshake:
    return Handshake(
        ROOM,
        f"token={token}".encode(),
        {"host": "chat.example"},
        ["wschat.v1"],
        "ws",
        "1.2.3.4:5",
    )


def _short(user: str, ttl: float) -> str:
    """A token whose exp is ``ttl`` s away, to the second (exp is whole seconds)."""
    return mint_token(SECRET, user, ttl=ttl)


async def _frames_until_closed(
    t: FakeTransport, seconds: float
) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    with anyio.fail_after(seconds):
        while True:
            with anyio.move_on_after(0.05):
                frames.append(await t.next_frame(seconds))
                continue
            if t.ended.is_set():
                while True:
                    try:
                        frames.append(await t.next_frame(0.05))
                    except TimeoutError:
                        return frames


@pytest.mark.anyio
async def test_an_idle_listener_gets_the_notice_then_4401_at_exp() -> None:
    # leeway 0: the deadline is exp itself. A speaker keeps talking through it; the
    # listener, which sends nothing, gets the notice, then no message stamped after
    # its exp, then the close.
    verifier = TokenVerifier(SECRET, algorithms=["HS256"], leeway=0)
    manager = ConnectionManager()
    endpoint = ChatEndpoint(manager, verifier, ChatOptions(rate_limit=None))
    listener, speaker = FakeTransport(), FakeTransport()
    token = _short("listener", 2)
    stack = contextlib.ExitStack()
    stack.enter_context(closing(listener, speaker))
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    async with anyio.create_task_group() as tg:
        tg.start_soon(endpoint.serve, _handshake(token), listener)
        tg.start_soon(endpoint.serve, _handshake(_short("speaker", 600)), speaker)
        ready = await listener.next_frame()
        assert (ready["type"], ready["exp"]) == ("ready", exp)
        assert manager.deadlines.running

        async def talk() -> None:
            n = 0
            while not listener.ended.is_set():
                speaker.feed(json.dumps({"type": "message", "body": n}))
                n += 1
                await anyio.sleep(0.01)

        tg.start_soon(talk)
        frames = await _frames_until_closed(listener, 6)
        speaker.hang_up()
    stack.close()
    kinds = [f["type"] for f in frames]
    assert kinds.count("token_expiring") == 1
    notice = frames[kinds.index("token_expiring")]
    assert notice == {"type": "token_expiring", "exp": exp}
    messages = [f for f in frames if f["type"] == "message"]
    assert messages, "the speaker's messages reached the listener before exp"
    assert max(m["ts"] for m in messages) < exp * 1000
    assert listener.closed is not None
    code, reason = listener.closed
    assert (code, reason) == (4401, f"token_expired: {EXPIRED}")
    assert len(manager) == 0
    assert len(manager.deadlines) == 0
    assert not manager.deadlines.running


@pytest.mark.anyio
async def test_a_refresh_moves_the_deadline_and_another_sub_is_refused() -> None:
    verifier = TokenVerifier(SECRET, algorithms=["HS256"], leeway=0)
    manager = ConnectionManager()
    endpoint = ChatEndpoint(manager, verifier, ChatOptions())
    t = FakeTransport()
    with closing(t):
        await _refresh_then_takeover(manager, endpoint, t)
    assert len(manager.deadlines) == 0


async def _refresh_then_takeover(
    manager: ConnectionManager, endpoint: ChatEndpoint, t: FakeTransport
) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(endpoint.serve, _handshake(_short("alice", 2)), t)
        assert (await t.next_frame())["type"] == "ready"
        conn = manager.connections()[0]
        first = conn.cutoff
        assert first is not None
        t.feed(json.dumps({"type": "auth", "token": _short("alice", 600)}))
        while (frame := await t.next_frame())["type"] != "auth":
            pass
        assert frame["ok"] is True
        assert conn.cutoff is not None
        assert conn.cutoff >= first + 590
        # Past the first token's exp, the connection is still open.
        await anyio.sleep(first - time.time() + 0.5)
        assert not t.ended.is_set()
        t.feed(json.dumps({"type": "ping"}))
        while (frame := await t.next_frame())["type"] != "pong":
            pass
        # Another user's token cannot take it over.
        t.feed(json.dumps({"type": "auth", "token": _short("mallory", 600)}))
        code, reason = await t.wait_closed(3)
        tg.cancel_scope.cancel()
    assert (code, reason.split(":")[0]) == (4401, "token_invalid")


@pytest.mark.anyio
async def test_frames_queued_before_the_cutoff_are_not_written_after_it() -> None:
    # The socket is stuck (gate) while frames wait; the cutoff passes; when the
    # socket frees, nothing more is written, whichever task runs first.
    verifier = TokenVerifier(SECRET, algorithms=["HS256"], leeway=0)
    manager = ConnectionManager()
    endpoint = ChatEndpoint(manager, verifier, ChatOptions())
    t = FakeTransport()
    with closing(t):
        await _stuck_past_the_cutoff(manager, endpoint, t)


async def _stuck_past_the_cutoff(
    manager: ConnectionManager, endpoint: ChatEndpoint, t: FakeTransport
) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(endpoint.serve, _handshake(_short("alice", 600)), t)
        assert (await t.next_frame())["type"] == "ready"
        conn = manager.connections()[0]
        t.gate = anyio.Event()
        manager.broadcast_nowait(ROOM, '{"type":"x","n":0}')
        with anyio.fail_after(2):
            await t.blocked.wait()  # the writer holds frame 0 at the socket
        for n in range(1, 4):
            manager.broadcast_nowait(ROOM, f'{{"type":"x","n":{n}}}')
        assert conn.queued == 3
        # The cutoff comes while they wait (set here, as a refresh would).
        conn.cutoff = time.time() - 0.001
        t.gate.set()
        code, _ = await t.wait_closed(3)
        tg.cancel_scope.cancel()
    assert code == 4401
    sent = [json.loads(f).get("n") for f in t.sent if '"x"' in f]
    assert sent == [0]  # in flight at the cutoff; 1..3 never written


@pytest.mark.anyio
async def test_one_sweep_task_for_many_connections() -> None:
    verifier = TokenVerifier(SECRET, algorithms=["HS256"])
    manager = ConnectionManager()
    endpoint = ChatEndpoint(manager, verifier, ChatOptions())
    transports = [FakeTransport() for _ in range(20)]
    with closing(*transports):
        await _twenty(manager, endpoint, transports)
    assert len(manager.deadlines) == 0
    assert not manager.deadlines.running


async def _twenty(
    manager: ConnectionManager, endpoint: ChatEndpoint, transports: list[FakeTransport]
) -> None:
    async with anyio.create_task_group() as tg:
        for i, t in enumerate(transports):
            tg.start_soon(endpoint.serve, _handshake(_short(f"u{i}", 600 + i)), t)
        for t in transports:
            assert (await t.next_frame())["type"] == "ready"
        assert len(manager.deadlines) == 20
        assert manager.deadlines.running
        # The host ends: the sweep goes on in another connection's task group.
        for t in transports[:10]:
            t.hang_up()
        await wait_for(lambda: len(manager) == 10)
        assert len(manager.deadlines) == 10
        assert manager.deadlines.running
        conn = manager.connections()[0]
        # A deadline set earlier than the one the sweep sleeps until wakes it.
        manager.deadlines.track(conn, Schedule(None, time.time() + 0.2))
        t_of = transports[int(conn.user_id[1:])]
        code, _ = await t_of.wait_closed(3)
        assert code == 4401
        for t in transports[10:]:
            t.hang_up()
