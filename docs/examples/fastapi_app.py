# docs/examples/fastapi_app.py
"""Chat on FastAPI: ws://127.0.0.1:8000/ws/chat/{chat_id}?token=<JWT>.

Run it with: uvicorn fastapi_app:app
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from wschat import ConnectionManager, TokenVerifier
from wschat.fastapi import chat_router

# DEVELOPMENT FALLBACK ONLY. In production set WSCHAT_SECRET to a random string of
# at least 32 bytes: python -c 'import secrets; print(secrets.token_urlsafe(64))'
SECRET = os.environ.get("WSCHAT_SECRET", "dev-only-secret-never-use-in-production-000")

verifier = TokenVerifier(SECRET, algorithms=["HS256"])
manager = ConnectionManager()

app = FastAPI()
app.include_router(chat_router(manager, verifier), prefix="/ws")
