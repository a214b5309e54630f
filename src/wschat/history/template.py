"""A ``message`` frame encoded before its offset is known: a head and a tail.

Imports: the standard library only (pure layer).

The offset of a message is part of its frame (``{"type":"message",...,"offset":7}``),
but only the history store knows the offset, at the moment it stores the message. So
the frame is encoded once, with the offset left out, as two strings: the text before
the offset's digits (:attr:`FrameTemplate.head`) and the text after them
(:attr:`FrameTemplate.tail`). Any store builds the final frame as
``head + str(offset) + tail``, inside whatever makes its offset assignment atomic: a
Python method that does not await, an SQL statement (``$2 || n::text || $3``), or a
Redis Lua script (``head .. n .. tail``) that also publishes the frame, so offset
order equals delivery order on every process. No store calls back into Python, and
the body is encoded once, not once per attempt.

The offset is the frame's last field, so the tail is ``"}"`` today; stores must not
rely on that: they concatenate whatever tail they are given.

This module holds the message encoding with an offset while :mod:`wschat.protocol`
is being changed elsewhere; ``tests/core/test_history_template.py`` checks that the two
agree byte for byte, so it can move into ``protocol`` unchanged.
"""

from __future__ import annotations

import json
from typing import Any, Final, NamedTuple

__all__ = ["FrameTemplate", "encode_message_template"]

# The same encoder settings as wschat.protocol: compact, ASCII only, no NaN.
_dumps: Final = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
#: What the encoder writes for the placeholder offset 0 at the end of the object.
_PLACEHOLDER: Final = "0}"


class FrameTemplate(NamedTuple):
    """An encoded frame missing only its offset's digits.

    Attributes:
        head: The frame's text up to the offset (ends with ``"offset":``).
        tail: The frame's text after the offset.
    """

    head: str
    tail: str

    def render(self, offset: int) -> str:
        """The frame with ``offset`` filled in: ``head + str(offset) + tail``."""
        return f"{self.head}{offset}{self.tail}"


def encode_message_template(
    *,
    id: str,
    chat_id: str,
    user: str,
    body: Any,
    ts: int,
    client_id: str | None,
) -> FrameTemplate:
    """Encode a server ``message`` frame whose ``offset`` a history store fills in.

    ``encode_message_template(...).render(n)`` is exactly the JSON encoding of the
    frame ``wschat.protocol.encode_message`` builds with ``"offset": n`` added as the
    last field.

    Raises:
        ValueError: ``body`` holds something JSON cannot carry (NaN, infinity).
    """
    text = _dumps(
        {
            "type": "message",
            "id": id,
            "chat_id": chat_id,
            "user": user,
            "body": body,
            "ts": ts,
            "client_id": client_id,
            "offset": 0,
        }
    )
    # The offset is the last key of a compact dict, so the text ends with its
    # placeholder digit and the closing brace.
    return FrameTemplate(text[: -len(_PLACEHOLDER)], text[-1:])
