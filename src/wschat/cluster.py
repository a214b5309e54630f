"""Clustered delivery: a manager's rooms shared with other processes over a backplane.

Imports: anyio and the standard library (core layer).

A :class:`Cluster` is the manager's :class:`~wschat.delivery.Delivery` while a
manager with a shared backplane (``RedisBackplane``) runs (``async with manager``).
It keeps the manager's synchronous, never blocking API intact, and uses nothing of
the manager but its local surface (:class:`~wschat.delivery.LocalRooms`). It has
three parts:

- the :class:`~wschat.publisher.Publisher` carries what leaves this process, in
  order, through one bounded queue, and reports what did not get out
  (``delivery_degraded``, then ``resync`` for the rooms concerned);
- :class:`~wschat.presence.SharedPresence` holds this process's presence leases and
  its view of every process's members;
- this module joins rooms and receives. Control operations (subscribe a room when
  its first local member joins, presence leases, unsubscribe after the last one
  leaves, heartbeats) run one at a time, in order, in one worker task. Reference
  counting lives here, not in the backplane: the first joiner of a room triggers
  one ``subscribe``; the connections that join while it is in flight wait for it,
  and are attached (and get their ``ready`` frame) once messages published from
  then on are sure to arrive. No joiner is lost, however many arrive at once.
  Messages from the backplane (:meth:`Cluster.deliver`) go to the local members;
  after a reconnect (:meth:`Cluster.resync`) they get a ``resync`` frame.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, Final

import anyio
from anyio.abc import TaskStatus

from . import errors
from .backplane.base import Backplane, BackplaneUnavailable, UserSlots
from .backplane.envelope import (
    KIND_CLOSE,
    KIND_MESSAGE,
    KIND_PRESENCE,
    KIND_RESYNC,
    KIND_USER,
    USERS_CHANNEL,
    room_channel,
    room_of,
)
from .connection import Connection
from .delivery import LocalRooms
from .errors import ConfigurationError, TooManyConnections, WSChatError
from .ids import ChatId, UserId
from .presence import SharedPresence
from .protocol import encode_resync
from .publisher import PEER_RESYNC_DETAIL, Publisher

__all__ = ["Cluster", "remote_error"]

log = logging.getLogger("wschat")

RESYNC_DETAIL: Final = (
    "this server lost its link to the other servers for a while; "
    "messages may have been missed"
)

_Op = Callable[[], Awaitable[None]]

#: Seconds a connection waits for the backplane to take its slot before it is
#: counted in this process only.
RESERVE_TIMEOUT: Final = 2.0
#: Seconds a stopping process spends freeing its slots, at most.
RELEASE_TIMEOUT: Final = 2.0


class Cluster:
    """Delivery across processes sharing a backplane, while the manager runs.

    Args:
        local: The manager's local surface.
        backplane: The shared backplane.
        presence_ttl: Seconds a presence lease lives without renewal.
        publish_queue: Frames that may wait to be published.
    """

    def __init__(
        self,
        local: LocalRooms,
        backplane: Backplane,
        *,
        presence_ttl: float,
        publish_queue: int,
    ) -> None:
        self.local = local
        self.backplane = backplane
        self.ttl = presence_ttl
        self._node = local.node_id.encode()
        self.publisher = Publisher(backplane, local.node_id, publish_queue)
        self.presence = SharedPresence(local, backplane, self.publisher, presence_ttl)
        self._ready_rooms: set[ChatId] = set()
        # Users joining here whom the view did not know (user_joining, then
        # user_joined, one right after the other).
        self._unknown: set[tuple[ChatId, UserId]] = set()
        self._subscribed: set[ChatId] = set()
        # Joiners waiting for each room's subscription.
        self._pending: dict[ChatId, int] = {}
        # Bounded by the connections: each adds at most a join and a leave.
        self._ops: deque[_Op] = deque()
        self._wake = anyio.Event()
        self._refresh_queued = False
        self._resync_logged_at = -1e9
        self._stack: contextlib.AsyncExitStack | None = None
        # The per-user cap across processes: the slots this process holds, per user.
        self._user_slots: UserSlots | None = (
            backplane if isinstance(backplane, UserSlots) else None
        )
        self._slots: dict[UserId, set[str]] = {}
        self._slot_count = 0
        self._slot_warned = False

    # -- running ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start the listener, the control worker, the publisher and the heartbeat.

        Raises:
            ConfigurationError: The backplane cannot run here (e.g. Redis on trio).
        """
        stack = contextlib.AsyncExitStack()
        stack.callback(self.publisher.close)
        try:
            tg = await stack.enter_async_context(anyio.create_task_group())
            await tg.start(self._run)
            stack.callback(tg.cancel_scope.cancel)
        except BaseException as exc:
            await stack.aclose()
            cause = _config_error(exc)
            if cause is not None and cause is not exc:
                raise cause from None
            raise
        self._stack = stack

    async def stop(self) -> None:
        """Give up the leases (bounded, best effort), then stop every task.

        The manager has handed delivery back to local mode before.
        """
        stack, self._stack = self._stack, None
        if stack is None:
            return
        async with stack:
            await self.presence.leave_all()
            await self._release_all_slots()

    async def _run(self, *, task_status: TaskStatus[None]) -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(self.backplane.run, self)
            try:
                await self.backplane.subscribe(USERS_CHANNEL)
            except BackplaneUnavailable:
                log.warning("wschat backplane unreachable at start; will retry")
            tg.start_soon(self._work)
            await tg.start(self.publisher.run)
            tg.start_soon(self._heartbeat)
            for chat_id in list(self.local.registry):
                self._enqueue(partial(self._ensure_room, chat_id))
            self._enqueue(self._refresh)
            task_status.started()

    def health(self) -> dict[str, Any]:
        """The backplane's health and how many frames did not get out."""
        health = self.backplane.health().as_dict()
        health["undelivered"] = self.publisher.undelivered
        return health

    # -- the manager's delivery (synchronous, never blocking) ------------------------

    def join(self, conn: Connection) -> None:
        """Attach ``conn`` at once if its room is ready, else once it is."""
        chat_id = conn.chat_id
        if chat_id in self._ready_rooms:
            self.local.attach(conn)
            return
        # First local joiner of a room: attached once the backplane confirms the
        # subscription, so nothing published after ``ready`` is missed.
        self._pending[chat_id] = self._pending.get(chat_id, 0) + 1
        self._enqueue(lambda: self._join(conn))

    def user_joining(self, chat_id: ChatId, user: UserId) -> None:
        presence = self.presence
        if not presence.knows(chat_id, user):
            self._unknown.add((chat_id, user))
        presence.local_joined(chat_id, user)

    def user_joined(self, chat_id: ChatId, user: UserId) -> None:
        known = (chat_id, user) not in self._unknown
        self._unknown.discard((chat_id, user))
        presence = self.presence
        self._enqueue(lambda: presence.join(chat_id, user, known))

    def user_left(self, chat_id: ChatId, user: UserId) -> None:
        self._enqueue(lambda: self.presence.leave(chat_id, user))
        if self.local.registry.room(chat_id) is None:
            # The last local member left: unsubscribe (unless someone rejoins).
            self._enqueue(lambda: self._release(chat_id))

    def broadcast(self, chat_id: ChatId, frame: str) -> int:
        self.publisher.forward(room_channel(chat_id), KIND_MESSAGE, frame, None)
        return self.local.broadcast_local(chat_id, frame)

    def publish(self, sender: Connection, frame: str) -> int:
        chat_id = sender.chat_id
        delivered = self.local.broadcast_local(chat_id, frame)
        self.publisher.forward(room_channel(chat_id), KIND_MESSAGE, frame, sender)
        return delivered

    def send_to_user(self, user_id: UserId, frame: str) -> int:
        payload = json.dumps([user_id, frame])
        self.publisher.forward(USERS_CHANNEL, KIND_USER, payload, None)
        return self.local.send_to_user_local(user_id, frame)

    def close_user(self, user_id: UserId, error: WSChatError) -> int:
        payload = json.dumps([user_id, error.code, error.detail, int(error.close_code)])
        self.publisher.forward(USERS_CHANNEL, KIND_CLOSE, payload, None)
        return self.local.close_user_local(user_id, error)

    def close_room(self, chat_id: ChatId, error: WSChatError) -> int:
        payload = json.dumps([error.code, error.detail, int(error.close_code)])
        self.publisher.forward(room_channel(chat_id), KIND_CLOSE, payload, None)
        return self.local.close_room_local(chat_id, error)

    def members(self, chat_id: ChatId) -> list[UserId]:
        return self.presence.members(chat_id)

    def user_count(self, chat_id: ChatId) -> int:
        return self.presence.user_count(chat_id)

    def sample_members(self, chat_id: ChatId, limit: int) -> list[UserId]:
        return self.presence.sample(chat_id, limit)

    async def room_members(self, chat_id: ChatId) -> list[UserId]:
        with contextlib.suppress(BackplaneUnavailable):
            users = await self.backplane.presence_members(chat_id)
            return [UserId(u) for u in users]
        return sorted(self.members(chat_id))

    async def reserve(self, user_id: UserId, cap: int) -> str | None:
        """Take a slot of the user's cap on the backplane (see ``Delivery``)."""
        slots = self._user_slots
        if slots is None:
            return None
        self._slot_count += 1
        slot = f"{self.local.node_id}/{self._slot_count}"
        try:
            with anyio.fail_after(RESERVE_TIMEOUT):
                taken = await slots.user_slot_acquire(user_id, slot, cap, self.ttl)
        except (BackplaneUnavailable, TimeoutError) as exc:
            # Counted in this process only until the backplane answers again: a
            # user may then hold ``cap`` connections in each process.
            if not self._slot_warned:
                self._slot_warned = True
                log.warning(
                    "wschat: the per-user connection cap is counted per process "
                    "while the backplane cannot be reached (%s)",
                    exc if isinstance(exc, BackplaneUnavailable) else "no answer",
                )
            return None
        self._slot_warned = False
        if not taken:
            raise TooManyConnections(
                f"at most {cap} connections per user, across all servers"
            )
        self._slots.setdefault(user_id, set()).add(slot)
        return slot

    def release(self, user_id: UserId, slot: str) -> None:
        """Free a slot; the backplane hears of it from the control worker."""
        held = self._slots.get(user_id)
        if held is None or slot not in held:
            return
        held.discard(slot)
        if not held:
            del self._slots[user_id]
        slots = self._user_slots
        if slots is not None:
            self._enqueue(lambda: slots.user_slots_release(user_id, (slot,)))

    async def _release_all_slots(self) -> None:
        """At stop: free every slot held here (bounded, best effort)."""
        slots, held = self._user_slots, self._slots
        self._slots = {}
        if slots is None or not held:
            return
        with anyio.move_on_after(RELEASE_TIMEOUT):
            for user, mine in held.items():
                with contextlib.suppress(Exception):
                    await slots.user_slots_release(user, mine)

    async def _refresh_slots(self) -> None:
        slots = self._user_slots
        if slots is None or not self._slots:
            return
        try:
            await slots.user_slots_refresh(
                {user: sorted(mine) for user, mine in self._slots.items()}, self.ttl
            )
        except BackplaneUnavailable as exc:
            log.debug("wschat connection slots not renewed: %s", exc)

    # -- called by the backplane (the Receiver protocol) -----------------------------

    def deliver(self, channel: str, data: bytes) -> None:
        """A message from the backplane; skip our own echo, fan out the rest."""
        local = self.local
        try:
            kind, origin, payload = data.split(b"|", 2)
            if origin == self._node:
                return
            text = payload.decode()
            chat_id = room_of(channel)
            if kind == KIND_RESYNC:
                # Another process's messages may not have reached us.
                if chat_id is not None:
                    self._resync_local([chat_id], peer=True)
                elif channel == USERS_CHANNEL:
                    self._resync_local(list(local.registry), peer=True)
                return
            if chat_id is not None:
                if kind == KIND_CLOSE:
                    code, detail, *close_code = json.loads(text)
                    local.close_room_local(chat_id, _error(code, detail, close_code))
                    return
                if kind == KIND_PRESENCE:
                    info = json.loads(text)
                    event, user = info["event"], info["user"]
                    if event not in ("join", "leave") or not isinstance(user, str):
                        raise ValueError("not a presence event")
                    self.presence.heard(chat_id, event, UserId(user))
                    if local.presence:
                        # Coalesced with this interval's other joins and leaves.
                        local.announce_presence(chat_id, event, UserId(user))
                    return
                local.broadcast_local(chat_id, text)
            elif channel == USERS_CHANNEL:
                user, *rest = json.loads(text)
                if kind == KIND_USER:
                    local.send_to_user_local(UserId(user), rest[0])
                elif kind == KIND_CLOSE:
                    code, detail, *close_code = rest
                    local.close_user_local(
                        UserId(user), _error(code, detail, close_code)
                    )
        except (ValueError, KeyError, TypeError, IndexError):
            log.warning("wschat ignored a malformed backplane message on %r", channel)

    def resync(self, channels: Sequence[str]) -> None:
        """After a reconnect: tell local members they may have missed messages."""
        # The backplane answers again: announce the rooms that lost our traffic.
        self.publisher.wake()
        rooms = [r for r in map(room_of, channels) if r is not None]
        if not rooms:
            return
        self._resync_local(rooms, peer=False)
        # A reconnect confirms rooms one by one: warn and re-create leases once.
        now = time.monotonic()
        if now - self._resync_logged_at > 5.0:
            self._resync_logged_at = now
            log.warning("wschat backplane reconnected; sending resync to its rooms")
        if not self._refresh_queued:
            self._refresh_queued = True
            self._enqueue(self._refresh)

    # -- internals -------------------------------------------------------------------

    def _resync_local(self, rooms: Sequence[ChatId], *, peer: bool) -> None:
        detail = PEER_RESYNC_DETAIL if peer else RESYNC_DETAIL
        for chat_id in rooms:
            self.local.broadcast_local(chat_id, encode_resync(chat_id, detail))

    def _enqueue(self, op: _Op) -> None:
        self._ops.append(op)
        self._wake.set()

    async def _work(self) -> None:
        while True:
            if not self._ops:
                self._wake = anyio.Event()
                await self._wake.wait()
                continue
            op = self._ops.popleft()
            try:
                await op()
            except BackplaneUnavailable as exc:
                log.debug("wschat backplane operation skipped: %s", exc)
            except Exception:
                log.exception("wschat backplane operation failed")

    async def _heartbeat(self) -> None:
        while True:
            await anyio.sleep(self.ttl / 3)
            if not self._refresh_queued:
                self._refresh_queued = True
                self._enqueue(self._refresh)

    async def _refresh(self) -> None:
        self._refresh_queued = False
        try:
            await self.presence.refresh(self._ready_rooms)
        finally:
            await self._refresh_slots()

    async def _ensure_room(self, chat_id: ChatId) -> None:
        if chat_id in self._ready_rooms:
            return
        if chat_id not in self._subscribed:
            self._subscribed.add(chat_id)
            try:
                await self.backplane.subscribe(room_channel(chat_id))
            except BackplaneUnavailable as exc:
                log.debug("wschat subscribe of %r deferred: %s", chat_id, exc)
        await self.presence.snapshot(chat_id)
        self._ready_rooms.add(chat_id)

    async def _join(self, conn: Connection) -> None:
        chat_id = conn.chat_id
        try:
            await self._ensure_room(chat_id)
        except Exception:
            # Never leave a joiner without its ready frame: serve it degraded.
            log.exception("wschat could not set up room %r on the backplane", chat_id)
        finally:
            left = self._pending[chat_id] - 1
            if left:
                self._pending[chat_id] = left
            else:
                del self._pending[chat_id]
        if not self.local.attach(conn):
            # It left while it waited (or the manager stopped and attached it).
            await self._release(chat_id)

    async def _release(self, chat_id: ChatId) -> None:
        if self._pending.get(chat_id) or self.local.registry.room(chat_id):
            return
        self._ready_rooms.discard(chat_id)
        self.presence.forget(chat_id)
        if chat_id in self._subscribed:
            self._subscribed.discard(chat_id)
            await self.backplane.unsubscribe(room_channel(chat_id))


