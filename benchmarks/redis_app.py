"""The app that the cross-process tests and ``w6_redis.py`` run under uvicorn.

``chat_app`` (raw ASGI, which starts the manager from lifespan itself) on a
``RedisBackplane``, plus two admin routes a real app would put behind its own auth:

- ``POST /admin/kick/{user}``: close every connection of the user, in every process.
- ``POST /admin/revoke/{user}``: end the user's sessions everywhere with 4401
  ``token_revoked`` (``manager.revoke_user``).
- ``GET /admin/members/{chat_id}``: the room's users across processes, and this
  process's node id.

Configured by environment: ``WSCHAT_REDIS_URL``, ``WSCHAT_PREFIX``, ``WSCHAT_SECRET``,
``WSCHAT_PRESENCE_TTL``, ``WSCHAT_MAX_PER_USER``,
``WSCHAT_BACKPLANE=memory`` for the one-process baseline, and ``WSCHAT_HISTORY``:
``redis`` (a ``RedisHistoryStore`` on the same Redis and prefix, what history on
means in a clustered deployment: docs/history.md), ``off`` (``history=False``) or
unset (the manager's default: in memory, which a shared backplane turns off).

Run: ``uvicorn --app-dir benchmarks redis_app:app --port 8000 [--workers 2]``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from wschat import ChatId, ConnectionManager, TokenVerifier, UserId
from wschat.asgi import chat_app
from wschat.backplane import Backplane, MemoryBackplane
from wschat.errors import Forbidden
from wschat.history import HistoryStore

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

SECRET = os.environ.get(
    "WSCHAT_SECRET", "benchmark-secret-not-for-production-0123456789"
)


URL = os.environ.get("WSCHAT_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("WSCHAT_PREFIX", "wschat:")


def _backplane() -> Backplane:
    if os.environ.get("WSCHAT_BACKPLANE") == "memory":
        return MemoryBackplane()
    from wschat.backplane.redis import RedisBackplane

    return RedisBackplane(URL, prefix=PREFIX)


def _history() -> bool | HistoryStore:
    choice = os.environ.get("WSCHAT_HISTORY", "")
    if choice == "off":
        return False
    if choice == "redis":
        from wschat.history.redis import RedisHistoryStore

        return RedisHistoryStore(URL, prefix=PREFIX)
    if choice:
        raise SystemExit(f"WSCHAT_HISTORY: redis, off or unset, not {choice!r}")
    return True


manager = ConnectionManager(
    backplane=_backplane(),
    history=_history(),
    presence_ttl=float(os.environ.get("WSCHAT_PRESENCE_TTL", "30")),
    max_connections_per_user=int(os.environ.get("WSCHAT_MAX_PER_USER", "16")),
    outbox_max_messages=100_000,
    outbox_max_bytes=64 * 1024 * 1024,
)
chat = chat_app(manager, TokenVerifier(SECRET, algorithms=["HS256"]), rate_limit=None)


async def _json(send: Send, status: int, data: Any) -> None:
    body = json.dumps(data).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """``chat_app`` plus the admin routes."""
    path: str = scope.get("path", "")
    if scope["type"] != "http" or not path.startswith("/admin/"):
        await chat(scope, receive, send)
        return
    _, _, action, name = path.split("/", 3)
    if action == "kick" and scope["method"] == "POST":
        closed = manager.close_user(UserId(name), Forbidden("removed by an admin"))
        await _json(send, 200, {"closed_here": closed, "node": manager.node_id})
    elif action == "revoke" and scope["method"] == "POST":
        closed = manager.revoke_user(UserId(name))
        await _json(send, 200, {"closed_here": closed, "node": manager.node_id})
    elif action == "members":
        members = await manager.room_members(ChatId(name))
        await _json(send, 200, {"members": members, "node": manager.node_id})
    else:
        await _json(send, 404, {"error": "not found"})
