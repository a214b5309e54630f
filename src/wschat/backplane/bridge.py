"""The manager's side of a shared backplane: envelopes, subscriptions and presence.

Imports: anyio and the standard library (core layer).

A :class:`Bridge` exists while a :class:`~wschat.ConnectionManager` with a shared
backplane runs (``async with manager``). It keeps the manager's synchronous, never
blocking API intact: whatever must cross processes goes through two bounded paths.

- Outbound frames (room broadcasts, presence, per-user sends and closes) go into one
  bounded stream drained by one publisher task, so each sender's order is kept; when
  the backplane has ``publish_many``, what queued up meanwhile leaves in one batch. The
  sender's own process delivers to its local members directly, before publishing, so
  local delivery survives an outage; a message that is not published earns its
  sender one ``error`` frame coded ``delivery_degraded`` (naming the message's
  ``id`` and ``client_id``). A publish the engine has not answered is in doubt: the
  sender hears nothing until the engine tells whether it went out.
- Every room whose traffic from this process did not reach the others is remembered,
  even if its members left since, and announced on the room's channel once the
  engine answers again: every process then sends its members of that room a
  ``resync`` frame. (A process whose own link broke resyncs all its rooms itself.)
- Control operations (subscribe a room when its first local member joins, presence
  leases, unsubscribe after the last one leaves, heartbeats) run one at a time, in
  order, in one worker task. Reference counting lives here, not in the backplane:
  the first joiner of a room triggers one ``subscribe``; the connections that join
  while it is in flight wait for it and get their ``ready`` frame once messages
  published from then on are sure to arrive. No joiner is lost, however many arrive
  at once.

Envelopes are ``<kind>|<origin node>|<payload>``; a process skips its own echo by the
origin. Kinds: ``m`` a frame for a room, ``p`` a presence frame, ``u`` a frame for a
user, ``c`` close a user's connections (on the users channel) or a room's (on the
room's channel), ``s`` the origin's messages to a room (on the room's channel; its
payload is a ``resync`` frame, which older versions pass on as is) or to every room
(on the users channel) may have been lost.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import anyio
from anyio.abc import TaskGroup, TaskStatus

from .. import errors
from ..connection import Connection
from ..ids import ChatId, UserId
from ..protocol import encode_presence, encode_resync
from .base import Backplane, BackplaneUnavailable, PublishInDoubt

if TYPE_CHECKING:
    from ..manager import ConnectionManager

__all__ = ["USERS_CHANNEL", "Bridge", "room_channel"]

log = logging.getLogger("wschat")

#: The channel every process subscribes to for per-user operations.
USERS_CHANNEL: Final = "u"
_ROOM: Final = "r:"
KIND_MESSAGE: Final = b"m"
KIND_PRESENCE: Final = b"p"
KIND_USER: Final = b"u"
KIND_CLOSE: Final = b"c"
KIND_RESYNC: Final = b"s"
DEGRADED_DETAIL: Final = (
    "this message reached only the members connected to this server; "
    "members on other servers may have missed it"
)
RESYNC_DETAIL: Final = (
    "this server lost its link to the other servers for a while; "
    "messages may have been missed"
)
PEER_RESYNC_DETAIL: Final = (
    "another server could not pass on messages for a while; "
    "messages may have been missed"
)

#: Rooms remembered as having lost traffic; past that, every room is resynced.
MAX_LOST_ROOMS: Final = 1000
#: Seconds between checks whether the backplane answers again, while rooms wait.
ANNOUNCE_RETRY: Final = 0.1
#: Distinct rooms whose presence failed, remembered so each is warned about once.
MAX_WARNED_ROOMS: Final = 1024

#: At most this many queued frames go to ``publish_many`` at once.
MAX_PUBLISH_BATCH: Final = 256

FirstFrame = Callable[[Connection], str]
#: A frame waiting to be published: channel, envelope, sender (for a chat message).
_Item = tuple[str, bytes, Connection | None]
_Op = Callable[[], Awaitable[None]]


def room_channel(chat_id: str) -> str:
    """The logical channel of a room (the backplane adds its fixed prefix)."""
    return _ROOM + chat_id


def _degraded_frame(data: bytes) -> str:
    """The sender's ``delivery_degraded`` error, naming the message (id, client_id)."""
    error: dict[str, Any] = {
        "type": "error",
        "code": errors.ErrorCode.DELIVERY_DEGRADED,
        "message": DEGRADED_DETAIL,
    }
    try:
        frame = json.loads(data.split(b"|", 2)[2])
    except (ValueError, IndexError):
        frame = None
    if isinstance(frame, dict) and frame.get("type") == "message":
        for key in ("id", "client_id"):
            if frame.get(key) is not None:
                error[key] = frame[key]
    return json.dumps(error, separators=(",", ":"))


