"""``raw``: the fastest honest chat server, a minimal hand-written ASGI app.

A dict of room to set of ASGI ``send`` callables; a broadcast awaits each send in turn.
Same semantics as wschat: JWT in the query, server-set fields, sender included.

``--option burn_us=N`` (diagnosis only) spins N microseconds of CPU before each frame
is sent: what any per-delivery overhead of N us in user space costs in this benchmark,
kernel time included.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import jwt

from benchmarks.common import ALGORITHM, SECRET

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]
Receive = Callable[[], Awaitable[Message]]

_dumps = json.JSONEncoder(separators=(",", ":")).encode
PREFIX = "/ws/chat/"


def build_app(**options: str) -> Callable[[Message, Receive, Send], Awaitable[None]]:
    """The raw ASGI app; ``burn_us`` adds a busy wait per delivered frame."""
    rooms: dict[str, set[Send]] = {}
    ids = itertools.count()
    burn_s = float(options.get("burn_us", 0)) / 1e6

    def burn() -> None:
        end = time.perf_counter() + burn_s
        while time.perf_counter() < end:
            pass

    async def app(scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "websocket" or not scope["path"].startswith(PREFIX):
            return
        room = scope["path"][len(PREFIX) :]
        await receive()  # websocket.connect
        query = parse_qs(scope["query_string"].decode("latin-1"))
        try:
            claims = jwt.decode(
                query["token"][0],
                SECRET,
                algorithms=[ALGORITHM],
                options={"require": ["exp", "sub"]},
            )
        except (KeyError, jwt.InvalidTokenError):
            await send({"type": "websocket.close", "code": 1008})
            return
        user = claims["sub"]
        await send({"type": "websocket.accept"})
        await send(
            {
                "type": "websocket.send",
                "text": _dumps({"type": "ready", "chat_id": room, "user": user}),
            }
        )
        members = rooms.setdefault(room, set())
        members.add(send)
        try:
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    return
                data = json.loads(message["text"])
                if data.get("type") != "message":
                    continue
                frame = {
                    "type": "websocket.send",
                    "text": _dumps(
                        {
                            "type": "message",
                            "id": f"m{next(ids)}",
                            "chat_id": room,
                            "user": user,
                            "body": data["body"],
                            "ts": int(time.time() * 1000),
                            "client_id": data.get("client_id"),
                        }
                    ),
                }
                for member in list(members):
                    if burn_s:
                        burn()
                    try:
                        await member(frame)
                    except Exception:
                        members.discard(member)
        finally:
            members.discard(send)
            if not members:
                rooms.pop(room, None)

    return app
