"""Message history: offsets, epochs, and the stores that keep recent messages.

Imports: the standard library (core layer); the conformance suite, not imported
here, also uses anyio.

A :class:`HistoryStore` numbers each room's messages (the ``offset`` in every
``message`` frame) and keeps some of them, so a client that reconnects recovers what
it missed and a client that joins can scroll back. :class:`MemoryHistoryStore` is the
default; ``docs/examples/history_postgres.py`` keeps scrollback in PostgreSQL; any
store is checked with :func:`wschat.testing.check_history_store`.

Example::

    store = MemoryHistoryStore(max_messages=100, ttl=300)
    template = encode_message_template(
        id="m1", chat_id="lobby", user="alice", body="hi", ts=0, client_id=None
    )
    stored = await store.append("lobby", template)   # stored.frame has "offset":1
"""

from __future__ import annotations

from ..errors import HistoryStoreUnavailable as HistoryStoreUnavailable
from .base import AppendInDoubt as AppendInDoubt
from .base import Entry as Entry
from .base import HistoryHealth as HistoryHealth
from .base import HistoryStore as HistoryStore
from .base import Page as Page
from .base import PendingAppend as PendingAppend
from .base import Position as Position
from .base import Stored as Stored
from .memory import MemoryHistoryStore as MemoryHistoryStore
from .template import FrameTemplate as FrameTemplate
from .template import encode_message_template as encode_message_template

__all__ = [
    "AppendInDoubt",
    "Entry",
    "FrameTemplate",
    "HistoryHealth",
    "HistoryStore",
    "HistoryStoreUnavailable",
    "MemoryHistoryStore",
    "Page",
    "PendingAppend",
    "Position",
    "Stored",
    "encode_message_template",
]
