"""Apps for the token-in-logs test, served by uvicorn and hypercorn in a subprocess.

Every token source is on (``header``, ``cookie``, ``query``, ``subprotocol``,
``auth_frame``); tokens are revoked by a deny-list of ``jti``s (any ``jti`` that
starts with ``deny-``) and by ``POST /admin/revoke/{user}``
(:meth:`~wschat.ConnectionManager.revoke_user`); a token whose ``crash`` claim names
a hook (``verify``, ``is_revoked``, ``authorize``) makes that hook raise
(``introspect``: the verifier, with the token in the exception's text, as an HTTP
client's error naming the URL does). The
verifier's leeway is 0 so that a short ``exp`` ends a connection quickly.

wschat's own loggers write at DEBUG to stderr with a plain handler of their own: no
:class:`~wschat.logfilter.RedactingFilter` is on it, so what wschat logs must be
clean at its source. ``asgi_app``, ``starlette_app`` and ``fastapi_app`` are the
three adapters.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from tests.support.common import SECRET
from wschat import ChatId, ConnectionManager, Principal, TokenVerifier, UserId
from wschat.asgi import chat_app
from wschat.fastapi import chat_router
from wschat.starlette import chat_routes

__all__ = ["ORIGIN", "asgi_app", "fastapi_app", "starlette_app"]

#: The browser origin the test's clients send (the cookie source needs one).
ORIGIN = "https://app.example.test"

_handler = logging.StreamHandler(sys.stderr)
_handler.setFormatter(
    logging.Formatter("%(levelname)s %(name)s: %(message)s")  # exc_info included
)
_wschat_log = logging.getLogger("wschat")
_wschat_log.setLevel(logging.DEBUG)
_wschat_log.addHandler(_handler)
_wschat_log.propagate = False


class CrashOnClaim(Exception):
    """What a hook raises for a token marked to crash it."""


def _crash(principal: Principal, hook: str) -> None:
    if principal.claims.get("crash") == hook:
        # The principal in the message: its repr must not hold the token.
        raise CrashOnClaim(f"{hook} crashed for {principal!r}")


class IntrospectionFailed(Exception):
    """What an HTTP client raises when a token introspection call fails: its text
    holds the URL, token included (as ``httpx`` and ``requests`` errors do)."""


class CrashingVerifier(TokenVerifier):
    """A TokenVerifier that raises (not an AuthenticationError) for ``crash=verify``,
    and for ``crash=introspect`` with the token in the exception's text."""

    def verify(self, token: str) -> Principal:
        principal = super().verify(token)
        _crash(principal, "verify")
        if principal.claims.get("crash") == "introspect":
            raise IntrospectionFailed(
                "Client error '401 Unauthorized' for url "
                f"'https://idp.example.test/introspect?token={token}'"
            ) from ValueError(f"token {token} is not active")
        return principal


def is_revoked(principal: Principal) -> bool:
    _crash(principal, "is_revoked")
    return str(principal.claims.get("jti", "")).startswith("deny-")


async def authorize(principal: Principal, chat_id: ChatId) -> bool:
    _crash(principal, "authorize")
    return True


OPTIONS: dict[str, Any] = {
    "token_sources": ["header", "cookie", "query", "subprotocol", "auth_frame"],
    "allowed_origins": [ORIGIN],
    "is_revoked": is_revoked,
    "authorize": authorize,
    "expiry_notice": 1.0,
}


def _verifier() -> CrashingVerifier:
    return CrashingVerifier(SECRET, algorithms=["HS256"], leeway=0)


def _revoke(manager: ConnectionManager, user: str) -> dict[str, int]:
    return {"closed": manager.revoke_user(UserId(user))}


# --- raw ASGI -------------------------------------------------------------------

_asgi_manager = ConnectionManager()
_asgi_chat = chat_app(_asgi_manager, _verifier(), **OPTIONS)


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    path = scope.get("path", "")
    if scope["type"] == "http" and path.startswith("/admin/revoke/"):
        await JSONResponse(_revoke(_asgi_manager, path.rsplit("/", 1)[1]))(
            scope, receive, send
        )
        return
    await _asgi_chat(scope, receive, send)


# --- Starlette ------------------------------------------------------------------

_starlette_manager = ConnectionManager()


async def _starlette_revoke(request: Request) -> JSONResponse:
    return JSONResponse(_revoke(_starlette_manager, request.path_params["user"]))


starlette_app = Starlette(
    routes=[
        Route("/admin/revoke/{user}", _starlette_revoke, methods=["POST"]),
        Mount("/ws", routes=chat_routes(_starlette_manager, _verifier(), **OPTIONS)),
    ]
)

# --- FastAPI --------------------------------------------------------------------

_fastapi_manager = ConnectionManager()
fastapi_app = FastAPI()
fastapi_app.include_router(
    chat_router(_fastapi_manager, _verifier(), **OPTIONS), prefix="/ws"
)


@fastapi_app.post("/admin/revoke/{user}")
async def _fastapi_revoke(user: str) -> dict[str, int]:
    return _revoke(_fastapi_manager, user)
