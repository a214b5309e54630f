"""History wired into the endpoint, in process, on asyncio and trio.

Offsets in message frames, ``ready``'s epoch/offset/recovered, recovery with
``since``, the ``history`` request, ``on_published``, history options and status, an
awaited store (with holds), and the rule for a one-process store in a cluster.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from tests.support.common import SECRET
from tests.support.history import AwaitedMemoryStore
from wschat import ChatHooks, ConnectionManager, TokenVerifier
from wschat.asgi import chat_app
from wschat.backplane.memory import MemoryBackplane, MemoryHub
from wschat.connection import Connection
from wschat.errors import ConfigurationError
from wschat.frames import History
from wschat.history import (
    HistoryStore,
    MemoryHistoryStore,
    Stored,
)
from wschat.history.template import FrameTemplate
from wschat.protocol import (
    DEFAULT_HISTORY_LIMIT,
    MAX_HISTORY_LIMIT,
    Published,
)
from wschat.scrollback import RECOVERY_LIMIT, offset_of
from wschat.status import status_payload
from wschat.testing import (
    ChatClosed,
    ChatTestClient,
    ChatTestSession,
    Error,
    Message,
    Ready,
)

pytestmark = pytest.mark.anyio

ROOM = "lobby"


def verifier() -> TokenVerifier:
    return TokenVerifier(SECRET, algorithms=["HS256"])


@asynccontextmanager
async def running(
    manager: ConnectionManager | None = None, **options: Any
) -> AsyncIterator[ChatTestClient]:
    manager = manager if manager is not None else ConnectionManager(presence=False)
    app = chat_app(manager, verifier(), **options)
    async with ChatTestClient(app, secret=SECRET) as client:
        yield client


async def ready_of(session: ChatTestSession) -> dict[str, Any]:
    ready = await session.receive_until(Ready)
    return dict(ready.data)


async def say(session: ChatTestSession, n: object) -> dict[str, Any]:
    """Send body ``n`` and wait for the echo: its frame."""
    await session.send(n)
    while True:
        msg = await session.receive_until(Message)
        if msg.body == n:
            return dict(msg.data)


async def closed_by(session: ChatTestSession) -> ChatClosed:
    """Read until the server closes the session; how it closed it."""
    try:
        while True:
            await session.receive()
    except ChatClosed as closed:
        return closed


async def next_frames(session: ChatTestSession, count: int) -> list[dict[str, Any]]:
    return [dict((await session.receive()).data) for _ in range(count)]


# -- offsets and ready ---------------------------------------------------------------


async def test_offsets_count_from_one_and_ready_tells_the_position() -> None:
    async with running() as client:
        async with client.connect(ROOM, user="alice") as alice:
            ready = await ready_of(alice)
            assert ready["offset"] == 0
            assert ready["recovered"] is False
            assert isinstance(ready["epoch"], str)
            assert ready["epoch"]
            offsets = [(await say(alice, n))["offset"] for n in range(1, 6)]
            assert offsets == [1, 2, 3, 4, 5]
        async with client.connect(ROOM, user="bob") as bob:
            again = await ready_of(bob)
            assert (again["epoch"], again["offset"]) == (ready["epoch"], 5)
            assert again["recovered"] is False
            # No since: nothing replayed; the next frame is live.
            assert (await say(bob, 99))["offset"] == 6


async def test_each_room_numbers_its_own_messages() -> None:
    async with (
        running() as client,
        client.connect("a", user="alice") as a,
        client.connect("b", user="bob") as b,
    ):
        await ready_of(a)
        await ready_of(b)
        assert (await say(a, 1))["offset"] == 1
        assert (await say(a, 2))["offset"] == 2
        assert (await say(b, 1))["offset"] == 1


async def test_history_off_leaves_frames_as_before() -> None:
    manager = ConnectionManager(history=False, presence=False)
    async with (
        running(manager) as client,
        client.connect(ROOM, user="alice") as alice,
    ):
        ready = await ready_of(alice)
        assert "epoch" not in ready
        assert "offset" not in ready
        assert "offset" not in await say(alice, 1)
        await alice.send_json({"type": "history"})
        error = await alice.receive_until(Error)
        assert error.code == "history_unavailable"
        assert error.message == "history is off on this server"
    assert manager.history_health() == {"enabled": False}


# -- recovery --------------------------------------------------------------------------


async def test_reconnect_with_since_recovers_exactly_the_missed_messages() -> None:
    async with running() as client, client.connect(ROOM, user="alice") as alice:
        epoch = (await ready_of(alice))["epoch"]
        for n in range(1, 4):
            await say(alice, n)
        async with client.connect(
            ROOM, user="bob", query={"since": "1", "epoch": epoch}
        ) as bob:
            ready, *replayed = await next_frames(bob, 3)
            assert ready["type"] == "ready"
            assert (ready["recovered"], ready["offset"]) == (True, 3)
            assert [(f["offset"], f["body"]) for f in replayed] == [(2, 2), (3, 3)]
            # Then live, with no duplicate.
            assert (await say(alice, 4))["offset"] == 4
            nxt = await bob.receive_until(Message)
            assert nxt.data["offset"] == 4


async def test_since_at_the_latest_recovers_nothing_but_says_recovered() -> None:
    async with running() as client, client.connect(ROOM, user="alice") as alice:
        epoch = (await ready_of(alice))["epoch"]
        await say(alice, 1)
        async with client.connect(
            ROOM, user="bob", query={"since": "1", "epoch": epoch}
        ) as bob:
            ready = await ready_of(bob)
            assert (ready["recovered"], ready["offset"]) == (True, 1)
            assert (await say(bob, 2))["offset"] == 2


async def test_an_empty_room_recovers_its_first_messages() -> None:
    async with running() as client:
        async with client.connect(ROOM, user="alice") as alice:
            epoch = (await ready_of(alice))["epoch"]
        async with client.connect(ROOM, user="bob") as bob:
            await ready_of(bob)
            await say(bob, 1)
            await say(bob, 2)
        async with client.connect(
            ROOM, user="alice", query={"since": "0", "epoch": epoch}
        ) as alice:
            ready, *replayed = await next_frames(alice, 3)
            assert ready["recovered"] is True
            assert [f["offset"] for f in replayed] == [1, 2]


@pytest.mark.parametrize(
    ("since", "epoch_of"),
    [
        ("1", lambda epoch: "other-epoch"),  # another epoch
        ("9", lambda epoch: epoch),  # beyond the latest
    ],
)
async def test_another_epoch_or_an_unknown_offset_is_not_recovered(
    since: str, epoch_of: Any
) -> None:
    async with running() as client, client.connect(ROOM, user="alice") as alice:
        epoch = (await ready_of(alice))["epoch"]
        for n in range(1, 4):
            await say(alice, n)
        query = {"since": since, "epoch": epoch_of(epoch)}
        async with client.connect(ROOM, user="bob", query=query) as bob:
            ready = await ready_of(bob)
            assert (ready["recovered"], ready["epoch"], ready["offset"]) == (
                False,
                epoch,
                3,
            )
            # Nothing replayed: the next message is live.
            assert (await say(bob, 4))["offset"] == 4


async def test_since_older_than_what_is_kept_is_not_recovered() -> None:
    manager = ConnectionManager(presence=False, history_max_messages=3)
    async with (
        running(manager) as client,
        client.connect(ROOM, user="alice") as alice,
    ):
        epoch = (await ready_of(alice))["epoch"]
        for n in range(1, 6):  # 3, 4, 5 kept
            await say(alice, n)
        for since, recovered in (("1", False), ("2", True), ("4", True)):
            query = {"since": since, "epoch": epoch}
            async with client.connect(ROOM, user="bob", query=query) as bob:
                ready = await ready_of(bob)
                assert ready["recovered"] is recovered, since
    health = manager.history_health()
    assert (health["recovered"], health["not_recovered"]) == (2, 1)


async def test_a_restarted_store_means_a_new_epoch_and_no_recovery() -> None:
    async with running() as client, client.connect(ROOM, user="alice") as alice:
        epoch = (await ready_of(alice))["epoch"]
        await say(alice, 1)
    async with running() as client:  # a new manager: a new process
        query = {"since": "1", "epoch": epoch}
        async with client.connect(ROOM, user="alice", query=query) as alice:
            ready = await ready_of(alice)
            assert ready["epoch"] != epoch
            assert (ready["recovered"], ready["offset"]) == (False, 0)


async def test_since_in_a_first_auth_frame_recovers() -> None:
    async with (
        running(first_message_auth=True) as client,
        client.connect(ROOM, user="alice") as alice,
    ):
        epoch = (await ready_of(alice))["epoch"]
        await say(alice, 1)
        await say(alice, 2)
        async with client.connect(ROOM) as bob:
            await bob.send_json(
                {
                    "type": "auth",
                    "token": client.token("bob"),
                    "since": 1,
                    "epoch": epoch,
                }
            )
            ready, replayed = await next_frames(bob, 2)
            assert ready["recovered"] is True
            assert replayed["offset"] == 2


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ({"since": "1"}, "bad_request: since and epoch go together"),
        ({"epoch": "e"}, "bad_request: since and epoch go together"),
        ({"since": "-1", "epoch": "e"}, "bad_request: since must be a decimal"),
        ({"since": "x", "epoch": "e"}, "bad_request: since must be a decimal"),
        (
            {"since": "99999999999999999999", "epoch": "e"},
            "bad_request: since must be a decimal",
        ),
        ({"since": "1", "epoch": "a b"}, 'bad_request: "epoch" must be the 1 to 128'),
        ({"since": "1", "epoch": "e" * 129}, 'bad_request: "epoch" must be the 1'),
    ],
)
async def test_bad_since_or_epoch_in_the_query_closes_4400(
    query: dict[str, str], reason: str
) -> None:
    async with (
        running() as client,
        client.connect(ROOM, user="alice", query=query) as alice,
    ):
        with pytest.raises(ChatClosed) as closed:
            await alice.receive()
        assert closed.value.code == 4400
        assert closed.value.reason.startswith(reason), closed.value.reason


async def test_a_bad_since_in_an_auth_frame_closes_4400() -> None:
    async with (
        running(first_message_auth=True) as client,
        client.connect(ROOM) as bob,
    ):
        await bob.send_json(
            {"type": "auth", "token": client.token("bob"), "since": "1"}
        )
        with pytest.raises(ChatClosed) as closed:
            await bob.receive()
        assert closed.value.code == 4400
        assert "since" in closed.value.reason


async def test_recovery_above_the_limit_is_not_recovered() -> None:
    manager = ConnectionManager(
        presence=False, history_max_messages=RECOVERY_LIMIT + 10
    )
    assert RECOVERY_LIMIT == 500
    async with running(manager, rate_limit=None) as client:
        with anyio.fail_after(30):
            async with client.connect(ROOM, user="alice") as alice:
                epoch = (await ready_of(alice))["epoch"]
                for n in range(RECOVERY_LIMIT + 1):
                    await alice.send(n)
                assert (await say(alice, "last"))["offset"] == RECOVERY_LIMIT + 2
            # 501 missed after offset 1: reload; 500 after offset 2: recovered.
            for since, recovered in ((1, False), (2, True)):
                query = {"since": str(since), "epoch": epoch}
                async with client.connect(ROOM, user="bob", query=query) as bob:
                    ready = await ready_of(bob)
                    assert ready["recovered"] is recovered, since


# -- history requests ----------------------------------------------------------------


async def history(session: ChatTestSession, **request: Any) -> dict[str, Any]:
    await session.send_json({"type": "history", **request})
    frame = await session.receive_until("history")
    assert isinstance(frame, History)
    return dict(frame.data)


async def test_history_pages_backwards() -> None:
    async with (
        running(rate_limit=None) as client,
        client.connect(ROOM, user="alice") as alice,
    ):
        epoch = (await ready_of(alice))["epoch"]
        for n in range(1, 13):
            await say(alice, n)
        page = await history(alice, limit=5)
        assert [m["offset"] for m in page["messages"]] == [8, 9, 10, 11, 12]
        assert (page["chat_id"], page["epoch"], page["latest"], page["more"]) == (
            ROOM,
            epoch,
            12,
            True,
        )
        assert page["messages"][0]["body"] == 8
        page = await history(alice, before=8, limit=5)
        assert [m["offset"] for m in page["messages"]] == [3, 4, 5, 6, 7]
        page = await history(alice, before=3, limit=5)
        assert [m["offset"] for m in page["messages"]] == [1, 2]
        assert page["more"] is False
        page = await history(alice, before=1)
        assert page["messages"] == []


async def test_history_limit_defaults_to_50_and_is_capped_at_100() -> None:
    assert (DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT) == (50, 100)
    manager = ConnectionManager(presence=False, history_max_messages=150)
    async with (
        running(manager, rate_limit=None) as client,
        client.connect(ROOM, user="alice") as alice,
    ):
        await ready_of(alice)
        for n in range(1, 131):
            await alice.send(n)
        await say(alice, "end")  # offset 131
        assert len((await history(alice))["messages"]) == 50
        assert len((await history(alice, limit=100))["messages"]) == 100
        page = await history(alice, limit=101)
        assert [m["offset"] for m in page["messages"]] == list(range(32, 132))
        page = await history(alice, limit=10**30)
        assert len(page["messages"]) == 100


@pytest.mark.parametrize(
    "request_",
    [
        {"limit": 0},
        {"limit": -1},
        {"limit": "5"},
        {"limit": 2.5},
        {"limit": True},
        {"before": 0},
        {"before": "8"},
        {"before": False},
        {"before": 2**63},
    ],
)
async def test_bad_history_requests_get_bad_frame(request_: dict[str, Any]) -> None:
    async with running() as client, client.connect(ROOM, user="alice") as alice:
        await ready_of(alice)
        await alice.send_json({"type": "history", **request_})
        error = await alice.receive_until(Error)
        assert error.code == "bad_frame"
        assert "history" in error.message
        # Still open.
        assert (await say(alice, 1))["offset"] == 1


async def test_history_requests_count_against_the_rate_limit() -> None:
    async with (
        running(rate_limit=1, rate_burst=3) as client,
        client.connect(ROOM, user="alice") as alice,
    ):
        await ready_of(alice)
        for _ in range(4):
            await alice.send_json({"type": "history"})
        assert (await closed_by(alice)).code == 4429


# -- on_published --------------------------------------------------------------------


class Recorder(ChatHooks):
    def __init__(self) -> None:
        self.seen: list[Published] = []
        self.called = anyio.Event()

    async def on_message(self, conn: Connection, body: Any) -> Any:
        return {"wrapped": body}

    async def on_published(self, conn: Connection, message: Published) -> None:
        self.seen.append(message)
        self.called.set()


async def test_on_published_receives_the_final_frame() -> None:
    hooks = Recorder()
    async with (
        running(hooks=hooks) as client,
        client.connect(ROOM, user="alice") as alice,
    ):
        await ready_of(alice)
        await alice.send("hi", client_id="c-1")
        frame = (await alice.receive_until(Message)).data
        with anyio.fail_after(5):
            await hooks.called.wait()
    (published,) = hooks.seen
    assert published.frame == json.dumps(frame, separators=(",", ":"))
    assert (published.id, published.ts, published.offset) == (
        frame["id"],
        frame["ts"],
        1,
    )
    assert (published.user, published.chat_id, published.client_id) == (
        "alice",
        ROOM,
        "c-1",
    )
    assert published.body == {"wrapped": "hi"}
    assert published.epoch == frame_epoch(published)


def frame_epoch(published: Published) -> str | None:
    return published.epoch if isinstance(published.epoch, str) else None


async def test_on_published_with_history_off_has_no_offset() -> None:
    hooks = Recorder()
    manager = ConnectionManager(history=False)
    async with (
        running(manager, hooks=hooks) as client,
        client.connect(ROOM, user="alice") as alice,
    ):
        await ready_of(alice)
        await alice.send(1)
        assert "offset" not in (await alice.receive_until(Message)).data
        with anyio.fail_after(5):
            await hooks.called.wait()
    assert (hooks.seen[0].offset, hooks.seen[0].epoch) == (None, None)


async def test_an_on_published_hook_that_raises_closes_1011() -> None:
    class Broken(ChatHooks):
        async def on_published(self, conn: Connection, message: Published) -> None:
            raise RuntimeError("boom")

    async with (
        running(hooks=Broken()) as client,
        client.connect(ROOM, user="alice") as alice,
    ):
        await ready_of(alice)
        await alice.send(1)
        assert (await closed_by(alice)).code == 1011


# -- options and status --------------------------------------------------------------


def test_history_defaults_and_sizes() -> None:
    store = ConnectionManager().history_store
    assert isinstance(store, MemoryHistoryStore)
    assert (store.max_messages, store.ttl, store.max_memory_bytes) == (
        100,
        300.0,
        64 * 1024 * 1024,
    )
    sized = ConnectionManager(
        history_max_messages=7, history_ttl=9, history_max_memory_bytes=4096
    ).history_store
    assert isinstance(sized, MemoryHistoryStore)
    assert (sized.max_messages, sized.ttl, sized.max_memory_bytes) == (7, 9.0, 4096)
    own = MemoryHistoryStore()
    assert ConnectionManager(history=own).history_store is own
    assert ConnectionManager(history=False).history_store is None


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"history": False, "history_max_messages": 5}, "history_max_messages size"),
        ({"history": MemoryHistoryStore(), "history_ttl": 5}, "history_ttl size"),
        ({"history": "memory"}, "history must be True, False or a HistoryStore"),
        ({"history": 1}, "history must be True, False or a HistoryStore"),
        ({"history_max_messages": 0}, "max_messages"),
        ({"history_ttl": float("nan")}, "ttl"),
        ({"history_max_memory_bytes": True}, "max_memory_bytes"),
    ],
)
def test_bad_history_options_say_what_to_change(
    kwargs: dict[str, Any], words: str
) -> None:
    with pytest.raises(ConfigurationError, match=words):
        ConnectionManager(**kwargs)


async def test_status_shows_history_memory_and_health() -> None:
    manager = ConnectionManager(presence=False)
    async with (
        running(manager) as client,
        client.connect(ROOM, user="alice") as alice,
    ):
        await ready_of(alice)
        await say(alice, "x" * 100)
        payload = status_payload(manager)
    history = payload["history"]
    assert payload["status"] == "ok"
    assert history["enabled"] is True
    assert (history["name"], history["healthy"]) == ("memory", True)
    assert (history["rooms"], history["entries"]) == (1, 1)
    assert history["memory_bytes"] > 100
    assert history["max_memory_bytes"] == 64 * 1024 * 1024
    assert (history["evicted"], history["errors"]) == (0, 0)
    json.dumps(payload)


# -- keeping rooms with members ------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_quiet_room_with_members_keeps_its_epoch_past_the_ttl() -> None:
    # The manager retains the rooms with members every third of the ttl (0.5 s
    # here), before any call to the store: a quiet room with members is never
    # forgotten, however long it stays quiet.
    store = MemoryHistoryStore(ttl=0.5)
    manager = ConnectionManager(history=store, presence=False)
    async with running(manager, rate_limit=None) as client:
        async with (
            client.connect("kept", user="alice") as alice,
            client.connect("other", user="bob") as bob,
        ):
            epoch = (await ready_of(alice))["epoch"]
            await ready_of(bob)
            await say(alice, 1)
            with anyio.fail_after(10):
                for n in range(30):  # 1.5 s: three times the ttl
                    await anyio.sleep(0.05)
                    await say(bob, n)
            assert (await say(alice, 2))["offset"] == 2
            assert (await history(alice))["epoch"] == epoch
        # Nobody in it any more: forgotten after the ttl, a new epoch.
        await anyio.sleep(1.0)
        async with client.connect("kept", user="alice") as alice:
            ready = await ready_of(alice)
            assert (ready["offset"], ready["epoch"] != epoch) == (0, True)


async def test_without_retain_an_idle_room_would_restart() -> None:
    # The control: the same store used directly forgets a room after its ttl.
    clock = Clock()
    store = MemoryHistoryStore(ttl=10, clock=clock)
    template = FrameTemplate('{"type":"message","offset":', "}")
    first = await store.append("kept", template)
    clock.now += 40
    await store.append("other", template)
    again = await store.append("kept", template)
    assert (again.offset, again.epoch != first.epoch) == (1, True)


# -- an awaited store ----------------------------------------------------------------


class AwaitedStore(AwaitedMemoryStore):
    """A store that awaits (a memory store behind checkpoints), optionally failing."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__("awaited")
        self.delay = delay
        self.fail = False
        self.ttl = 300.0

    async def _wait(self) -> None:
        await anyio.sleep(self.delay)
        if self.fail:
            raise OSError("store down")

    async def append(self, chat_id: str, template: FrameTemplate) -> Stored:
        await self._wait()
        return self.inner.append_nowait(chat_id, template)


