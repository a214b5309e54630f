"""Starlette adapter: ``chat_routes`` to mount under any path.

Imports: the core, the ASGI adapter and Starlette.

Example::

    app = Starlette(routes=[Mount("/ws", routes=chat_routes(manager, verifier))])

Every request these routes answer is logged by the server with its tokens redacted:
the chat socket and the status route redact the scope before answering, and
:class:`TokenFallbackRoute` answers the requests under the mount that carry a token
and that no route matched (a trailing slash, a typo, a plain GET to the socket path).
"""

from __future__ import annotations

from typing_extensions import Unpack

try:
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import BaseRoute, Match, Mount, Route, WebSocketRoute
    from starlette.types import Receive, Scope, Send
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "wschat.starlette needs Starlette: pip install 'wschat[starlette]'"
    ) from exc

from .asgi import (
    ASYNCAPI_PATH,
    SCHEMA_PATH,
    ChatSocketApp,
    asks_for_websocket,
    close_unknown,
    not_found,
    warn_plain_upgrade,
    wire_document,
)
from .auth import Verifier
from .manager import ConnectionManager
from .options import ChatOptions, ChatOptionsKwargs
from .redact import redact_query, redact_scope
from .status import status_payload

__all__ = ["TokenFallbackRoute", "chat_routes"]


class TokenFallbackRoute(Mount):
    """Answers requests under its prefix that carry a token and match no route.

    Such a request would otherwise be answered by the framework (404, a refused
    socket, a redirect) and logged by the server with the token in the URL. This
    route redacts the scope first, then answers 404 (HTTP) or refuses the socket.

    It matches only requests with a token-named query parameter (or a JWT in the
    query; see :mod:`wschat.redact`), and WebSocket handshakes that the server
    passed on as plain HTTP (it cannot serve WebSockets: a WARNING says so, once;
    :func:`~wschat.asgi.warn_plain_upgrade`), under the path it is mounted at (FastAPI's
    ``include_router(prefix=...)`` and Starlette's ``Mount`` both place it), and only
    as a partial match: any route of the app that fully matches the request, before
    or after it, still gets it. It is a ``Mount`` so that FastAPI keeps it, with the
    prefix, when the router is included.
    """

    def __init__(self) -> None:
        super().__init__("", app=self._answer, name="wschat_token_fallback")

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] not in ("http", "websocket"):
            return Match.NONE, {}
        query: bytes = scope.get("query_string", b"")
        # A handshake the server passed on as plain HTTP: answered here to say why.
        if (not query or redact_query(query) is query) and not asks_for_websocket(
            scope
        ):
            return Match.NONE, {}
        match, _ = super().matches(scope)
        if match is Match.NONE:
            return Match.NONE, {}
        return Match.PARTIAL, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._answer(scope, receive, send)

    @staticmethod
    async def _answer(scope: Scope, receive: Receive, send: Send) -> None:
        redact_scope(scope)
        if scope["type"] == "websocket":
            await close_unknown(receive, send)
        else:
            warn_plain_upgrade(scope)
            await not_found(send, upgrade=asks_for_websocket(scope))


def chat_routes(
    manager: ConnectionManager,
    verifier: Verifier,
    options: ChatOptions | None = None,
    **kwargs: Unpack[ChatOptionsKwargs],
) -> list[BaseRoute]:
    """Routes for ``/chat/{chat_id}`` (WebSocket), ``GET /status`` and the wire's
    documents, ``GET /schema.json`` (JSON Schema) and ``GET /asyncapi.json``.

    Args:
        manager: The connection manager (it holds the outbox caps).
        verifier: Verifies tokens (a :class:`~wschat.TokenVerifier`).
        options: A :class:`~wschat.ChatOptions`; None for the defaults.
        **kwargs: :class:`~wschat.ChatOptions` fields (typed: see
            :class:`~wschat.options.ChatOptionsKwargs`), replacing those of
            ``options``.

    Returns:
        Routes to pass to ``Mount(prefix, routes=...)`` or ``Starlette(routes=...)``;
        the first one is a :class:`TokenFallbackRoute`.

    Raises:
        ConfigurationError: An option is unknown or invalid.
    """
    opts = ChatOptions.from_kwargs(options, **kwargs)

    async def status(request: Request) -> JSONResponse:
        redact_scope(request.scope)
        return JSONResponse(
            status_payload(manager), headers={"cache-control": "no-store"}
        )

    async def document(request: Request) -> Response:
        redact_scope(request.scope)
        return Response(
            wire_document(request.url.path) or b"",
            media_type="application/json",
            headers={"cache-control": "max-age=300"},
        )

    return [
        # First: of the partial matches, the first one wins (``POST /status?token=``
        # is partial for the status route too), and a full match beats it anyway.
        TokenFallbackRoute(),
        WebSocketRoute(
            "/chat/{chat_id}",
            ChatSocketApp(manager, verifier, opts),
            name="wschat_chat",
        ),
        Route("/status", status, methods=["GET"], name="wschat_status"),
        Route(SCHEMA_PATH, document, methods=["GET"], name="wschat_schema"),
        Route(ASYNCAPI_PATH, document, methods=["GET"], name="wschat_asyncapi"),
    ]
