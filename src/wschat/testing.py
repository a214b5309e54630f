"""Public test kit: real tokens for tests and development.

Imports: PyJWT and the standard library.

Example::

    token = mint_token(SECRET, "alice", ttl=3600)
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Any

import jwt

from .backplane.conformance import check_backplane as check_backplane

__all__ = ["check_backplane", "generate_secret", "mint_token"]


def generate_secret() -> str:
    """A random HMAC secret long enough for HS512 (64 bytes of text)."""
    return secrets.token_urlsafe(48)


def mint_token(
    key: str | bytes,
    sub: str,
    *,
    ttl: float = 3600,
    algorithm: str = "HS256",
    claims: Mapping[str, Any] | None = None,
    now: float | None = None,
) -> str:
    """Sign a real JWT for ``sub``.

    Args:
        key: HMAC secret, or a PEM private key for ``RS*``/``ES*``/``EdDSA``.
        sub: The user id (the ``sub`` claim).
        ttl: Seconds until ``exp``.
        algorithm: The JWS algorithm.
        claims: Extra claims (``aud``, ``iss``, ...); they override the defaults.
        now: The issue time in Unix seconds (default: now).

    Returns:
        The encoded token.
    """
    issued = time.time() if now is None else now
    payload: dict[str, Any] = {"sub": sub, "iat": int(issued), "exp": int(issued + ttl)}
    payload.update(claims or {})
    return jwt.encode(payload, key, algorithm=algorithm)