def test_the_awaited_test_store_is_a_history_store() -> None:
    assert isinstance(AwaitedStore(), HistoryStore)


async def test_an_awaited_store_numbers_recovers_and_pages() -> None:
    store = AwaitedStore(delay=0.001)
    manager = ConnectionManager(history=store, presence=False)
    assert manager.history_sync is False
    with pytest.raises(ConfigurationError, match=r"await manager\.publish"):
        manager.publish_nowait(object(), 1)  # type: ignore[arg-type]
    async with (
        running(manager) as client,
        client.connect(ROOM, user="alice") as alice,
    ):
        ready = await ready_of(alice)
        assert (ready["offset"], ready["recovered"]) == (0, False)
        assert [(await say(alice, n))["offset"] for n in (1, 2, 3)] == [1, 2, 3]
        query = {"since": "1", "epoch": ready["epoch"]}
        async with client.connect(ROOM, user="bob", query=query) as bob:
            ready_b, *replayed = await next_frames(bob, 3)
            assert (ready_b["type"], ready_b["recovered"]) == ("ready", True)
            assert [f["offset"] for f in replayed] == [2, 3]
        page = await history(alice, limit=2)
        assert [m["offset"] for m in page["messages"]] == [2, 3]


async def test_an_awaited_store_recovers_without_gap_while_the_room_talks() -> None:
    store = AwaitedStore(delay=0.002)
    manager = ConnectionManager(history=store, presence=False)
    total = 120
    async with (
        running(manager, rate_limit=None) as client,
        client.connect(ROOM, user="alice") as alice,
    ):
        epoch = (await ready_of(alice))["epoch"]
        await say(alice, 0)
        got: dict[int, list[int]] = {}

        async def talk() -> None:
            for n in range(1, total + 1):
                await alice.send(n)
                await anyio.sleep(0.001)

        async def join(k: int) -> None:
            query = {"since": "1", "epoch": epoch}
            async with client.connect(ROOM, user=f"u{k}", query=query) as bob:
                ready = await ready_of(bob)
                assert ready["recovered"] is True
                offsets: list[int] = []
                while not offsets or offsets[-1] < total + 1:
                    msg = await bob.receive_until(Message)
                    offsets.append(msg.data["offset"])
                got[k] = offsets

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(talk)
                for k in range(8):
                    await anyio.sleep(0.01)
                    tg.start_soon(join, k)
    for offsets in got.values():
        assert offsets == list(range(2, total + 2))


