"""Application hooks: persist, transform or veto messages; observe joins and leaves.

Imports: the standard library only (core layer).

Subclass :class:`ChatHooks` and override what you need; pass an instance as the
``hooks`` option of any adapter. A hook that raises anything but :class:`Veto` ends
only that connection, with 1011 ``internal_error``, and is logged once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import Veto as Veto
from .protocol import JSON, Published

if TYPE_CHECKING:
    from .connection import Connection

__all__ = ["ChatHooks", "Veto"]


class ChatHooks:
    """Override any of these coroutines; the defaults do nothing."""

    async def on_message(self, conn: Connection, body: JSON) -> JSON:
        """Called for each chat message before it is broadcast.

        Args:
            conn: The sender's connection (``conn.principal``, ``conn.chat_id``).
            body: The message body as the client sent it.

        Returns:
            The body to broadcast (return it unchanged, or a transformed one).

        Raises:
            Veto: To refuse the message with an error frame to the sender.
        """
        return body

    async def on_published(self, conn: Connection, message: Published) -> None:
        """Called after a chat message was numbered, kept and broadcast.

        ``message`` holds the server's ``id``, ``ts``, ``offset`` and ``epoch``
        (both None with history off) and the final ``frame`` every member got,
        so an app that persists messages can key them by the server's ids. The
        sender's next frame waits for it, as for :meth:`on_message`. It runs
        after the broadcast: raising closes the sender's connection (1011) but
        cannot take the message back.

        Args:
            conn: The sender's connection.
            message: The message as it was sent.
        """

    async def on_join(self, conn: Connection) -> None:
        """Called after a connection is accepted and joined its room."""

    async def on_leave(self, conn: Connection) -> None:
        """Called after a connection left its room, however it ended."""
