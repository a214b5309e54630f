"""Public test kit: an in-process chat client, real tokens, backplane conformance.

Imports: the modules it re-exports (:mod:`wschat.testclient`, :mod:`wschat.frames`,
the backplane conformance suite) and the standard library. No web framework, no
redis, no asyncio: tests using it run on asyncio and trio.

Example::

    async with ChatTestClient(app, secret=SECRET) as client:
        async with client.connect("lobby", user="alice") as alice:
            ready = await alice.receive_until(Ready)

    token = mint_token(SECRET, "alice", ttl=3600)
"""

from __future__ import annotations

import secrets

from .backplane.conformance import check_backplane as check_backplane
from .frames import AuthOk as AuthOk
from .frames import Error as Error
from .frames import Frame as Frame
from .frames import History as History
from .frames import Members as Members
from .frames import Message as Message
from .frames import OtherFrame as OtherFrame
from .frames import Pong as Pong
from .frames import Presence as Presence
from .frames import ProtocolViolation as ProtocolViolation
from .frames import Ready as Ready
from .frames import Resync as Resync
from .frames import TokenExpiring as TokenExpiring
from .frames import parse_server_frame as parse_server_frame
from .history.conformance import check_history_store as check_history_store
from .testclient import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from .testclient import ChatClosed as ChatClosed
from .testclient import ChatDenied as ChatDenied
from .testclient import ChatTestClient as ChatTestClient
from .testclient import ChatTestSession as ChatTestSession
from .testclient import mint_token as mint_token

__all__ = [
    "DEFAULT_TIMEOUT",
    "AuthOk",
    "ChatClosed",
    "ChatDenied",
    "ChatTestClient",
    "ChatTestSession",
    "Error",
    "Frame",
    "History",
    "Members",
    "Message",
    "OtherFrame",
    "Pong",
    "Presence",
    "ProtocolViolation",
    "Ready",
    "Resync",
    "TokenExpiring",
    "check_backplane",
    "generate_secret",
    "mint_token",
    "parse_server_frame",
]


def generate_secret() -> str:
    """A random HMAC secret long enough for HS512 (64 bytes of text)."""
    return secrets.token_urlsafe(48)
