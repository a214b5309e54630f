"""Where a handshake carries its token, and what to say about it in a log.

Imports: the standard library only (core layer).

A token comes in the query (``?token=<JWT>``) or as a ``bearer.<JWT>`` subprotocol,
never both and never twice. :func:`find_token` finds it (and the ``batch`` opt-in);
:func:`refused_fingerprint` names the token(s) of a refused handshake without
showing them.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qs

from .auth import token_fingerprint
from .errors import TokenMalformed
from .protocol import SUBPROTOCOL, SUBPROTOCOL_BATCH
from .transport import Handshake

__all__ = ["TokenSource", "find_token", "offered_subprotocol", "refused_fingerprint"]

_BEARER = "bearer."


class TokenSource:
    """Where the token was found and what to answer in the handshake.

    Attributes:
        token: The token, or None if the client sent none.
        subprotocol: The subprotocol to select (``wschat.v1`` if offered).
        batch: Whether the client opted in to ``batch`` frames.
    """

    __slots__ = ("batch", "subprotocol", "token")

    def __init__(self, token: str | None, subprotocol: str | None, batch: bool) -> None:
        self.token = token
        self.subprotocol = subprotocol
        self.batch = batch

    def __repr__(self) -> str:
        return f"TokenSource(token=<redacted>, subprotocol={self.subprotocol!r})"


def find_token(query_string: bytes, subprotocols: Sequence[str]) -> TokenSource:
    """Find the token in the query string or the subprotocol list. Pure.

    Args:
        query_string: The raw query string.
        subprotocols: The subprotocols the client offered.

    Returns:
        Where the token is and which subprotocol to select.

    Raises:
        TokenMalformed: The token was given twice, or in both places.
    """
    query = parse_qs(query_string.decode("latin-1"), keep_blank_values=True)
    in_query = query.get("token", [])
    if len(in_query) > 1:
        raise TokenMalformed(
            f"token parameter given {len(in_query)} times; send it once"
        )
    in_protocols = [p[len(_BEARER) :] for p in subprotocols if p.startswith(_BEARER)]
    if len(in_protocols) > 1:
        raise TokenMalformed("more than one bearer.<JWT> subprotocol; send one")
    if in_query and in_protocols:
        raise TokenMalformed(
            "token given in both the query and a subprotocol; send one"
        )
    found = in_query or in_protocols
    token = found[0] if found else None
    subprotocol = SUBPROTOCOL if SUBPROTOCOL in subprotocols else None
    batch = SUBPROTOCOL_BATCH in subprotocols or query.get("batch", ["0"])[-1] in (
        "1",
        "true",
    )
    return TokenSource(token, subprotocol, batch)


def refused_fingerprint(hs: Handshake, source: TokenSource | None) -> str:
    """Fingerprints of the token(s) a refused handshake carried, safe to log.

    Without a :class:`TokenSource` (the chat id was refused first, or the token was
    given twice) the handshake is searched the way :func:`find_token` searches it.
    """
    if source is not None:
        return token_fingerprint(source.token) if source.token else "none"
    query = parse_qs(hs.query_string.decode("latin-1"), keep_blank_values=True)
    tokens = query.get("token", [])
    tokens += [p[len(_BEARER) :] for p in hs.subprotocols if p.startswith(_BEARER)]
    return ",".join(dict.fromkeys(token_fingerprint(t) for t in tokens)) or "none"


def offered_subprotocol(hs: Handshake) -> str | None:
    """The subprotocol to select for a refused handshake: ``wschat.v1`` if offered."""
    return SUBPROTOCOL if SUBPROTOCOL in hs.subprotocols else None
