"""Build the demo app: ``/`` (the page), ``POST /demo/token``, and the chat routes.

Imports: the core, the Starlette adapter, Starlette, and :mod:`wschat.testing`.

The token endpoint hands a signed token to anyone who asks, which is exactly what a
development setup needs and exactly what production must never have. It lives here and
only here: no adapter mounts it. A real app signs tokens in its login flow, after it
knows who the user is.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Collection
from importlib import resources
from typing import Final

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send
from typing_extensions import Unpack

from ..auth import TokenVerifier
from ..errors import CloseCode, GoingAway
from ..manager import ConnectionManager
from ..options import ChatOptions, ChatOptionsKwargs
from ..starlette import chat_routes
from ..testing import generate_secret, mint_token

__all__ = ["LOOPBACK_HOSTS", "NAME_PATTERN", "create_app"]

#: A demo name: 1 to 64 letters, digits, ``_ . -``, starting with a letter or digit.
NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
#: Host names a demo bound to loopback answers to (see :class:`HostCheck`).
LOOPBACK_HOSTS: Final = ("127.0.0.1", "localhost", "::1")

_MAX_TOKEN_REQUEST_BYTES: Final = 1024
_NO_STORE: Final = {"cache-control": "no-store"}
# The page loads nothing from anywhere: no CDN, no fonts, no network but its own.
_PAGE_HEADERS: Final = {
    "cache-control": "no-store",
    "content-security-policy": (
        "default-src 'none'; script-src 'self' 'unsafe-inline'; "
        "style-src 'unsafe-inline'; "
        "img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


_SCRIPT_HEADERS: Final = {
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
}
#: The built JS client (clients/js, ``npm run build``), which the page imports.
CLIENT_SCRIPT: Final = "wschat-client.js"


def _page() -> str:
    return resources.files(__package__).joinpath("page.html").read_text("utf-8")


def _client_script() -> str:
    return resources.files(__package__).joinpath(CLIENT_SCRIPT).read_text("utf-8")


def _problem(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": code, "message": message}, status_code=status, headers=_NO_STORE
    )


async def _read_limited(request: Request, limit: int) -> bytes | None:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return body


class HostCheck:
    """Answer only requests whose ``Host`` is one of ``hosts`` (any port).

    A page on another site can make the browser resolve its own name to 127.0.0.1
    (DNS rebinding) and then read the demo's responses as same-origin; the Host header
    still carries the attacker's name, so checking it closes that door.
    """

    def __init__(self, app: ASGIApp, hosts: Collection[str]) -> None:
        self.app = app
        self.hosts = frozenset(h.lower() for h in hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or _host_of(scope) in self.hosts:
            await self.app(scope, receive, send)
            return
        if kind == "websocket":
            if (await receive())["type"] == "websocket.connect":
                code = int(CloseCode.POLICY_VIOLATION)
                await send({"type": "websocket.close", "code": code})
            return
        body = b"invalid Host header: the demo answers only on loopback names\n"
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _host_of(scope: Scope) -> str:
    raw = ""
    for name, value in scope.get("headers", ()):
        if name == b"host":
            raw = value.decode("latin-1").strip().lower()
            break
    if raw.startswith("["):
        return raw[1 : raw.find("]")] if "]" in raw else raw
    return raw.rsplit(":", 1)[0] if ":" in raw else raw


def create_app(
    secret: str | None = None,
    *,
    token_ttl: int = 3600,
    trusted_hosts: Collection[str] | None = None,
    manager: ConnectionManager | None = None,
    options: ChatOptions | None = None,
    **kwargs: Unpack[ChatOptionsKwargs],
) -> Starlette:
    """Build the demo app.

    Args:
        secret: The HS256 key; by default a new one per call, never shown anywhere.
        token_ttl: Lifetime in seconds of the tokens the demo hands out.
        trusted_hosts: Host names to answer (any port); None answers every host.
        manager: The connection manager (default: a new in-memory one); it holds
            the outbox caps.
        options: A :class:`~wschat.ChatOptions` for the chat routes; None for the
            defaults.
        **kwargs: :class:`~wschat.ChatOptions` fields (typed: see
            :class:`~wschat.options.ChatOptionsKwargs`), replacing those of
            ``options``.

    Returns:
        A Starlette app serving ``/``, ``/wschat-client.js`` (the JS client the page
        runs on), ``POST /demo/token``, ``/ws/chat/{chat_id}``
        and ``GET /ws/status``. ``app.state.manager`` is its manager.

    Raises:
        ConfigurationError: ``secret`` is too short, or an option is invalid.
    """
    key = secret if secret is not None else generate_secret()
    verifier = TokenVerifier(key, algorithms=["HS256"])
    chat = manager if manager is not None else ConnectionManager()
    page = _page()
    script = _client_script()

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(page, headers=_PAGE_HEADERS)

    async def client_script(request: Request) -> Response:
        return Response(script, media_type="text/javascript", headers=_SCRIPT_HEADERS)

    async def token(request: Request) -> JSONResponse:
        # Requiring JSON makes a cross-site form post impossible without a CORS
        # preflight, which this app never answers.
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            return _problem(
                415, "unsupported_media_type", 'send JSON like {"name": "alice"}'
            )
        raw = await _read_limited(request, _MAX_TOKEN_REQUEST_BYTES)
        if raw is None:
            return _problem(413, "too_large", "the request body is too large")
        try:
            data = json.loads(raw)
        except ValueError:
            return _problem(400, "bad_json", "the request body is not valid JSON")
        name = data.get("name") if isinstance(data, dict) else None
        if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
            return _problem(
                400,
                "invalid_name",
                "a name is 1 to 64 letters, digits, '_', '.' or '-', "
                "starting with a letter or digit",
            )
        return JSONResponse(
            {"token": mint_token(key, name, ttl=token_ttl), "expires_in": token_ttl},
            headers=_NO_STORE,
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        chat.close_all(GoingAway())

    middleware = (
        [Middleware(HostCheck, hosts=trusted_hosts)]
        if trusted_hosts is not None
        else []
    )
    app = Starlette(
        routes=[
            Route("/", index, methods=["GET"], name="demo_page"),
            Route(
                f"/{CLIENT_SCRIPT}", client_script, methods=["GET"], name="demo_client"
            ),
            Route("/demo/token", token, methods=["POST"], name="demo_token"),
            Mount("/ws", routes=chat_routes(chat, verifier, options, **kwargs)),
        ],
        middleware=middleware,
        lifespan=lifespan,
    )
    app.state.manager = chat
    return app
