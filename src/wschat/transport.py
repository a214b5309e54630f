"""The one interface an adapter implements: a WebSocket as the endpoint sees it.

Imports: the standard library and :mod:`wschat.query` (core layer).

An adapter turns its framework's socket into a :class:`Transport` and a
:class:`Handshake`; the endpoint does everything else. :mod:`wschat.asgi` holds the one
implementation over raw ASGI messages, which the Starlette and FastAPI adapters reuse.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .errors import TransportClosed as TransportClosed
from .query import Query

__all__ = ["Handshake", "Transport", "TransportClosed"]


@dataclass(frozen=True, slots=True)
class Handshake:
    """What the endpoint needs to know about an opening handshake.

    Attributes:
        chat_id: The raw ``{chat_id}`` path segment, percent-decoded.
        query_string: The raw query string (it may hold the token: never log it).
        headers: Request headers, names lower-cased, the first value of each.
        subprotocols: Subprotocols the client offered, in order.
        scheme: ``ws`` or ``wss``.
        client: ``host:port`` of the peer, for logs.
        query: ``query_string`` split once (made from it; not an argument): what
            admission reads the token from, and what redaction rewrites.
    """

    chat_id: str
    query_string: bytes = field(repr=False)
    headers: Mapping[str, str] = field(repr=False)
    subprotocols: Sequence[str] = field(repr=False)
    scheme: str = "ws"
    client: str = "-"
    query: Query = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "query", Query(self.query_string))


class Transport(Protocol):
    """A WebSocket the endpoint can drive.

    ``receive`` returns the text or bytes of the next frame, or None once the client
    has gone. ``send_text``, ``send_many`` and ``close`` raise :class:`TransportClosed`
    when the peer is gone. ``deny`` answers the handshake with an HTTP response
    instead of accepting.

    A transport may also offer ``drop_after(seconds) -> None``: drop the connection
    if it is still open ``seconds`` from now. The endpoint calls it (when present)
    as it starts to close a connection, with ``close_timeout``, so that a client that
    never takes its close frame does not keep the connection
    (:class:`~wschat.asgi.AsgiTransport` does it on uvicorn).

    And ``try_send_text(text) -> bool``: send a text frame now, without waiting, if
    the socket takes it at once (True), or send nothing (False; it goes later with
    ``send_text``); :class:`TransportClosed` when the peer is gone. A connection
    then sends frames queued for an idle client (presence at a sweep) from the
    sweep itself, without starting a writer task for them. Offer it only if a
    False really sent nothing.
    """

    async def accept(self, subprotocol: str | None) -> None:
        """Complete the handshake, selecting ``subprotocol`` if given."""
        ...

    async def receive(self) -> str | bytes | None:
        """The next frame's payload, or None when the client is gone."""
        ...

    async def send_text(self, text: str) -> None:
        """Send one text frame."""
        ...

    async def send_many(self, texts: Sequence[str]) -> None:
        """Send text frames in order, one frame each, as ``send_text`` would.

        The writer calls this when several frames are queued; implement it as one
        loop, not as calls to ``send_text``: that saves a coroutine per frame.
        """
        ...

    async def close(self, code: int, reason: str) -> None:
        """Send a close frame with ``code`` and ``reason``."""
        ...

    async def deny(self, status: int, body: str | None) -> None:
        """Refuse the handshake with an HTTP response instead of accepting.

        Args:
            status: The HTTP status, when the server supports custom denials.
            body: A plain text body; None for a bare HTTP 403 that tells the peer
                nothing (the Origin check).
        """
        ...
