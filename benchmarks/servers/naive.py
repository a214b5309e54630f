"""``naive``: the ConnectionManager of the FastAPI documentation, with rooms.

A list of sockets per room and a loop awaiting ``send_text`` for each, which is what
users write by hand today. The JWT is read from the query like wschat does.
"""

from __future__ import annotations

import itertools
import json
import time

import jwt
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from benchmarks.common import ALGORITHM, SECRET

_dumps = json.JSONEncoder(separators=(",", ":")).encode


class ConnectionManager:
    """The docs' manager, with a list of sockets per room."""

    def __init__(self) -> None:
        self.active_connections: dict[str, list[WebSocket]] = {}

    async def connect(self, room: str, websocket: WebSocket) -> None:
        await websocket.accept()
        self.active_connections.setdefault(room, []).append(websocket)

    def disconnect(self, room: str, websocket: WebSocket) -> None:
        conns = self.active_connections.get(room, [])
        if websocket in conns:
            conns.remove(websocket)

    async def broadcast(self, room: str, message: str) -> None:
        for connection in self.active_connections.get(room, []):
            await connection.send_text(message)


def build_app(**_: str) -> FastAPI:
    """The FastAPI app."""
    app = FastAPI()
    manager = ConnectionManager()
    ids = itertools.count()

    @app.websocket("/ws/chat/{room}")
    async def chat(websocket: WebSocket, room: str, token: str = "") -> None:
        try:
            claims = jwt.decode(
                token,
                SECRET,
                algorithms=[ALGORITHM],
                options={"require": ["exp", "sub"]},
            )
        except jwt.InvalidTokenError:
            await websocket.close(code=1008)
            return
        user = claims["sub"]
        await manager.connect(room, websocket)
        await websocket.send_text(
            _dumps({"type": "ready", "chat_id": room, "user": user})
        )
        try:
            while True:
                data = json.loads(await websocket.receive_text())
                if data.get("type") != "message":
                    continue
                await manager.broadcast(
                    room,
                    _dumps(
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
                )
        except WebSocketDisconnect:
            manager.disconnect(room, websocket)

    return app
