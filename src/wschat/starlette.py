"""Starlette adapter: ``chat_routes`` to mount under any path.

Imports: the core and Starlette.

Example::

    app = Starlette(routes=[Mount("/ws", routes=chat_routes(manager, verifier))])
"""

from __future__ import annotations

from typing import Any

try:
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import BaseRoute, Route, WebSocketRoute
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "wschat.starlette needs Starlette: pip install 'wschat[starlette]'"
    ) from exc

from .asgi import ChatSocketApp
from .auth import Verifier
from .manager import ConnectionManager
from .options import ChatOptions
from .status import status_payload

__all__ = ["chat_routes"]


def chat_routes(
    manager: ConnectionManager, verifier: Verifier, **options: Any
) -> list[BaseRoute]:
    """Routes for ``/chat/{chat_id}`` (WebSocket) and ``GET /status``.

    Args:
        manager: The connection manager.
        verifier: Verifies tokens (a :class:`~wschat.TokenVerifier`).
        **options: Any :class:`~wschat.options.ChatOptions` field.

    Returns:
        Routes to pass to ``Mount(prefix, routes=...)`` or ``Starlette(routes=...)``.

    Raises:
        ConfigurationError: An option is unknown or invalid.
    """
    opts = ChatOptions.from_kwargs(**options)

    async def status(request: Request) -> JSONResponse:
        return JSONResponse(
            status_payload(manager), headers={"cache-control": "no-store"}
        )

    return [
        WebSocketRoute(
            "/chat/{chat_id}",
            ChatSocketApp(manager, verifier, opts),
            name="wschat_chat",
        ),
        Route("/status", status, methods=["GET"], name="wschat_status"),
    ]
