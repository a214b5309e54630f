# docs/examples/hooks_app.py
"""FastAPI chat with hooks, room authorization and an origin allowlist.

Run it with: uvicorn hooks_app:app
"""

from __future__ import annotations

import logging
import os

from fastapi import FastAPI

from wschat import (
    ChatHooks,
    ChatId,
    Connection,
    ConnectionManager,
    Principal,
    TokenVerifier,
    Veto,
)
from wschat.fastapi import chat_router
from wschat.protocol import JSON

log = logging.getLogger("myapp.chat")
# uvicorn shows only its own loggers: without a handler these INFO lines go nowhere.
# In your app, configure logging once where it starts (logging.config.dictConfig).
log.setLevel(logging.INFO)
if not log.handlers:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    log.addHandler(handler)

# DEVELOPMENT FALLBACK ONLY. In production set WSCHAT_SECRET to a random string of
# at least 32 bytes: python -c 'import secrets; print(secrets.token_urlsafe(64))'
SECRET = os.environ.get("WSCHAT_SECRET", "dev-only-secret-never-use-in-production-000")


class Moderated(ChatHooks):
    async def on_message(self, conn: Connection, body: JSON) -> JSON:
        # Only {"text": "..."} bodies; the sender gets an error frame otherwise.
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            raise Veto('body must be {"text": "..."}')
        text = body["text"].strip()
        if not text:
            raise Veto("empty message")
        return {"text": text[:2000]}  # what everyone receives, sender included

    async def on_join(self, conn: Connection) -> None:
        log.info("%s joined %s", conn.user_id, conn.chat_id)

    async def on_leave(self, conn: Connection) -> None:
        log.info("%s left %s", conn.user_id, conn.chat_id)


def authorize(principal: Principal, chat_id: ChatId) -> bool:
    # "lobby" is open to everyone; other rooms must be listed in the token.
    rooms = principal.claims.get("rooms", [])
    return chat_id == "lobby" or (isinstance(rooms, list) and chat_id in rooms)


verifier = TokenVerifier(SECRET, algorithms=["HS256"])
manager = ConnectionManager(max_connections_per_user=5)

app = FastAPI()
app.include_router(
    chat_router(
        manager,
        verifier,
        hooks=Moderated(),
        authorize=authorize,
        allowed_origins=["https://app.example.com"],
    ),
    prefix="/ws",
)
