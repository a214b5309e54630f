"""What ``async for event in chat`` yields: the server's frames and the client's own.

Imports: :mod:`wschat.frames` and the standard library (tools layer: part of
:mod:`wschat.client`).

The server's frames are :mod:`wschat.frames`' frozen dataclasses (``Ready``,
``Message``, ``Presence``, ``Error``, ``History``, ``TokenExpiring``, ...). The
client adds :class:`Disconnected` (the connection dropped; a reconnect follows after
``delay``) and :class:`Reconnected` (a later ``ready`` arrived: were the messages
missed meanwhile recovered?). Every event has a ``type``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from ..frames import Frame, Ready

__all__ = ["Disconnected", "Event", "Reconnected"]


@dataclass(frozen=True)
class Disconnected:
    """The connection ended and the client reconnects after ``delay`` seconds.

    Attributes:
        code: The close code (1006: no close frame, e.g. the server went away).
        reason: The close reason, if any.
        delay: Seconds until the next attempt.
        attempt: How many attempts in a row failed before this one (0 first).
    """

    type: ClassVar[str] = "disconnected"
    code: int
    reason: str
    delay: float
    attempt: int


@dataclass(frozen=True)
class Reconnected:
    """A reconnect reached ``ready``; yielded right after that ``Ready``.

    Attributes:
        recovered: True when the server replays every message missed since the
            last one seen (they follow as ``Message`` events, before anything
            live). False when it cannot (another epoch, a gap older than its
            history, or a server without history): reload with ``chat.history()``.
        ready: The new connection's ``ready`` frame.
    """

    type: ClassVar[str] = "reconnected"
    recovered: bool
    ready: Ready


Event: TypeAlias = Frame | Disconnected | Reconnected
