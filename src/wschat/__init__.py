"""wschat: authenticated WebSocket chat endpoints for any ASGI app.

Mount one adapter and get ``/ws/chat/{chat_id}?token=<JWT>`` and ``GET /ws/status``::

    verifier = TokenVerifier(SECRET, algorithms=["HS256"])
    manager = ConnectionManager()
    app.include_router(chat_router(manager, verifier), prefix="/ws")

The names below are the public API of the core; adapters live in ``wschat.fastapi``,
``wschat.starlette`` and ``wschat.asgi``; test helpers in ``wschat.testing``.

Imports: the core modules only (core layer): ``import wschat`` loads no framework.
"""

from __future__ import annotations

from .auth import Principal as Principal
from .auth import TokenVerifier as TokenVerifier
from .auth import Verifier as Verifier
from .auth import token_fingerprint as token_fingerprint
from .connection import Connection as Connection
from .connection import OutboxLimits as OutboxLimits
from .errors import AuthenticationError as AuthenticationError
from .errors import ConfigurationError as ConfigurationError
from .errors import Forbidden as Forbidden
from .errors import GoingAway as GoingAway
from .errors import ServiceRestart as ServiceRestart
from .errors import WSChatError as WSChatError
from .hooks import ChatHooks as ChatHooks
from .hooks import Veto as Veto
from .ids import ChatId as ChatId
from .ids import ConnectionId as ConnectionId
from .ids import UserId as UserId
from .jwks import JwksVerifier as JwksVerifier
from .manager import ConnectionManager as ConnectionManager
from .manager import ManagerStats as ManagerStats
from .options import ChatOptions as ChatOptions
from .rooms import RoomRegistry as RoomRegistry

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "ChatHooks",
    "ChatId",
    "ChatOptions",
    "ConfigurationError",
    "Connection",
    "ConnectionId",
    "ConnectionManager",
    "Forbidden",
    "GoingAway",
    "JwksVerifier",
    "ManagerStats",
    "OutboxLimits",
    "Principal",
    "RoomRegistry",
    "ServiceRestart",
    "TokenVerifier",
    "UserId",
    "Verifier",
    "Veto",
    "WSChatError",
    "__version__",
    "token_fingerprint",
]
