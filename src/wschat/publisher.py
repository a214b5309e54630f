"""The cluster's outbound side: channels, envelopes, and ordered, bounded publishing.

Imports: anyio and the standard library (core layer).

Part of the cluster side (:mod:`wschat.cluster`). Whatever a process sends to the
others (room broadcasts, presence, per-user sends and closes) goes into one bounded
stream drained by one :class:`Publisher` task, so each sender's order is kept; when
the backplane has ``publish_many``, what queued up meanwhile leaves in one batch.
The sender's own process delivers to its local members before publishing, so local
delivery survives an outage; a message that is not published earns its sender one
``error`` frame coded ``delivery_degraded`` (naming the message's ``id`` and
``client_id``). A publish the engine has not answered is in doubt: the sender hears
nothing until the engine tells whether it went out.

Every room whose traffic from this process did not reach the others is remembered,
even if its members left since, and announced on the room's channel once the engine
answers again: every process then sends its members of that room a ``resync`` frame.

Channels and the envelope format are :mod:`wschat.backplane.envelope`'s.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, Final

import anyio
from anyio.abc import TaskGroup, TaskStatus

from .backplane.base import Backplane, BackplaneUnavailable, PublishInDoubt
from .backplane.envelope import (
    KIND_RESYNC,
    USERS_CHANNEL,
    envelope,
    room_channel,
    room_of,
)
from .connection import Connection
from .errors import ErrorCode
from .ids import ChatId
from .protocol import encode_resync

__all__ = [
    "PEER_RESYNC_DETAIL",
    "Publisher",
]

log = logging.getLogger("wschat")

DEGRADED_DETAIL: Final = (
    "this message reached only the members connected to this server; "
    "members on other servers may have missed it"
)
PEER_RESYNC_DETAIL: Final = (
    "another server could not pass on messages for a while; "
    "messages may have been missed"
)

#: Rooms remembered as having lost traffic; past that, every room is resynced.
MAX_LOST_ROOMS: Final = 1000
#: Seconds between checks whether the backplane answers again, while rooms wait.
ANNOUNCE_RETRY: Final = 0.1
#: At most this many queued frames go to ``publish_many`` at once.
MAX_PUBLISH_BATCH: Final = 256

#: A frame waiting to be published: channel, envelope, sender (for a chat message).
_Item = tuple[str, bytes, Connection | None]


def degraded_frame(data: bytes) -> str:
    """The sender's ``delivery_degraded`` error, naming the message (id, client_id)."""
    error: dict[str, Any] = {
        "type": "error",
        "code": ErrorCode.DELIVERY_DEGRADED,
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


class Publisher:
    """Publishes envelopes in order through one bounded queue; reports what fails.

    Args:
        backplane: Where to publish.
        node_id: This process's id, the origin of every envelope.
        queue: Envelopes that may wait; past that, senders get ``delivery_degraded``.
    """

    def __init__(self, backplane: Backplane, node_id: str, queue: int) -> None:
        self.backplane = backplane
        self.node = node_id.encode()
        #: Frames that did not reach the other processes, since start.
        self.undelivered = 0
        self._send, self._receive = anyio.create_memory_object_stream[_Item](queue)
        self._outage_logged = False
        # Rooms whose traffic from here did not reach the others (announced later).
        self._lost: set[ChatId] = set()
        self._lost_all = False
        self._poke = anyio.Event()
        self._tg: TaskGroup | None = None

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        """Publish what is queued, and announce lost traffic, until cancelled."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._publish_loop)
            tg.start_soon(self._announce_lost)
            task_status.started()

    def close(self) -> None:
        """Close the queue (the publisher has stopped; nothing is sent after)."""
        self._send.close()
        self._receive.close()

    def envelope(self, kind: bytes, payload: str) -> bytes:
        """``payload`` wrapped for the backplane, with this process as its origin."""
        return envelope(kind, self.node, payload)

    def forward(
        self, channel: str, kind: bytes, payload: str, sender: Connection | None
    ) -> None:
        """Queue an envelope for the other processes; never blocks."""
        data = self.envelope(kind, payload)
        try:
            self._send.send_nowait((channel, data, sender))
        except anyio.WouldBlock:
            why = "the outbound queue to other servers is full"
            self._not_published([(channel, data, sender)], why)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._not_published([(channel, data, sender)], "the manager has stopped")

    def wake(self) -> None:
        """The backplane answers again: announce lost traffic now, not at the retry."""
        self._poke.set()

    def _not_published(self, batch: Sequence[_Item], why: str) -> None:
        """These were not published: tell each sender once; remember the rooms."""
        for channel, data, sender in batch:
            self.undelivered += 1
            self._mark_lost(channel)
            if sender is not None:
                sender.put_nowait(degraded_frame(data))
        if not self._outage_logged:
            self._outage_logged = True
            log.warning("wschat could not publish to other servers: %s", why)

    def _mark_lost(self, channel: str) -> None:
        chat_id = room_of(channel)
        if chat_id is not None:
            if self._lost_all:
                return
            if len(self._lost) >= MAX_LOST_ROOMS:
                self._lost_all = True
                self._lost.clear()
            else:
                self._lost.add(chat_id)
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
            items.append((USERS_CHANNEL, self.envelope(KIND_RESYNC, '[""]')))
        for chat_id in rooms:
            frame = encode_resync(chat_id, PEER_RESYNC_DETAIL)
            items.append((room_channel(chat_id), self.envelope(KIND_RESYNC, frame)))
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
