"""Apps for servers run in a subprocess by the log-redaction tests.

``mixed_app`` is a FastAPI app with the chat router and a route of its own that reads
a token; it is not wrapped in ``RedactTokens``, so only a logging filter keeps that
route's token out of the server's log. ``filtered_app`` (in
:mod:`tests.support.filtered_app`) installs the filter itself when imported.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request

from tests.support.common import SECRET
from wschat import ConnectionManager, TokenVerifier
from wschat.fastapi import chat_router

__all__ = ["mixed_app"]

verifier = TokenVerifier(SECRET, algorithms=["HS256"])

mixed_app = FastAPI()
mixed_app.include_router(chat_router(ConnectionManager(), verifier), prefix="/ws")


@mixed_app.get("/api/me")
async def me(request: Request) -> dict[str, Any]:
    return {"has_token": "access_token" in request.query_params}