class Bridge:
    """Links one manager to a shared backplane while the manager runs."""

    def __init__(
        self,
        manager: ConnectionManager,
        backplane: Backplane,
        *,
        presence_ttl: float,
        publish_queue: int,
    ) -> None:
        self.manager = manager
        self.backplane = backplane
        self.ttl = presence_ttl
        self.undelivered = 0
        self._node = manager.node_id.encode()
        self._ready_rooms: set[ChatId] = set()
        self._subscribed: set[ChatId] = set()
        self._global: dict[ChatId, set[UserId]] = {}
        self._pending: dict[ChatId, int] = {}
        self._waiting: dict[str, tuple[Connection, FirstFrame | None]] = {}
        self._leased: set[tuple[ChatId, UserId]] = set()
        # Bounded by the connections: each adds at most a join and a leave.
        self._ops: deque[_Op] = deque()
        self._wake = anyio.Event()
        self._send, self._receive = anyio.create_memory_object_stream[_Item](
            publish_queue
        )
        self._outage_logged = False
        self._refresh_queued = False
        self._resync_logged_at = -1e9
        # Rooms whose traffic from here did not reach the others (announced later).
        self._lost: set[ChatId] = set()
        self._lost_all = False
        self._poke = anyio.Event()
        self._presence_warned: set[ChatId] = set()
        self._tg: TaskGroup | None = None

    # -- running -------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        """Run the listener, the control worker, the publisher and the heartbeat."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            await tg.start(self.backplane.run, self)
            try:
                await self.backplane.subscribe(USERS_CHANNEL)
            except BackplaneUnavailable:
                log.warning("wschat backplane unreachable at start; will retry")
            tg.start_soon(self._work)
            tg.start_soon(self._publish_loop)
            tg.start_soon(self._heartbeat)
            tg.start_soon(self._announce_lost)
            for chat_id in list(self.manager.registry):
                self._enqueue(partial(self._ensure_room, chat_id))
            self._enqueue(self._refresh)
            task_status.started()

    async def stop(self) -> None:
        """Hand the manager back to local mode; give up leases (bounded, best effort).

        Connections still waiting for a subscription are attached at once.
        """
        for conn, first_frame in list(self._waiting.values()):
            if self.manager._connections.get(conn.id) is conn:
                self.manager._attach(conn, first_frame)
        self._waiting.clear()
        with anyio.move_on_after(2.0, shield=True):
            for chat_id in list(self.manager.registry):
                room = self.manager.registry.room(chat_id)
                for user in list(room.users) if room else ():
                    try:
                        gone = await self.backplane.presence_leave(
                            chat_id, user, self.manager.node_id
                        )
                        if gone and self.manager.presence:
                            frame = self._presence_frame(chat_id, "leave", user)
                            data = self._envelope(KIND_PRESENCE, frame)
                            await self.backplane.publish(room_channel(chat_id), data)
                    except BackplaneUnavailable:
                        return

    # -- called by the manager (synchronous, never blocking) -------------------------

    def room_ready(self, chat_id: ChatId) -> bool:
        """Whether a joiner can be attached at once (subscription confirmed)."""
        return chat_id in self._ready_rooms

    def join_later(self, conn: Connection, first_frame: FirstFrame | None) -> None:
        """Attach ``conn`` to its room once the room's subscription is confirmed."""
        chat_id = conn.chat_id
        self._pending[chat_id] = self._pending.get(chat_id, 0) + 1
        self._waiting[conn.id] = (conn, first_frame)
        self._enqueue(lambda: self._join(conn))

    def user_joined(self, chat_id: ChatId, user: UserId) -> None:
        """The user's first local connection joined the room."""
        self._enqueue(lambda: self._presence_join(chat_id, user))

    def user_left(self, chat_id: ChatId, user: UserId) -> None:
        """The user's last local connection left the room."""
        self._enqueue(lambda: self._presence_leave(chat_id, user))

    def room_emptied(self, chat_id: ChatId) -> None:
        """The room has no local connection left."""
        self._enqueue(lambda: self._release(chat_id))

    def members(self, chat_id: ChatId) -> list[UserId]:
        """Users in the room in every process, as this process last heard."""
        local = self.manager.registry.members(chat_id)
        seen = self._global.get(chat_id)
        if not seen:
            return local
        mine = set(local)
        return local + sorted(u for u in seen if u not in mine)

    def user_count(self, chat_id: ChatId) -> int:
        """Distinct users in the room in every process, as this process last heard."""
        seen = self._global.get(chat_id)
        if not seen:
            return self.manager.registry.user_count(chat_id)
        room = self.manager.registry.room(chat_id)
        local = room.users.keys() if room else ()
        return len(seen.union(local))

    def forward_room(
        self, chat_id: ChatId, frame: str, sender: Connection | None = None
    ) -> None:
        """Publish a frame to the room's members in the other processes."""
        self._forward(room_channel(chat_id), KIND_MESSAGE, frame, sender)

    def forward_user(self, user: UserId, frame: str) -> None:
        """Publish a frame for the user's connections in the other processes."""
        self._forward(USERS_CHANNEL, KIND_USER, json.dumps([user, frame]), None)

    def forward_close_room(self, chat_id: ChatId, error: errors.WSChatError) -> None:
        """Close the room's connections in the other processes."""
        payload = json.dumps([error.code, error.detail])
        self._forward(room_channel(chat_id), KIND_CLOSE, payload, None)

    def forward_close(self, user: UserId, error: errors.WSChatError) -> None:
        """Close the user's connections in the other processes."""
        payload = json.dumps([user, error.code, error.detail])
        self._forward(USERS_CHANNEL, KIND_CLOSE, payload, None)

    # -- called by the backplane (the Receiver protocol) ----------------------------

    def deliver(self, channel: str, data: bytes) -> None:
        """A message from the backplane; skip our own echo, fan out the rest."""
        try:
            kind, origin, payload = data.split(b"|", 2)
            if origin == self._node:
                return
            text = payload.decode()
            if kind == KIND_RESYNC:
                # Another process's messages may not have reached us.
                if channel.startswith(_ROOM):
                    self._resync_local([ChatId(channel[len(_ROOM) :])], peer=True)
                elif channel == USERS_CHANNEL:
                    self._resync_local(list(self.manager.registry), peer=True)
                return
            if channel.startswith(_ROOM):
                chat_id = ChatId(channel[len(_ROOM) :])
                if kind == KIND_CLOSE:
                    code, detail = json.loads(text)
                    error = errors.error_class(code)(detail)
                    self.manager._close_room_local(chat_id, error)
                    return
                if kind == KIND_PRESENCE:
                    info = json.loads(text)
                    seen = self._global.get(chat_id)
                    if seen is not None:
                        user = UserId(info["user"])
                        if info["event"] == "join":
                            seen.add(user)
                        else:
                            seen.discard(user)
                self.manager._fanout(chat_id, text, defer=kind == KIND_PRESENCE)
            elif channel == USERS_CHANNEL:
                user, *rest = json.loads(text)
                if kind == KIND_USER:
                    self.manager._send_user_local(UserId(user), rest[0])
                elif kind == KIND_CLOSE:
                    code, detail = rest
                    error = errors.error_class(code)(detail)
                    self.manager._close_user_local(UserId(user), error)
        except (ValueError, KeyError, TypeError, IndexError):
            log.warning("wschat ignored a malformed backplane message on %r", channel)

    def resync(self, channels: Sequence[str]) -> None:
        """After a reconnect: tell local members they may have missed messages."""
        # The backplane answers again: announce the rooms that lost our traffic.
        self._poke.set()
        rooms = [ChatId(c[len(_ROOM) :]) for c in channels if c.startswith(_ROOM)]
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

    # -- internals -----------------------------------------------------------------

    def _resync_local(self, rooms: Sequence[ChatId], *, peer: bool) -> None:
        detail = PEER_RESYNC_DETAIL if peer else RESYNC_DETAIL
        for chat_id in rooms:
            self.manager._fanout(chat_id, encode_resync(chat_id, detail))

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

    def _envelope(self, kind: bytes, payload: str) -> bytes:
        return kind + b"|" + self._node + b"|" + payload.encode()

    def _forward(
        self, channel: str, kind: bytes, payload: str, sender: Connection | None
    ) -> None:
        data = self._envelope(kind, payload)
        try:
            self._send.send_nowait((channel, data, sender))
        except anyio.WouldBlock:
            why = "the outbound queue to other servers is full"
            self._not_published([(channel, data, sender)], why)

    def _not_published(self, batch: Sequence[_Item], why: str) -> None:
        """These were not published: tell each sender once; remember the rooms."""
        for channel, data, sender in batch:
            self.undelivered += 1
            self._mark_lost(channel)
            if sender is not None:
                sender.put_nowait(_degraded_frame(data))
        if not self._outage_logged:
            self._outage_logged = True
            log.warning("wschat could not publish to other servers: %s", why)

    def _mark_lost(self, channel: str) -> None:
        if channel.startswith(_ROOM):
            if self._lost_all:
                return
            if len(self._lost) >= MAX_LOST_ROOMS:
                self._lost_all = True
                self._lost.clear()
            else:
                self._lost.add(ChatId(channel[len(_ROOM) :]))
        elif channel == USERS_CHANNEL:
            # Per-user frames and closes have no room to resync; they are counted
            # in ``undelivered`` and logged with the outage.
            return
        self._poke.set()

    async def _settle(self, doubt: PublishInDoubt, batch: Sequence[_Item]) -> None:
        """Wait for the engine's answer to a publish it had not answered in time."""
        if not await doubt.outcome():
            self._not_published(batch, doubt.detail)

    async def _announce_lost(self) -> None:
        """Once the backplane answers again, tell the others which rooms lost traffic.

        Every process then sends ``resync`` to its members of those rooms. Until it
        answers, check again every :data:`ANNOUNCE_RETRY` seconds (or at once after
        a reconnect).
        """
        while True:
            if (self._lost or self._lost_all) and self.backplane.health().healthy:
                await self._publish_lost()
            if self._lost or self._lost_all:
                self._poke = anyio.Event()
                with anyio.move_on_after(ANNOUNCE_RETRY):
                    await self._poke.wait()
            else:
                self._poke = anyio.Event()
                await self._poke.wait()

    async def _publish_lost(self) -> None:
        everything = self._lost_all
        rooms = sorted(self._lost)
        items: list[tuple[str, bytes]] = []
        if everything:
            items.append((USERS_CHANNEL, self._envelope(KIND_RESYNC, '[""]')))
        for chat_id in rooms:
            frame = encode_resync(chat_id, PEER_RESYNC_DETAIL)
            items.append((room_channel(chat_id), self._envelope(KIND_RESYNC, frame)))
        publish_many = getattr(self.backplane, "publish_many", None)
        try:
            for start in range(0, len(items), MAX_PUBLISH_BATCH):
                chunk = items[start : start + MAX_PUBLISH_BATCH]
                if publish_many is None or len(chunk) == 1:
                    for channel, data in chunk:
                        await self.backplane.publish(channel, data)
                else:
                    await publish_many(chunk)
        except BackplaneUnavailable as exc:
            # Kept for the next try; a resync sent twice does no harm.
            log.debug("wschat resync announcement deferred: %s", exc)
            return
        if everything:
            self._lost_all = False
        self._lost.difference_update(rooms)
        count = "every room" if everything else f"{len(rooms)} room(s)"
        log.warning(
            "wschat backplane answers again; told the other servers to resync %s "
            "whose messages from here may not have reached them",
            count,
        )

    async def _publish_loop(self) -> None:
        publish_many = getattr(self.backplane, "publish_many", None)
        receive = self._receive
        async with receive:
            async for item in receive:
                batch = [item]
                if publish_many is not None:
                    # What queued up meanwhile leaves in one round trip, in order.
                    while len(batch) < MAX_PUBLISH_BATCH:
                        try:
                            batch.append(receive.receive_nowait())
                        except anyio.WouldBlock:
                            break
                try:
                    if len(batch) == 1:
                        await self.backplane.publish(item[0], item[1])
                    else:
                        assert publish_many is not None
                        await publish_many([(c, d) for c, d, _ in batch])
                except PublishInDoubt as doubt:
                    assert self._tg is not None
                    self._tg.start_soon(self._settle, doubt, batch)
                except BackplaneUnavailable as exc:
                    self._not_published(batch, exc.detail)
                else:
                    self._outage_logged = False

    async def _heartbeat(self) -> None:
        while True:
            await anyio.sleep(self.ttl / 3)
            if not self._refresh_queued:
                self._refresh_queued = True
                self._enqueue(self._refresh)

    async def _ensure_room(self, chat_id: ChatId) -> None:
        if chat_id in self._ready_rooms:
            return
        if chat_id not in self._subscribed:
            self._subscribed.add(chat_id)
            try:
                await self.backplane.subscribe(room_channel(chat_id))
            except BackplaneUnavailable as exc:
                log.debug("wschat subscribe of %r deferred: %s", chat_id, exc)
        await self._snapshot(chat_id)
        self._ready_rooms.add(chat_id)

    async def _snapshot(self, chat_id: ChatId) -> None:
        try:
            users = await self.backplane.presence_members(chat_id)
        except Exception as exc:
            if not isinstance(exc, BackplaneUnavailable):
                self._presence_failed(chat_id, "read", exc)
            if chat_id in self._global:
                return  # keep what we last heard rather than forget the others
            users = []
        seen = {UserId(u) for u in users}
        seen.update(self.manager.registry.members(chat_id))
        self._global[chat_id] = seen

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
        entry = self._waiting.pop(conn.id, None)
        if entry is None or self.manager._connections.get(conn.id) is not conn:
            await self._release(chat_id)
            return
        self.manager._attach(conn, entry[1])

    async def _presence_join(self, chat_id: ChatId, user: UserId) -> None:
        room = self.manager.registry.room(chat_id)
        if room is None or user not in room.users:
            return
        try:
            first = await self.backplane.presence_join(
                chat_id, user, self.manager.node_id, self.ttl
            )
        except Exception as exc:
            if not isinstance(exc, BackplaneUnavailable):
                self._presence_failed(chat_id, "join", exc)
            first = user not in self._global.get(chat_id, ())
        self._leased.add((chat_id, user))
        if first:
            self._announce(chat_id, "join", user)
        else:
            self._global.setdefault(chat_id, set()).add(user)

    async def _presence_leave(self, chat_id: ChatId, user: UserId) -> None:
        room = self.manager.registry.room(chat_id)
        if (room is not None and user in room.users) or (
            chat_id,
            user,
        ) not in self._leased:
            return
        self._leased.discard((chat_id, user))
        try:
            gone = await self.backplane.presence_leave(
                chat_id, user, self.manager.node_id
            )
        except Exception as exc:
            if not isinstance(exc, BackplaneUnavailable):
                self._presence_failed(chat_id, "leave", exc)
            gone = True
        if gone:
            self._announce(chat_id, "leave", user)

    async def _release(self, chat_id: ChatId) -> None:
        if self._pending.get(chat_id) or self.manager.registry.room(chat_id):
            return
        self._ready_rooms.discard(chat_id)
        self._global.pop(chat_id, None)
        if chat_id in self._subscribed:
            self._subscribed.discard(chat_id)
            await self.backplane.unsubscribe(room_channel(chat_id))

    async def _refresh(self) -> None:
        self._refresh_queued = False
        registry = self.manager.registry
        rooms: dict[str, list[str]] = {}
        for chat_id in list(registry):
            room = registry.room(chat_id)
            if room is not None:
                rooms[chat_id] = list(room.users)
        try:
            gone = await self.backplane.presence_refresh(
                self.manager.node_id, rooms, self.ttl
            )
        except BackplaneUnavailable:
            raise
        except Exception:
            # One room's bad data must not stop the renewal of the others.
            gone = await self._refresh_each(rooms)
        for name, users in rooms.items():
            self._leased.update((ChatId(name), UserId(u)) for u in users)
        for name, users in gone.items():
            for user in users:
                self._leased.discard((ChatId(name), UserId(user)))
                self._announce(ChatId(name), "leave", UserId(user))
        for name in rooms:
            if name in self._ready_rooms:
                await self._snapshot(ChatId(name))

    async def _refresh_each(self, rooms: dict[str, list[str]]) -> dict[str, list[str]]:
        """Renew room by room, skipping (with one warning) the rooms that fail."""
        gone: dict[str, list[str]] = {}
        node = self.manager.node_id
        for name, users in rooms.items():
            try:
                gone.update(
                    await self.backplane.presence_refresh(node, {name: users}, self.ttl)
                )
            except BackplaneUnavailable:
                raise
            except Exception as exc:
                self._presence_failed(ChatId(name), "renew", exc)
        return gone

    def _presence_failed(self, chat_id: ChatId, what: str, exc: Exception) -> None:
        """One WARNING per room (not one per renewal) when the backplane fails it."""
        if chat_id in self._presence_warned:
            log.debug("wschat could not %s presence in room %r: %r", what, chat_id, exc)
            return
        if len(self._presence_warned) >= MAX_WARNED_ROOMS:
            self._presence_warned.clear()
        self._presence_warned.add(chat_id)
        log.warning(
            "wschat could not %s presence in room %r on the backplane (%s); "
            "skipped it, the other rooms and members are not affected",
            what,
            chat_id,
            type(exc).__name__,
            exc_info=exc,
        )

    def _presence_frame(self, chat_id: ChatId, event: Any, user: UserId) -> str:
        seen = self._global.setdefault(chat_id, set())
        if event == "join":
            seen.add(user)
        else:
            seen.discard(user)
        return encode_presence(
            chat_id=chat_id, event=event, user=user, count=self.user_count(chat_id)
        )

    def _announce(self, chat_id: ChatId, event: Any, user: UserId) -> None:
        frame = self._presence_frame(chat_id, event, user)
        if not self.manager.presence:
            return
        self.manager._fanout(chat_id, frame, defer=True)
        self._forward(room_channel(chat_id), KIND_PRESENCE, frame, None)
