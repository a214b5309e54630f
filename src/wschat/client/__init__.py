"""A Python client for wschat servers that does the right thing after every close.

Imports: ``websockets`` (extra ``wschat[client]``), ``anyio`` and the modules below
(tools layer: no core module imports it). asyncio only: ``websockets`` has no trio
support.

::

    async with connect(url, token_provider=login) as chat:
        await chat.send("hello")
        async for event in chat:
            if event.type == "message":
                print(event.user, event.body)

See docs/clients.md: the events, the errors and what to do about them, the
reconnect policy (:func:`close_policy` and :func:`policy_for`, read from the data
file ``wschat/schema/close-codes.json``; :func:`decide` is the step the client
takes), the token provider, and resuming with
``since`` and ``epoch``.

Errors::

    ClientError
    ├── ChatStopped     refused by the server, or gave up (.code .reason .fix)
    ├── SendQueueFull   too many messages wait for a reconnect
    ├── HistoryError    the server refused a history request (.code .message)
    └── MembersError    the server refused a members request (.code .message)
"""

from __future__ import annotations

from ..frames import (
    AuthOk as AuthOk,
)
from ..frames import (
    Error as Error,
)
from ..frames import (
    History as History,
)
from ..frames import (
    Members as Members,
)
from ..frames import (
    Message as Message,
)
from ..frames import (
    OtherFrame as OtherFrame,
)
from ..frames import (
    Pong as Pong,
)
from ..frames import (
    Presence as Presence,
)
from ..frames import (
    Ready as Ready,
)
from ..frames import (
    Resync as Resync,
)
from ..frames import (
    TokenExpiring as TokenExpiring,
)
from .chat import DEFAULT_MAX_EVENTS as DEFAULT_MAX_EVENTS
from .chat import DEFAULT_MAX_QUEUE as DEFAULT_MAX_QUEUE
from .chat import Chat as Chat
from .chat import HistoryError as HistoryError
from .chat import MembersError as MembersError
from .chat import TokenProvider as TokenProvider
from .chat import connect as connect
from .events import Disconnected as Disconnected
from .events import Event as Event
from .events import Reconnected as Reconnected
from .policy import Backoff as Backoff
from .policy import ChatStopped as ChatStopped
from .policy import ClientError as ClientError
from .policy import ClosePolicy as ClosePolicy
from .policy import SendQueueFull as SendQueueFull
from .policy import close_policy as close_policy
from .policy import decide as decide
from .policy import policy_for as policy_for

__all__ = [
    "DEFAULT_MAX_EVENTS",
    "DEFAULT_MAX_QUEUE",
    "AuthOk",
    "Backoff",
    "Chat",
    "ChatStopped",
    "ClientError",
    "ClosePolicy",
    "Disconnected",
    "Error",
    "Event",
    "History",
    "HistoryError",
    "Members",
    "MembersError",
    "Message",
    "OtherFrame",
    "Pong",
    "Presence",
    "Ready",
    "Reconnected",
    "Resync",
    "SendQueueFull",
    "TokenExpiring",
    "TokenProvider",
    "close_policy",
    "connect",
    "decide",
    "policy_for",
]
