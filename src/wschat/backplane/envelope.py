"""What processes say to each other over a backplane: channels and envelopes.

Imports: the standard library and :mod:`wschat.ids` (pure layer).

The shared format of the cluster side (:mod:`wschat.cluster`, :mod:`wschat.publisher`)
and of stores that publish for it (:class:`wschat.history.redis.RedisHistoryStore`).
Envelopes are ``<kind>|<origin node>|<payload>``; a process skips its own echo by the
origin. Kinds: ``m`` a frame for a room, ``p`` a presence frame, ``u`` a frame for a
user, ``c`` close a user's connections (on the users channel) or a room's (on the
room's channel), ``s`` the origin's messages to a room (on the room's channel; its
payload is a ``resync`` frame, which older versions pass on as is) or to every room
(on the users channel) may have been lost.
"""

from __future__ import annotations

from typing import Final

from ..ids import ChatId

__all__ = [
    "KIND_CLOSE",
    "KIND_MESSAGE",
    "KIND_PRESENCE",
    "KIND_RESYNC",
    "KIND_USER",
    "ROOM_PREFIX",
    "USERS_CHANNEL",
    "envelope",
    "room_channel",
    "room_of",
]

#: The channel every process subscribes to for per-user operations.
USERS_CHANNEL: Final = "u"
#: A room's channel is this prefix and the room's id.
ROOM_PREFIX: Final = "r:"
KIND_MESSAGE: Final = b"m"
KIND_PRESENCE: Final = b"p"
KIND_USER: Final = b"u"
KIND_CLOSE: Final = b"c"
KIND_RESYNC: Final = b"s"


def envelope(kind: bytes, origin: bytes, payload: str) -> bytes:
    """``payload`` wrapped for the backplane, from the process named ``origin``."""
    return kind + b"|" + origin + b"|" + payload.encode()


def room_channel(chat_id: str) -> str:
    """The logical channel of a room (the backplane adds its fixed prefix)."""
    return ROOM_PREFIX + chat_id


def room_of(channel: str) -> ChatId | None:
    """The room whose channel this is, or None for another channel."""
    if channel.startswith(ROOM_PREFIX):
        return ChatId(channel[len(ROOM_PREFIX) :])
    return None
