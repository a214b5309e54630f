"""Public test kit: an in-process chat client, real tokens, backplane conformance.

Imports: the tools-layer modules it re-exports, PyJWT and the standard library. No
web framework, no redis, no asyncio: tests using it run on asyncio and trio.

Example::

    async with ChatTestClient(app, secret=SECRET) as client:
        async with client.connect("lobby", user="alice") as alice:
            ready = await alice.receive_until(Ready)

    token = mint_token(SECRET, "alice", ttl=3600)
"""

from __future__ import annotations

import secrets

from .backplane.conformance import check_backplane as check_backplane
from .testclient import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from .testclient import AuthOk as AuthOk
from .testclient import ChatClosed as ChatClosed
from .testclient import ChatDenied as ChatDenied
from .testclient import ChatTestClient as ChatTestClient
from .testclient import ChatTestSession as ChatTestSession
from .testclient import Error as Error
from .testclient import Frame as Frame
from .testclient import Message as Message
from .testclient import OtherFrame as OtherFrame
from .testclient import Pong as Pong
from .testclient import Presence as Presence
from .testclient import ProtocolViolation as ProtocolViolation
from .testclient import Ready as Ready
from .testclient import Resync as Resync
from .testclient import mint_token as mint_token
from .testclient import parse_server_frame as parse_server_frame

__all__ = [
    "DEFAULT_TIMEOUT",
    "AuthOk",
    "ChatClosed",
    "ChatDenied",
    "ChatTestClient",
    "ChatTestSession",
    "Error",
    "Frame",
    "Message",
    "OtherFrame",
    "Pong",
    "Presence",
    "ProtocolViolation",
    "Ready",
    "Resync",
    "check_backplane",
    "generate_secret",
    "mint_token",
    "parse_server_frame",
]


def generate_secret() -> str:
    """A random HMAC secret long enough for HS512 (64 bytes of text)."""
    return secrets.token_urlsafe(48)
