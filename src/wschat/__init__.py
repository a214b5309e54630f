"""wschat: authenticated WebSocket chat endpoints for any ASGI app.

Mount one adapter and get ``/ws/chat/{chat_id}?token=<JWT>`` and ``GET /ws/status``::

    verifier = TokenVerifier(SECRET, algorithms=["HS256"])
    manager = ConnectionManager()
    app.include_router(chat_router(manager, verifier), prefix="/ws")

The names below are the public API of the core; adapters live in ``wschat.fastapi``,
``wschat.starlette`` and ``wschat.asgi``; test helpers in ``wschat.testing``; the
adapter-author seam in ``wschat.transport`` and ``wschat.endpoint``.

What is here: what an application writes against (the manager, the verifier, the
options, the hooks and the :class:`Connection` they receive, the id types of
callback signatures, :class:`RoomRegistry`), the wire's vocabulary
(:class:`CloseCode`, :class:`ErrorCode`), and the errors an application meets:

* every error it **raises** into wschat: from a verifier (:class:`AuthenticationError`
  and each of its subclasses), from ``authorize`` (:class:`Forbidden`), from a hook
  (:class:`Veto`);
* every error it **passes** to ``close_user``, ``close_room`` or ``close_all`` to end
  connections on purpose: :class:`NormalClosure`, :class:`GoingAway`,
  :class:`ServiceRestart`, :class:`TryAgainLater`, :class:`Forbidden`;
* every error it **catches** from wschat: :class:`ConfigurationError` (a constructor
  or an adapter refused its options) and the root, :class:`WSChatError`.

The errors only wschat decides (limits, bad frames, slow consumers, a transport or a
backplane that failed) are in :mod:`wschat.errors`; backplane authors import theirs
from :mod:`wschat.backplane`. Values a method returns (``ManagerStats``) and option
types (``OutboxLimits``) stay in their modules.

Imports: the core modules only (core layer): ``import wschat`` loads no framework.
"""

from __future__ import annotations

from .auth import Principal as Principal
from .auth import TokenVerifier as TokenVerifier
from .auth import Verifier as Verifier
from .auth import token_fingerprint as token_fingerprint
from .connection import Connection as Connection
from .errors import AuthenticationError as AuthenticationError
from .errors import CloseCode as CloseCode
from .errors import ConfigurationError as ConfigurationError
from .errors import ErrorCode as ErrorCode
from .errors import Forbidden as Forbidden
from .errors import GoingAway as GoingAway
from .errors import NormalClosure as NormalClosure
from .errors import ServiceRestart as ServiceRestart
from .errors import TokenAmbiguous as TokenAmbiguous
from .errors import TokenExpired as TokenExpired
from .errors import TokenInvalid as TokenInvalid
from .errors import TokenMalformed as TokenMalformed
from .errors import TokenMissing as TokenMissing
from .errors import TokenNotYetValid as TokenNotYetValid
from .errors import TokenRevoked as TokenRevoked
from .errors import TokenTooLarge as TokenTooLarge
from .errors import TryAgainLater as TryAgainLater
from .errors import Veto as Veto
from .errors import WSChatError as WSChatError
from .hooks import ChatHooks as ChatHooks
from .ids import ChatId as ChatId
from .ids import ConnectionId as ConnectionId
from .ids import UserId as UserId
from .jwks import JwksVerifier as JwksVerifier
from .manager import ConnectionManager as ConnectionManager
from .options import ChatOptions as ChatOptions
from .rooms import RoomRegistry as RoomRegistry

__version__ = "0.2.0"

__all__ = [
    "AuthenticationError",
    "ChatHooks",
    "ChatId",
    "ChatOptions",
    "CloseCode",
    "ConfigurationError",
    "Connection",
    "ConnectionId",
    "ConnectionManager",
    "ErrorCode",
    "Forbidden",
    "GoingAway",
    "JwksVerifier",
    "NormalClosure",
    "Principal",
    "RoomRegistry",
    "ServiceRestart",
    "TokenAmbiguous",
    "TokenExpired",
    "TokenInvalid",
    "TokenMalformed",
    "TokenMissing",
    "TokenNotYetValid",
    "TokenRevoked",
    "TokenTooLarge",
    "TokenVerifier",
    "TryAgainLater",
    "UserId",
    "Verifier",
    "Veto",
    "WSChatError",
    "__version__",
    "token_fingerprint",
]
