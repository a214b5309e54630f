"""The ``/status`` payload: health and counters, never user ids or tokens.

Imports: the standard library only (core layer).
"""

from __future__ import annotations

import time
from typing import Any

from .manager import ConnectionManager

__all__ = ["status_payload"]


def status_payload(manager: ConnectionManager) -> dict[str, Any]:
    """Build the JSON body of ``GET /ws/status``.

    Args:
        manager: The manager the endpoint serves.

    Returns:
        ``status`` (``ok`` or ``degraded``), counters, and the backplane's health.
    """
    from . import __version__

    stats = manager.stats()
    backplane = manager.backplane_health()
    return {
        "status": "ok" if backplane.get("healthy", True) else "degraded",
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
        "backplane": backplane,
    }