#: Error classes rebuilt for applications' own errors closed in other processes, by
#: reason code and close code; at most _MAX_REMOTE of them.
_REMOTE: dict[tuple[str, int], type[WSChatError]] = {}
_MAX_REMOTE: Final = 64
_REASON_CODE: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")


def remote_error(code: str, detail: str, close_code: object = None) -> WSChatError:
    """The error another process closed its connections with, rebuilt here.

    A reason code :mod:`wschat.errors` defines is its class. An application's own
    error class closes with its reason code and close code when the close code is
    an application's (4000 to 4999) and the reason code is snake_case (at most 64
    such classes; they are made here once each). Anything else, or a process of
    an earlier release that sent no close code, closes as
    :class:`~wschat.errors.Forbidden`, with the detail.

    Args:
        code: The reason code, such as ``going_away``.
        detail: The words after it.
        close_code: The close code the other process closed with, if it said.
    """
    cls = errors.error_class(code)
    if cls is not errors.Forbidden or code == errors.Forbidden.code:
        return cls(detail)
    if (
        type(close_code) is not int
        or not 4000 <= close_code <= 4999
        or not _REASON_CODE.fullmatch(code)
    ):
        return cls(detail)
    key = (code, close_code)
    remote = _REMOTE.get(key)
    if remote is None:
        if len(_REMOTE) >= _MAX_REMOTE:
            return cls(detail)
        remote = _REMOTE[key] = type(
            "RemoteError",
            (WSChatError,),
            {
                "__module__": __name__,
                "__doc__": "An application's error, closed in another process.",
                "close_code": close_code,
                "code": code,
                "http_status": 403,
            },
        )
    return remote(detail)


def _error(code: str, detail: str, close_code: list[object]) -> WSChatError:
    """``close_code``: what followed the detail in the message (the close code;
    nothing from a process of an earlier release)."""
    return remote_error(code, detail, close_code[0] if close_code else None)


def _config_error(exc: BaseException) -> ConfigurationError | None:
    """Find a ConfigurationError in task groups' exception groups, to raise it plain."""
    if isinstance(exc, ConfigurationError):
        return exc
    for inner in getattr(exc, "exceptions", ()):
        found = _config_error(inner)
        if found is not None:
            return found
    return None
