# docs/examples/starlette_app.py
"""Chat on Starlette: ws://127.0.0.1:8000/ws/chat/{chat_id}?token=<JWT>.

Run it with: uvicorn starlette_app:app
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.routing import Mount

from wschat import ConnectionManager, TokenVerifier
from wschat.starlette import chat_routes

# DEVELOPMENT FALLBACK ONLY. In production set WSCHAT_SECRET to a random string of
# at least 32 bytes: python -c 'import secrets; print(secrets.token_urlsafe(64))'
SECRET = os.environ.get("WSCHAT_SECRET", "dev-only-secret-never-use-in-production-000")

verifier = TokenVerifier(SECRET, algorithms=["HS256"])
manager = ConnectionManager()

app = Starlette(routes=[Mount("/ws", routes=chat_routes(manager, verifier))])
