"""The ``/status`` payload: health and counters, never user ids or tokens.

Imports: the standard library only (core layer).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["ManagerStats", "StatusSource", "status_payload"]


@dataclass(frozen=True, slots=True)
class ManagerStats:
    """A snapshot of the manager, safe to publish (no user ids, no tokens).

    Attributes:
        connections: Open connections in this process.
        rooms: Rooms with at least one local member.
        users: Distinct users connected to this process.
        messages: Chat messages broadcast since start.
        deliveries: Frames put into outboxes since start.
        slow_consumers: Connections closed because their outbox overflowed.
        dropped: Frames dropped by a drop policy since start.
        backplane: Name of the backplane in use.
        writers: Writer tasks running now. A connection has one only while frames
            flow to it; an idle connection has none.
        pending_auth: Sockets accepted for first-message auth that have not sent
            their ``auth`` frame yet (not counted in ``connections``).
    """

    connections: int
    rooms: int
    users: int
    messages: int
    deliveries: int
    slow_consumers: int
    dropped: int
    backplane: str
    writers: int
    pending_auth: int = 0


class StatusSource(Protocol):
    """What ``/status`` reads (a :class:`~wschat.ConnectionManager` is one)."""

    @property
    def node_id(self) -> str:
        """This process's id."""
        ...

    @property
    def started_at(self) -> float:
        """When it started, in seconds since the epoch."""
        ...

    def stats(self) -> ManagerStats:
        """A snapshot of its counters."""
        ...

    def backplane_health(self) -> dict[str, Any]:
        """The backplane's name and health."""
        ...

    def history_health(self) -> dict[str, Any]:
        """The history store's name, health and size (``enabled`` False if off)."""
        ...


def status_payload(manager: StatusSource) -> dict[str, Any]:
    """Build the JSON body of ``GET /ws/status``.

    Args:
        manager: The manager the endpoint serves.

    Returns:
        ``status`` (``ok`` or ``degraded``), counters, and the backplane's and the
        history store's health.
    """
    from . import __version__

    stats = manager.stats()
    backplane = manager.backplane_health()
    history = manager.history_health()
    healthy = backplane.get("healthy", True) and (
        not history.get("enabled") or history.get("healthy", True)
    )
    return {
        "status": "ok" if healthy else "degraded",
        "version": __version__,
        "node": manager.node_id,
        "uptime_s": round(time.time() - manager.started_at, 1),
        "connections": stats.connections,
        "rooms": stats.rooms,
        "users": stats.users,
        "messages": stats.messages,
        "deliveries": stats.deliveries,
        "slow_consumers": stats.slow_consumers,
        "dropped": stats.dropped,
        "writers": stats.writers,
        "pending_auth": stats.pending_auth,
        "backplane": backplane,
        "history": history,
    }
