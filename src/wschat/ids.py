"""Identifier types and the chat id rule. Pure.

Imports: the standard library only (pure layer).

Chat ids become backplane channel names, so they are checked against a strict pattern
before anything else happens on a connection.
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Final, NewType

from .errors import InvalidChatId

__all__ = [
    "CHAT_ID_PATTERN",
    "ChatId",
    "ConnectionId",
    "UserId",
    "new_node_id",
    "validate_chat_id",
]

ChatId = NewType("ChatId", str)
UserId = NewType("UserId", str)
ConnectionId = NewType("ConnectionId", str)

#: Letters, digits, ``_ - . :``; 1 to 128 characters; starts with a letter or digit.
CHAT_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}")


def validate_chat_id(raw: str) -> ChatId:
    """Check a chat id from a URL path.

    Args:
        raw: The path segment, already percent-decoded.

    Returns:
        The same text as a :data:`ChatId`.

    Raises:
        InvalidChatId: It does not match :data:`CHAT_ID_PATTERN`.
    """
    if CHAT_ID_PATTERN.fullmatch(raw) is None:
        raise InvalidChatId()
    return ChatId(raw)


def new_node_id() -> str:
    """A short random id for this process (prefixes connection and message ids)."""
    return os.urandom(4).hex()


class IdSource:
    """Cheap unique ids: a per-process random prefix and a counter."""

    __slots__ = ("_counter", "prefix")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._counter = itertools.count(1)

    def next(self) -> str:
        """Return the next id, unique within this process and across processes."""
        return f"{self.prefix}-{next(self._counter)}"