async def test_a_failing_store_answers_not_sent_and_history_unavailable() -> None:
    store = AwaitedStore()
    manager = ConnectionManager(history=store, presence=False)
    async with (
        running(manager) as client,
        client.connect(ROOM, user="alice") as alice,
    ):
        await ready_of(alice)
        store.fail = True
        await alice.send("lost?", client_id="c-7")
        error = await alice.receive_until(Error)
        assert (error.code, error.data["client_id"]) == ("not_sent", "c-7")
        await alice.send_json({"type": "history"})
        error = await alice.receive_until(Error)
        assert error.code == "history_unavailable"
        payload = status_payload(manager)
        assert payload["status"] == "degraded"
        assert payload["history"]["healthy"] is False
        store.fail = False
        assert (await say(alice, 2))["offset"] == 1


async def test_a_join_while_the_store_fails_is_told_nothing() -> None:
    store = AwaitedStore()
    store.fail = True
    manager = ConnectionManager(history=store, presence=False)
    async with running(manager) as client:
        query = {"since": "3", "epoch": "e"}
        async with client.connect(ROOM, user="alice", query=query) as alice:
            ready = await ready_of(alice)
            assert (ready["epoch"], ready["offset"], ready["recovered"]) == (
                None,
                None,
                False,
            )


# -- clustered -----------------------------------------------------------------------


