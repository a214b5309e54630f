"""Presence across processes: leases on the backplane, and who is in each room.

Imports: anyio and the standard library (core layer).

Part of the cluster side (:mod:`wschat.cluster`). A user is present in a room while
some process holds a lease for them there (``(room, user, node)``, renewed every third
of its ``ttl``, so the leases of a process that died expire on their own). A user's
first lease in a room announces a ``join`` and the last one gone a ``leave``, once
across every process: the process that saw it fans the frame out to its own members
and publishes it to the others.

:class:`SharedPresence` keeps, per room with local members, who is there in every
process as this process last heard: the backplane's members when the room was set up
(and at each renewal), updated by the presence frames that cross. Its methods are
called by the cluster's control worker, one at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any, Final

import anyio

from .backplane.base import Backplane, BackplaneUnavailable
from .backplane.envelope import KIND_PRESENCE, room_channel
from .delivery import LocalRooms
from .ids import ChatId, UserId
from .protocol import encode_presence
from .publisher import Publisher

__all__ = ["SharedPresence"]

log = logging.getLogger("wschat")

#: Distinct rooms whose presence failed, remembered so each is warned about once.
MAX_WARNED_ROOMS: Final = 1024
#: Seconds a stopping process spends giving up its leases, at most.
LEAVE_TIMEOUT: Final = 2.0


class SharedPresence:
    """One process's presence leases, and its view of every process's members.

    Args:
        local: The manager's local surface (membership here, local fan-out).
        backplane: Where the leases live.
        publisher: Carries ``join``/``leave`` frames to the other processes.
        ttl: Seconds a lease lives without renewal.
    """

    def __init__(
        self,
        local: LocalRooms,
        backplane: Backplane,
        publisher: Publisher,
        ttl: float,
    ) -> None:
        self.local = local
        self.backplane = backplane
        self.publisher = publisher
        self.ttl = ttl
        # Per room with local members: its users in every process, as last heard.
        self._global: dict[ChatId, set[UserId]] = {}
        self._leased: set[tuple[ChatId, UserId]] = set()
        self._warned: set[ChatId] = set()

    # -- the view, read by the manager (no I/O) -------------------------------------

    def members(self, chat_id: ChatId) -> list[UserId]:
        """Users in the room in every process, as this process last heard."""
        local = self.local.registry.members(chat_id)
        seen = self._global.get(chat_id)
        if not seen:
            return local
        mine = set(local)
        return local + sorted(u for u in seen if u not in mine)

    def sample(self, chat_id: ChatId, limit: int) -> list[UserId]:
        """At most ``limit`` users of the room, those here first; O(limit)."""
        users = self.local.registry.sample(chat_id, limit)
        seen = self._global.get(chat_id)
        if seen and len(users) < limit:
            room = self.local.registry.room(chat_id)
            mine = room.users if room is not None else {}
            for user in seen:
                if user not in mine:
                    users.append(user)
                    if len(users) == limit:
                        break
        return users

    def user_count(self, chat_id: ChatId) -> int:
        """Distinct users in the room in every process, as this process last heard.

        O(1): the view holds this process's users too (:meth:`local_joined`).
        """
        seen = self._global.get(chat_id)
        if not seen:
            return self.local.registry.user_count(chat_id)
        return len(seen)

    def knows(self, chat_id: ChatId, user: UserId) -> bool:
        """Whether the view has ``user`` in the room."""
        return user in self._global.get(chat_id, ())

    def local_joined(self, chat_id: ChatId, user: UserId) -> None:
        """A user's first connection here joined the room: count them at once."""
        seen = self._global.get(chat_id)
        if seen is not None:
            seen.add(user)

    def heard(self, chat_id: ChatId, event: str, user: UserId) -> None:
        """Another process announced a ``join`` or ``leave`` in the room."""
        seen = self._global.get(chat_id)
        if seen is not None:
            if event == "join":
                seen.add(user)
            else:
                room = self.local.registry.room(chat_id)
                if room is None or user not in room.users:
                    seen.discard(user)  # still here: still counted

    def forget(self, chat_id: ChatId) -> None:
        """The room has no local member any more: stop tracking it."""
        self._global.pop(chat_id, None)

    # -- operations of the control worker --------------------------------------------

    async def snapshot(self, chat_id: ChatId) -> None:
        """Learn the room's members in every process from the backplane."""
        try:
            users = await self.backplane.presence_members(chat_id)
        except Exception as exc:
            if not isinstance(exc, BackplaneUnavailable):
                self._failed(chat_id, "read", exc)
            if chat_id in self._global:
                return  # keep what we last heard rather than forget the others
            users = []
        seen = {UserId(u) for u in users}
        seen.update(self.local.registry.members(chat_id))
        self._global[chat_id] = seen

    async def join(self, chat_id: ChatId, user: UserId, known: bool = False) -> None:
        """Lease the user's presence; announce them if no process had them.

        Args:
            chat_id: The room.
            user: The user whose first connection here joined it.
            known: Whether the view had the user before they joined here (what
                decides, when the backplane cannot be asked).
        """
        room = self.local.registry.room(chat_id)
        if room is None or user not in room.users:
            return
        try:
            first = await self.backplane.presence_join(
                chat_id, user, self.local.node_id, self.ttl
            )
        except Exception as exc:
            if not isinstance(exc, BackplaneUnavailable):
                self._failed(chat_id, "join", exc)
            first = not known
        self._leased.add((chat_id, user))
        if first:
            self._announce(chat_id, "join", user)
        else:
            self.local_joined(chat_id, user)

    async def leave(self, chat_id: ChatId, user: UserId) -> None:
        """Give up the user's lease; announce them gone if no process has them."""
        room = self.local.registry.room(chat_id)
        if (room is not None and user in room.users) or (
            chat_id,
            user,
        ) not in self._leased:
            return
        self._leased.discard((chat_id, user))
        try:
            gone = await self.backplane.presence_leave(
                chat_id, user, self.local.node_id
            )
        except Exception as exc:
            if not isinstance(exc, BackplaneUnavailable):
                self._failed(chat_id, "leave", exc)
            gone = True
        if gone:
            self._announce(chat_id, "leave", user)

    async def refresh(self, ready: Collection[ChatId]) -> None:
        """Renew (or re-create) every lease of this process; announce expired users.

        Then learn again the members of the rooms in ``ready``.

        Raises:
            BackplaneUnavailable: The engine cannot be reached.
        """
        registry = self.local.registry
        rooms: dict[str, list[str]] = {}
        for chat_id in list(registry):
            room = registry.room(chat_id)
            if room is not None:
                rooms[chat_id] = list(room.users)
        node = self.local.node_id
        try:
            gone = await self.backplane.presence_refresh(node, rooms, self.ttl)
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
            if name in ready:
                await self.snapshot(ChatId(name))

    async def leave_all(self) -> None:
        """Give up every lease of this process (stopping): bounded, best effort."""
        registry = self.local.registry
        with anyio.move_on_after(LEAVE_TIMEOUT, shield=True):
            for chat_id in list(registry):
                room = registry.room(chat_id)
                for user in list(room.users) if room else ():
                    try:
                        gone = await self.backplane.presence_leave(
                            chat_id, user, self.local.node_id
                        )
                        if gone and self.local.presence:
                            frame = self._frame(chat_id, "leave", user)
                            data = self.publisher.envelope(KIND_PRESENCE, frame)
                            await self.backplane.publish(room_channel(chat_id), data)
                    except BackplaneUnavailable:
                        return

    async def _refresh_each(self, rooms: dict[str, list[str]]) -> dict[str, list[str]]:
        """Renew room by room, skipping (with one warning) the rooms that fail."""
        gone: dict[str, list[str]] = {}
        node = self.local.node_id
        for name, users in rooms.items():
            try:
                gone.update(
                    await self.backplane.presence_refresh(node, {name: users}, self.ttl)
                )
            except BackplaneUnavailable:
                raise
            except Exception as exc:
                self._failed(ChatId(name), "renew", exc)
        return gone

    def _failed(self, chat_id: ChatId, what: str, exc: Exception) -> None:
        """One WARNING per room (not one per renewal) when the backplane fails it."""
        if chat_id in self._warned:
            log.debug("wschat could not %s presence in room %r: %r", what, chat_id, exc)
            return
        if len(self._warned) >= MAX_WARNED_ROOMS:
            self._warned.clear()
        self._warned.add(chat_id)
        log.warning(
            "wschat could not %s presence in room %r on the backplane (%s); "
            "skipped it, the other rooms and members are not affected",
            what,
            chat_id,
            type(exc).__name__,
            exc_info=exc,
        )

    def _frame(self, chat_id: ChatId, event: Any, user: UserId) -> str:
        """Update the view; the single-event frame that crosses to other processes.

        Presence crosses in wschat 0.1's shape, which processes of both versions
        read; each process coalesces what it hears for its own members.
        """
        seen = self._global.get(chat_id)
        if seen is not None:
            if event == "join":
                seen.add(user)
            else:
                seen.discard(user)
        return encode_presence(
            chat_id=chat_id, event=event, user=user, count=self.user_count(chat_id)
        )

    def _announce(self, chat_id: ChatId, event: Any, user: UserId) -> None:
        frame = self._frame(chat_id, event, user)
        if not self.local.presence:
            return
        self.local.announce_presence(chat_id, event, user)
        self.publisher.forward(room_channel(chat_id), KIND_PRESENCE, frame, None)
