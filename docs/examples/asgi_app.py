# docs/examples/asgi_app.py
"""Chat as a plain ASGI app, no framework: ws://127.0.0.1:8000/ws/chat/{chat_id}.

Run it with: uvicorn asgi_app:app
"""

from __future__ import annotations

import os

from wschat import ConnectionManager, TokenVerifier
from wschat.asgi import chat_app

# DEVELOPMENT FALLBACK ONLY. In production set WSCHAT_SECRET to a random string of
# at least 32 bytes: python -c 'import secrets; print(secrets.token_urlsafe(64))'
SECRET = os.environ.get("WSCHAT_SECRET", "dev-only-secret-never-use-in-production-000")

verifier = TokenVerifier(SECRET, algorithms=["HS256"])
manager = ConnectionManager()

app = chat_app(manager, verifier, prefix="/ws")