async def test_a_one_process_store_is_off_while_clustered() -> None:
    hub = MemoryHub()
    manager = ConnectionManager(backplane=MemoryBackplane(hub), presence=False)
    async with running(manager) as client:
        health = manager.history_health()
        assert health["enabled"] is False
        assert "shared backplane" in health["detail"]
        async with client.connect(ROOM, user="alice") as alice:
            ready = await ready_of(alice)
            assert "epoch" not in ready
            assert "offset" not in await say(alice, 1)
            await alice.send_json({"type": "history"})
            error = await alice.receive_until(Error)
            assert error.code == "history_unavailable"
            assert "cluster" in error.message
    # Not running: one process again, history on.
    assert manager.history_health()["enabled"] is True


class PublishingStore(AwaitedStore):
    """An awaited store that publishes in its append step, as a Redis store does."""

    def __init__(self, backplane: MemoryBackplane) -> None:
        super().__init__()
        self.backplane = backplane
        self.local_only = False
        self.calls: list[tuple[str, bytes]] = []

    async def append_and_publish(
        self, chat_id: str, template: FrameTemplate, channel: str, prefix: bytes
    ) -> Stored:
        stored = self.inner.append_nowait(chat_id, template)
        self.calls.append((channel, prefix))
        await self.backplane.publish(channel, prefix + stored.frame.encode())
        return stored


