"""The wschat server the JS client's tests run against (started by test/server.mjs).

``python test/server.py PORT SECRET``: the chat routes under ``/ws`` behind a counter of
WebSocket handshakes, plus test-only routes: ``GET /test/handshakes`` (the count),
``GET /test/token?sub=alice&ttl=3600`` (a token signed with SECRET) and
``POST /test/restart`` (close every socket with 1012 ``service_restart``, the process
and its history stay), ``POST /test/close?user=alice&error=going_away`` (end the user's
sessions with that error, as the server's own code path would: see ``ERRORS``) and
``GET /test/frames`` (every text frame the server sent on a chat socket is checked
against ``protocol.schema.json#/$defs/ServerFrame``: how many, and the violations;
test/server.mjs fails a test file whose server sent one). Needs wschat and uvicorn
importable (PYTHONPATH=src), and ``jsonschema`` to validate (``validating: false``
without it, which test/server.mjs refuses under CI).

With ``WSCHAT_TEST_REDIS=redis://...`` and ``WSCHAT_TEST_PREFIX=...`` the manager runs
on a ``RedisBackplane`` and a ``RedisHistoryStore`` with that prefix, so a room's
epoch and messages outlive the process: a restart (a new process on the same port)
recovers what a client missed.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route

from wschat import ConnectionManager, TokenVerifier
from wschat.errors import (
    BadRequest,
    GoingAway,
    MessageTooBig,
    RateLimited,
    ServiceRestart,
    SlowConsumer,
    TextOnly,
    TooManyConnections,
    TryAgainLater,
    WSChatError,
)
from wschat.ids import UserId
from wschat.schema import protocol_schema
from wschat.starlette import chat_routes
from wschat.testing import mint_token

#: The errors ``POST /test/close`` ends a user's sessions with, by reason code.
ERRORS: dict[str, type[WSChatError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        GoingAway,
        MessageTooBig,
        RateLimited,
        SlowConsumer,
        TextOnly,
        TooManyConnections,
        TryAgainLater,
        WSChatError,  # internal_error, 1011: a hook raised
    )
}


def frame_checker() -> Callable[[str], str | None] | None:
    """What is wrong with a server frame's text under the schema (None: valid), or
    None without ``jsonschema``."""
    try:
        import jsonschema
    except ImportError:
        return None
    schema = protocol_schema()
    root = {"$schema": schema["$schema"], "$defs": schema["$defs"]}
    validator = jsonschema.Draft202012Validator({**root, "$ref": "#/$defs/ServerFrame"})

    def problem(text: str) -> str | None:
        try:
            frame = json.loads(text)
        except ValueError:
            return f"not JSON: {text[:300]!r}"
        errors = [e.message for e in validator.iter_errors(frame)]
        return f"{'; '.join(errors[:3])}; frame: {text[:300]}" if errors else None

    return problem


def redis_manager() -> ConnectionManager:
    """A manager whose rooms (epoch, offsets, recent messages) live in Redis."""
    from wschat.backplane.redis import RedisBackplane
    from wschat.history.redis import RedisHistoryStore

    url, prefix = os.environ["WSCHAT_TEST_REDIS"], os.environ["WSCHAT_TEST_PREFIX"]
    return ConnectionManager(
        backplane=RedisBackplane(url, prefix=prefix),
        history=RedisHistoryStore(url, prefix=prefix),
    )


def main() -> None:
    port, secret = int(sys.argv[1]), sys.argv[2]
    on_redis = bool(os.environ.get("WSCHAT_TEST_REDIS"))
    manager = redis_manager() if on_redis else ConnectionManager()
    verifier = TokenVerifier(secret, algorithms=["HS256"])
    handshakes = 0

    def allowed(principal: Any, chat_id: str) -> bool:
        return not chat_id.startswith("private")

    async def count(request: Request) -> JSONResponse:
        return JSONResponse({"handshakes": handshakes})

    async def token(request: Request) -> PlainTextResponse:
        sub = request.query_params.get("sub", "alice")
        ttl = int(request.query_params.get("ttl", "3600"))
        return PlainTextResponse(mint_token(secret, sub, ttl=ttl))

    async def restart(request: Request) -> JSONResponse:
        manager.close_all(ServiceRestart())
        return JSONResponse({"ok": True})

    check = frame_checker()
    checked = 0
    violations: list[str] = []

    async def frames(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "validating": check is not None,
                "checked": checked,
                "violations": violations,
            }
        )

    def checking(send: Any) -> Any:
        async def checked_send(message: Any) -> None:
            nonlocal checked
            text = message.get("text")
            if check and message["type"] == "websocket.send" and isinstance(text, str):
                checked += 1
                problem = check(text)
                if problem is not None:
                    violations.append(problem)
            await send(message)

        return checked_send

    async def close(request: Request) -> JSONResponse:
        error = ERRORS[request.query_params["error"]]()
        closed = manager.close_user(UserId(request.query_params["user"]), error)
        return JSONResponse({"closed": closed})

    app = Starlette(
        routes=[
            Route("/test/handshakes", count),
            Route("/test/token", token),
            Route("/test/restart", restart, methods=["POST"]),
            Route("/test/close", close, methods=["POST"]),
            Route("/test/frames", frames),
            Mount("/ws", routes=chat_routes(manager, verifier, authorize=allowed)),
        ],
        lifespan=manager.lifespan if on_redis else None,
    )

    async def counted(scope: Any, receive: Any, send: Any) -> None:
        nonlocal handshakes
        if scope["type"] == "websocket":
            handshakes += 1
            if "/chat/" in scope["path"]:
                send = checking(send)
        await app(scope, receive, send)

    uvicorn.run(
        counted,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=2,
    )


if __name__ == "__main__":
    main()
