"""Coalesced presence (wschat/announcer.py), member pages (rooms.page_members) and
the ``members`` frame, in process: the core on asyncio and trio, the pure parts
with hypothesis (a paging client against a model while members come and go)."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tests.support.common import SECRET
from wschat import ConfigurationError, ConnectionManager, Principal, TokenVerifier
from wschat.announcer import (
    COUNT_ONLY_FRAMES_PER_SECOND,
    COUNT_ONLY_INTERVAL,
    COUNT_ONLY_MAX_INTERVAL,
    DEFAULT_COUNT_ONLY_ABOVE,
    DEFAULT_READY_MEMBERS,
    STILL_AFTER,
    PresenceAnnouncer,
    count_interval,
)
from wschat.asgi import chat_app
from wschat.errors import ErrorCode, FrameError
from wschat.ids import ChatId, ConnectionId, UserId
from wschat.protocol import (
    DEFAULT_MEMBERS_PAGE,
    MAX_CURSOR_CHARS,
    MAX_MEMBERS_PAGE,
    ClientMembers,
    decode_cursor,
    encode_cursor,
    parse_client_frame,
)
from wschat.rooms import RoomRegistry, page_members
from wschat.testing import ChatTestClient, Members, Presence, Ready

verifier = TokenVerifier(SECRET, algorithms=["HS256"])
ROOM = ChatId("r")


def test_defaults_and_limits_are_pinned() -> None:
    assert DEFAULT_COUNT_ONLY_ABOVE == 250
    assert DEFAULT_READY_MEMBERS == 100
    assert (DEFAULT_MEMBERS_PAGE, MAX_MEMBERS_PAGE) == (100, 1000)
    assert MAX_CURSOR_CHARS == 1024
    manager = ConnectionManager()
    assert manager.announcer.format == "diff"
    assert manager.announcer.count_only_above == 250
    assert manager.ready_members == 100


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("presence_format", "diffs"),
        ("presence_count_only_above", -1),
        ("presence_count_only_above", 2.5),
        ("ready_members", 0),
        ("ready_members", True),
    ],
)
def test_bad_presence_options_are_refused(option: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=option):
        ConnectionManager(**{option: value})


def test_count_only_above_boundaries() -> None:
    ConnectionManager(presence_count_only_above=0)
    ConnectionManager(presence_count_only_above=None)
    ConnectionManager(ready_members=1)


# -- the announcer on its own: net diffs, the threshold -------------------------------


@dataclass(eq=False)
class Member:
    id: ConnectionId
    user_id: UserId
    hosts: list[Any]

    def call_at_sweep(self, func: Any, within: float | None = None) -> bool:
        self.hosts.append(Sweep(func, within))
        return True


@dataclass
class Sweep:
    """A flush left for the sweep, and how soon it was asked for (``within``)."""

    func: Any
    within: float | None

    def __call__(self) -> None:
        self.func()


def announcer(
    count: int = 0, above: int | None = 250, clock: Any = None
) -> tuple[Any, ...]:
    registry: RoomRegistry[Any] = RoomRegistry()
    sweeps: list[Any] = []
    registry.join(ROOM, Member(ConnectionId("c1"), UserId("w"), sweeps))
    sent: list[dict[str, Any]] = []
    counted = [count]
    ann = PresenceAnnouncer(
        registry,
        lambda chat_id, frame: sent.append(json.loads(frame)),
        lambda chat_id: counted[0],
        count_only_above=above,
        **({} if clock is None else {"clock": clock}),
    )
    return ann, sent, sweeps, counted


def test_the_first_change_goes_at_once_then_changes_gather_until_the_sweep() -> None:
    ann, sent, sweeps, _ = announcer(count=3)
    ann.changed(ROOM, "join", UserId("a"))
    assert [(f["joins"], f["leaves"]) for f in sent] == [(["a"], [])]
    assert len(sweeps) == 1  # a sweep is asked to look again
    ann.changed(ROOM, "join", UserId("b"))
    ann.changed(ROOM, "leave", UserId("a"))
    ann.changed(ROOM, "join", UserId("c"))
    ann.changed(ROOM, "leave", UserId("c"))  # came and went: in neither list
    assert len(sent) == 1
    assert len(sweeps) == 1
    sweeps.pop()()
    assert sent[1] == {
        "type": "presence",
        "chat_id": "r",
        "joins": ["b"],
        "leaves": ["a"],
        "count": 3,
        "count_only": False,
    }
    # Something was sent: the next sweep looks again, finds nothing, goes quiet.
    sweeps.pop()()
    assert len(sent) == 2
    assert sweeps == []
    ann.changed(ROOM, "leave", UserId("b"))
    assert sent[2]["leaves"] == ["b"]  # quiet again: at once


def test_a_net_empty_interval_sends_nothing() -> None:
    ann, sent, sweeps, _ = announcer()
    ann.changed(ROOM, "join", UserId("a"))
    ann.changed(ROOM, "leave", UserId("a"))
    ann.changed(ROOM, "join", UserId("a"))
    sweeps.pop()()
    assert [f["joins"] for f in sent] == [["a"]]


def test_above_the_threshold_only_the_count_is_sent() -> None:
    ann, sent, sweeps, counted = announcer(count=6, above=5)
    ann.changed(ROOM, "join", UserId("a"))
    assert sent[-1] == {
        "type": "presence",
        "chat_id": "r",
        "joins": [],
        "leaves": [],
        "count": 6,
        "count_only": True,
    }
    counted[0] = 5  # at the threshold: names again
    ann.changed(ROOM, "leave", UserId("a"))
    sweeps.pop()()
    assert (sent[-1]["leaves"], sent[-1]["count_only"]) == (["a"], False)


def test_a_big_room_sends_its_count_at_most_once_a_second() -> None:
    # A room of 5,000 filling up changes every sweep: one count frame per member
    # per second, not per sweep (0.1 s), or the fill costs members x sweeps frames.
    assert COUNT_ONLY_INTERVAL == 1.0
    now = [100.0]
    ann, sent, sweeps, counted = announcer(count=6, above=5, clock=lambda: now[0])
    ann.changed(ROOM, "join", UserId("a"))
    assert [(f["count"], f["count_only"]) for f in sent] == [(6, True)]
    for step in range(9):  # 0.9 s of sweeps with a join each: the count waits
        now[0] += 0.1
        counted[0] += 1
        ann.changed(ROOM, "join", UserId(f"b{step}"))
        sweeps.pop()()
    assert len(sent) == 1
    assert sweeps, "the sweep keeps looking while a count waits"
    now[0] = 101.0  # 1.0 s after the first: the count goes out, the newest one
    sweeps.pop()()
    assert [(f["count"], f["count_only"]) for f in sent] == [(6, True), (15, True)]
    counted[0] = 5  # back to the threshold: names again, at once
    ann.changed(ROOM, "leave", UserId("a"))
    sweeps.pop()()
    assert (sent[-1]["leaves"], sent[-1]["count_only"]) == (["a"], False)


def test_a_big_room_that_goes_quiet_sends_its_last_count_20ms_later() -> None:
    # The last joins of a storm: their count must not wait out the rest of the
    # second (the first member would know 4,800 of 5,000 for up to a second).
    now = [100.0]
    ann, sent, sweeps, counted = announcer(count=6, above=5, clock=lambda: now[0])
    churn(now, ann, sweeps, counted)
    assert [f["count"] for f in sent] == [6]
    # While a count waits, the sweep is asked to look again in 10 ms, not 0.1 s.
    assert STILL_AFTER == 0.02
    assert sweeps[-1].within == 0.01
    now[0] = 100.31
    sweeps.pop()()
    now[0] = 100.321  # nothing since the join at 100.3: sent now
    sweeps.pop()()
    assert [(f["count"], f["count_only"]) for f in sent] == [(6, True), (9, True)]
    assert sweeps[-1].within is None  # nothing waits: a whole interval
    now[0] = 100.421  # nothing waits: the sweep stops looking
    sweeps.pop()()
    assert len(sent) == 2
    assert sweeps == []
    # One join 0.2 s later: at once it would be a second frame within a second,
    # and the room sent ahead of its interval already: it waits for the interval
    # (1 s after the last count), however long the room stays quiet.
    now[0] = 100.62
    counted[0] += 1
    ann.changed(ROOM, "join", UserId("c"))
    assert len(sent) == 2
    for step in range(1, 70):  # a sweep every 10 ms until 101.31: all wait
        now[0] = round(100.62 + 0.01 * step, 6)
        sweeps.pop()()
    assert len(sent) == 2
    now[0] = 101.321
    sweeps.pop()()
    assert [f["count"] for f in sent] == [6, 9, 10]


def test_count_interval_grows_with_the_room_past_1000_members() -> None:
    assert (COUNT_ONLY_FRAMES_PER_SECOND, COUNT_ONLY_MAX_INTERVAL) == (1000, 10.0)
    assert count_interval(1) == 1.0
    assert count_interval(1000) == 1.0
    assert count_interval(1001) == pytest.approx(1.001)
    assert count_interval(5000) == 5.0
    assert count_interval(10_000) == 10.0
    assert count_interval(100_000) == 10.0


def test_a_room_of_5000_members_gets_its_count_every_5_seconds_while_it_churns() -> (
    None
):
    now = [100.0]
    registry: RoomRegistry[Any] = RoomRegistry()
    sweeps: list[Any] = []
    for i in range(5000):
        registry.join(ROOM, Member(ConnectionId(f"c{i}"), UserId(f"u{i}"), sweeps))
    sent: list[dict[str, Any]] = []
    counted = [5000]
    ann = PresenceAnnouncer(
        registry,
        lambda chat_id, frame: sent.append(json.loads(frame)),
        lambda chat_id: counted[0],
        clock=lambda: now[0],
    )
    ann.changed(ROOM, "join", UserId("a"))
    assert len(sent) == 1
    for step in range(49):  # 4.9 s of sweeps with a join each: the count waits
        now[0] = round(now[0] + 0.1, 6)
        counted[0] += 1
        ann.changed(ROOM, "join", UserId(f"b{step}"))
        sweeps.pop()()
    assert len(sent) == 1
    now[0] = 105.0  # 5 s after the first (5,000 members / 1,000 a second)
    sweeps.pop()()
    assert [f["count"] for f in sent] == [5000, 5049]


def churn(now: list[float], ann: Any, sweeps: list[Any], counted: list[int]) -> None:
    """The count sent at 100.0, then a join at each of three sweeps: it waits."""
    ann.changed(ROOM, "join", UserId("a"))
    for step in range(3):
        now[0] = round(now[0] + 0.1, 6)
        counted[0] += 1
        ann.changed(ROOM, "join", UserId(f"b{step}"))
        sweeps.pop()()


def test_a_count_may_go_20ms_after_the_last_change_once_per_interval() -> None:
    now = [100.0]
    ann, sent, sweeps, counted = announcer(count=6, above=5, clock=lambda: now[0])
    churn(now, ann, sweeps, counted)  # the last sweep ran late: calm from 100.3
    now[0] = 100.305  # a join; sweeps 10 and 19 ms after it: the count waits
    counted[0] += 1
    ann.changed(ROOM, "join", UserId("c"))
    for probe in (100.315, 100.324):
        now[0] = probe
        sweeps.pop()()
    assert [f["count"] for f in sent] == [6]
    now[0] = 100.326  # 21 ms after it: sent, ahead of the interval
    sweeps.pop()()
    assert [f["count"] for f in sent] == [6, 10]
    # Once per interval: the next pause waits for the interval (1 s after the
    # count at 100.326).
    now[0] = 100.33
    counted[0] += 1
    ann.changed(ROOM, "join", UserId("e"))
    for step in range(1, 100):  # a sweep every 10 ms until 101.32: all wait
        now[0] = round(100.326 + 0.01 * step, 6)
        sweeps.pop()()
    assert [f["count"] for f in sent] == [6, 10]
    now[0] = 101.327
    sweeps.pop()()
    assert [f["count"] for f in sent] == [6, 10, 11]


def test_a_pause_counts_from_the_last_sweep_that_ran_late() -> None:
    # A GC pass or a burst of handshakes held the event loop: the joins it held
    # back are not handled yet when the overdue sweep runs.
    now = [100.0]
    ann, sent, sweeps, counted = announcer(count=6, above=5, clock=lambda: now[0])
    churn(now, ann, sweeps, counted)
    now[0] = 100.3205  # asked for 10 ms on, run 20.5 ms on: late
    sweeps.pop()()
    now[0] = 100.3215  # 21.5 ms after the last join, but 1 ms after the late sweep
    sweeps.pop()()
    assert [f["count"] for f in sent] == [6]
    now[0] = 100.3315
    sweeps.pop()()
    assert [f["count"] for f in sent] == [6]
    now[0] = 100.342  # 21.5 ms of sweeps on time: sent
    sweeps.pop()()
    assert [f["count"] for f in sent] == [6, 9]


def test_a_sweep_up_to_10ms_late_is_on_time() -> None:
    now = [100.0]
    ann, sent, sweeps, counted = announcer(count=6, above=5, clock=lambda: now[0])
    churn(now, ann, sweeps, counted)
    now[0] = 100.3195  # asked for 10 ms on, run 19.5 ms on: on time
    sweeps.pop()()
    now[0] = 100.3215  # 21.5 ms after the last join: sent
    sweeps.pop()()
    assert [f["count"] for f in sent] == [6, 9]


@dataclass(eq=False)
class ClosingMember:
    """A member that cannot host a sweep (closing): counts how often it is asked."""

    id: ConnectionId
    user_id: UserId
    asked: list[int]

    def call_at_sweep(self, func: Any, within: Any = None) -> bool:
        self.asked[0] += 1
        return False


def test_a_room_emptying_with_every_member_closing_asks_each_member_o1_times() -> None:
    # A server shutting down closes every member of a room of 5,000 at once: each
    # leave must not look at every member still there for a sweep host.
    registry: RoomRegistry[Any] = RoomRegistry()
    asked = [0]
    n = 300
    members = [
        ClosingMember(ConnectionId(f"c{i}"), UserId(f"u{i}"), asked) for i in range(n)
    ]
    for member in members:
        registry.join(ROOM, member)
    sent: list[dict[str, Any]] = []
    ann = PresenceAnnouncer(
        registry,
        lambda chat_id, frame: sent.append(json.loads(frame)),
        lambda chat_id: n,
        count_only_above=None,
    )
    for member in members[:-1]:
        registry.leave(ROOM, member)
        ann.changed(ROOM, "leave", member.user_id)
    # The first leave asked everyone still there; no later one asked again.
    assert asked[0] == n - 1
    # No sweep to gather them: every leave was sent at once, none lost.
    assert [f["leaves"] for f in sent] == [[m.user_id] for m in members[:-1]]
    # A room that grows is asked again (the newcomer may host a sweep).
    newcomer = Member(ConnectionId("new"), UserId("new"), [])
    registry.join(ROOM, newcomer)
    ann.changed(ROOM, "join", newcomer.user_id)
    assert len(newcomer.hosts) == 1


def test_synchronous_use_sends_every_change_at_once() -> None:
    # No event loop, so no sweep: nothing may wait for one.
    manager = ConnectionManager()
    a = manager.connect(Principal(UserId("a")), ROOM)
    b = manager.connect(Principal(UserId("b")), ROOM)
    frames = []
    with contextlib.suppress(anyio.WouldBlock):
        while True:
            frames.append(json.loads(a.receive_nowait()))
    assert [f["joins"] for f in frames] == [["a"], ["b"]]
    assert not manager.announcer.pending
    manager.disconnect(b)
    assert json.loads(a.receive_nowait())["leaves"] == ["b"]


# -- through the endpoint, on asyncio and trio -----------------------------------------


@pytest.mark.anyio
async def test_joins_reach_an_idle_member_coalesced() -> None:
    manager = ConnectionManager()
    users = [f"u{i:02d}" for i in range(60)]
    async with (
        ChatTestClient(chat_app(manager, verifier), secret=SECRET) as client,
        client.connect("lobby", user="watcher") as watcher,
        contextlib.AsyncExitStack() as stack,
    ):
        assert (await watcher.receive_until(Presence)).joins == ("watcher",)
        for user in users:
            await stack.enter_async_context(client.connect("lobby", user=user))
        seen: list[Presence] = []
        while not seen or seen[-1].count < len(users) + 1:
            seen.append(await watcher.receive_until(Presence))
        assert sorted(u for f in seen for u in f.joins) == users
        assert len(seen) < len(users) // 3, len(seen)


@pytest.mark.anyio
async def test_ready_counts_and_members_pages_in_process() -> None:
    manager = ConnectionManager(ready_members=2)
    async with (
        ChatTestClient(chat_app(manager, verifier), secret=SECRET) as client,
        client.connect("lobby", user="b") as b,
        client.connect("lobby", user="c") as c,
        client.connect("lobby", user="a") as a,
    ):
        for ws in (b, c):
            await ws.receive_until(Ready)
        ready = await a.receive_until(Ready)
        assert (ready.count, ready.members_partial) == (3, True)
        assert ready.members == ("b", "a")
        await a.send_json({"type": "members", "limit": 2, "id": "p1"})
        first = await a.receive_until(Members)
        assert (first.members, first.count, first.id) == (("a", "b"), 3, "p1")
        assert first.cursor == encode_cursor("b")
        await a.send_json({"type": "members", "cursor": first.cursor})
        last = await a.receive_until(Members)
        assert (last.members, last.cursor, last.id) == (("c",), None, None)


# -- cursors and pages -----------------------------------------------------------------


@given(st.text(max_size=200))
def test_cursor_round_trip(user: str) -> None:
    cursor = encode_cursor(user)
    if cursor:  # the empty user id has an empty cursor: never a page's last user
        assert decode_cursor(cursor) == user
        frame = parse_client_frame(json.dumps({"type": "members", "cursor": cursor}))
        assert frame == ClientMembers(after=user)


@pytest.mark.parametrize("cursor", ["%%", "YQ=", "YR", "a", "x" * 1025, "", 3, None])
def test_a_cursor_the_server_did_not_give_is_bad_cursor(cursor: Any) -> None:
    with pytest.raises(FrameError) as info:
        decode_cursor(cursor)
    assert info.value.code is ErrorCode.BAD_CURSOR


def test_members_request_defaults() -> None:
    assert parse_client_frame('{"type": "members"}') == ClientMembers(None, 100, None)


class PagingWhileMembersComeAndGo(RuleBasedStateMachine):
    """A client pages with a cursor while users join and leave between pages.

    Every user present from the first page to the last is returned exactly once;
    nobody is returned twice; nobody is returned who was never there.
    """

    def __init__(self) -> None:
        super().__init__()
        self.registry: RoomRegistry[Any] = RoomRegistry()
        self.model: dict[str, Any] = {}  # user -> member
        self.start_paging()

    def start_paging(self) -> None:
        self.cursor: str | None = None
        self.returned: list[str] = []
        self.throughout = set(self.model)
        self.ever = set(self.model)
        self.paging = True

    @rule(user=st.sampled_from([f"u{i}" for i in range(12)]))
    def join(self, user: str) -> None:
        if user in self.model:
            return
        member = Member(ConnectionId("c-" + user), UserId(user), [])
        self.registry.join(ROOM, member)
        self.model[user] = member
        self.ever.add(user)

    @rule(user=st.sampled_from([f"u{i}" for i in range(12)]))
    def leave(self, user: str) -> None:
        member = self.model.pop(user, None)
        if member is not None:
            self.registry.leave(ROOM, member)
            self.throughout.discard(user)

    @rule(limit=st.integers(1, 5))
    def next_page(self, limit: int) -> None:
        users = self.registry.members(ROOM)
        assert sorted(users) == sorted(self.model)
        # Through the wire format: the cursor as the client sends it back.
        cursor = None if self.cursor is None else encode_cursor(self.cursor)
        request = parse_client_frame(
            json.dumps({"type": "members", "limit": limit, "cursor": cursor})
        )
        assert isinstance(request, ClientMembers)
        page, more = page_members(users, request.after, request.limit)
        assert len(page) <= limit
        self.returned += page
        if more:
            self.cursor = page[-1]
            return
        assert len(self.returned) == len(set(self.returned)), self.returned
        assert self.throughout <= set(self.returned), (self.throughout, self.returned)
        assert set(self.returned) <= self.ever
        self.start_paging()

    @invariant()
    def count_matches(self) -> None:
        assert self.registry.user_count(ROOM) == len(self.model)


TestPaging = PagingWhileMembersComeAndGo.TestCase
TestPaging.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