async def test_a_shared_store_numbers_the_same_on_every_process() -> None:
    hub = MemoryHub()
    back_a, back_b = MemoryBackplane(hub), MemoryBackplane(hub)
    store = PublishingStore(back_a)
    a = ConnectionManager(backplane=back_a, history=store, presence=False)
    b = ConnectionManager(backplane=back_b, history=store, presence=False)
    async with (
        running(a) as client_a,
        running(b) as client_b,
        client_a.connect(ROOM, user="alice") as alice,
        client_b.connect(ROOM, user="bob") as bob,
    ):
        await ready_of(alice)
        await ready_of(bob)
        assert a.history_health()["enabled"] is True
        for n in range(1, 4):
            mine = await say(alice, n)
            theirs = await bob.receive_until(Message)
            assert mine["offset"] == theirs.data["offset"] == n
        channel, prefix = store.calls[0]
        assert channel == f"r:{ROOM}"
        assert prefix == b"m||"  # no origin: every process delivers it, in order


def test_offset_of_reads_message_frames_only() -> None:
    assert offset_of('{"type":"message","id":"m","offset":12}') == 12
    assert offset_of('{"type":"presence","offset":12}') is None
    assert offset_of('{"type":"message","id":"m"}') is None
    assert offset_of('{"type":"message","offset":x}') is None
