"""Small importable apps for servers run in a subprocess
(``uvicorn tests.support.apps:x``).

Each app mounts the chat endpoint under ``/ws`` with the test secret, one per adapter.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Mount

from tests.support.common import SECRET
from wschat import ConnectionManager, TokenVerifier
from wschat.asgi import chat_app
from wschat.fastapi import chat_router
from wschat.starlette import chat_routes

__all__ = ["asgi_app", "fastapi_app", "starlette_app"]

verifier = TokenVerifier(SECRET, algorithms=["HS256"])

asgi_app = chat_app(ConnectionManager(), verifier)

starlette_app = Starlette(
    routes=[Mount("/ws", routes=chat_routes(ConnectionManager(), verifier))]
)

fastapi_app = FastAPI()
fastapi_app.include_router(chat_router(ConnectionManager(), verifier), prefix="/ws")
