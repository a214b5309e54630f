"""FastAPI adapter: ``chat_router`` to include with a prefix.

Imports: the core, the ASGI and Starlette adapters, Starlette and FastAPI.

Example::

    app.include_router(chat_router(manager, verifier), prefix="/ws")

As with :func:`wschat.starlette.chat_routes`, every request the router answers is
logged by the server with its tokens redacted, including requests under the prefix
that no route matched (:class:`~wschat.starlette.TokenFallbackRoute`).
"""

from __future__ import annotations

from typing import Any

from typing_extensions import Unpack

try:
    from fastapi import APIRouter, Request, Response
    from starlette.routing import WebSocketRoute
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "wschat.fastapi needs FastAPI: pip install 'wschat[fastapi]'"
    ) from exc

from .asgi import ASYNCAPI_PATH, SCHEMA_PATH, ChatSocketApp, wire_document
from .auth import Verifier
from .manager import ConnectionManager
from .options import ChatOptions, ChatOptionsKwargs
from .redact import redact_scope
from .starlette import TokenFallbackRoute
from .status import status_payload

__all__ = ["chat_router"]


def chat_router(
    manager: ConnectionManager,
    verifier: Verifier,
    options: ChatOptions | None = None,
    *,
    tags: list[str] | None = None,
    **kwargs: Unpack[ChatOptionsKwargs],
) -> APIRouter:
    """An ``APIRouter`` with ``/chat/{chat_id}`` (WebSocket), ``GET /status`` and
    the wire's documents, ``GET /schema.json`` and ``GET /asyncapi.json``.

    Args:
        manager: The connection manager (it holds the outbox caps).
        verifier: Verifies tokens (a :class:`~wschat.TokenVerifier`).
        options: A :class:`~wschat.ChatOptions`; None for the defaults.
        tags: OpenAPI tags for the status route.
        **kwargs: :class:`~wschat.ChatOptions` fields (typed: see
            :class:`~wschat.options.ChatOptionsKwargs`), replacing those of
            ``options``.

    Returns:
        A router for ``app.include_router(router, prefix="/ws")``.

    Raises:
        ConfigurationError: An option is unknown or invalid.
    """
    opts = ChatOptions.from_kwargs(options, **kwargs)
    router = APIRouter(tags=list(tags or ["chat"]))
    # First: of the partial matches, the first one wins (see chat_routes).
    router.routes.append(TokenFallbackRoute())

    async def chat_status(request: Request) -> dict[str, Any]:
        """Health and counters of the chat endpoint (no user ids, no tokens)."""
        redact_scope(request.scope)
        return status_payload(manager)

    router.add_api_route("/status", chat_status, methods=["GET"], name="wschat_status")

    async def wire_schema(request: Request) -> Response:
        """The wire protocol's JSON Schema, or its AsyncAPI 3.0 document."""
        redact_scope(request.scope)
        return Response(
            wire_document(request.url.path) or b"",
            media_type="application/json",
            headers={"cache-control": "max-age=300"},
        )

    for path, name in (
        (SCHEMA_PATH, "wschat_schema"),
        (ASYNCAPI_PATH, "wschat_asyncapi"),
    ):
        router.add_api_route(
            path, wire_schema, methods=["GET"], name=name, include_in_schema=False
        )
    router.routes.append(
        WebSocketRoute(
            "/chat/{chat_id}",
            ChatSocketApp(manager, verifier, opts),
            name="wschat_chat",
        )
    )
    return router
