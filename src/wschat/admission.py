"""The handshake decision: admit, refuse, or wait for an ``auth`` frame. Pure.

Imports: the standard library and the modules below it (core layer). No anyio, no
I/O: every decision here is a function of what it is given, testable without a
socket.

:func:`decide` reads a :class:`~wschat.transport.Handshake` in a fixed order, the
first failure deciding:

1. the chat id (its refusal waits until the Origin has passed: a refused Origin
   learns nothing more than a bare HTTP 403, whatever the chat id),
2. the Origin (:class:`~wschat.origin.OriginPolicy`),
3. where the token is (:func:`find_token`: the query's ``token`` or a
   ``bearer.<JWT>`` subprotocol, never both and never twice),
4. the token itself (the verifier),

and answers :class:`Admit`, :class:`Refuse`, or :class:`AwaitAuth` (no token, and
``first_message_auth`` is on). :func:`decide_auth_frame` decides on the frame such a
socket sends first. Room authorization (``authorize``, sync or async) is the
endpoint's next step after an :class:`Admit`; the endpoint also does the talking:
accept, close, deny, and the log line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

from .auth import Principal, Verifier, token_fingerprint
from .errors import (
    BadRequest,
    InvalidChatId,
    MessageTooBig,
    OriginRefused,
    TextOnly,
    TokenMalformed,
    TokenMissing,
    WSChatError,
)
from .ids import ChatId, validate_chat_id
from .options import ChatOptions
from .protocol import (
    SUBPROTOCOL,
    SUBPROTOCOL_BATCH,
    ClientAuth,
    FrameError,
    Since,
    parse_client_frame,
    parse_since,
)
from .query import Query
from .transport import Handshake

__all__ = [
    "Admit",
    "AwaitAuth",
    "Decision",
    "Refuse",
    "TokenSource",
    "auth_frame_token",
    "decide",
    "decide_auth_frame",
    "find_token",
    "offered_subprotocol",
    "offered_token",
    "refused_fingerprint",
    "verify",
]

_BEARER = "bearer."


# -- where the token is ---------------------------------------------------------------


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


def _bearer_tokens(subprotocols: Sequence[str]) -> list[str]:
    return [p[len(_BEARER) :] for p in subprotocols if p.startswith(_BEARER)]


def find_token(query: Query | bytes, subprotocols: Sequence[str]) -> TokenSource:
    """Find the token in the query string or the subprotocol list. Pure.

    Args:
        query: The query string, split (a handshake's ``query``) or raw.
        subprotocols: The subprotocols the client offered.

    Returns:
        Where the token is and which subprotocol to select.

    Raises:
        TokenMalformed: The token was given twice, or in both places.
    """
    if not isinstance(query, Query):
        query = Query(query)
    in_query = query.get_all("token")
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
    flags = query.get_all("batch")
    batch = SUBPROTOCOL_BATCH in subprotocols or (
        bool(flags) and flags[-1] in ("1", "true")
    )
    return TokenSource(token, subprotocol, batch)


def offered_token(hs: Handshake) -> str | None:
    """The one token a handshake carries, or None (none, or given more than once).

    What a :class:`~wschat.auth.PreparingVerifier` prepares for before
    :func:`decide` runs; a handshake with two tokens is refused by the decision.
    """
    tokens = _offered_tokens(hs)
    return tokens[0] if len(tokens) == 1 else None


def auth_frame_token(data: str | bytes, limit: int) -> str | None:
    """The token of an ``auth`` frame, or None if ``data`` is no such frame.

    A frame over ``limit`` characters is not parsed (:func:`decide_auth_frame`
    refuses it).
    """
    if not isinstance(data, str) or len(data) > limit:
        return None
    try:
        frame = parse_client_frame(data)
    except FrameError:
        return None
    return frame.token if isinstance(frame, ClientAuth) else None


def _offered_tokens(hs: Handshake) -> list[str]:
    """Every token the handshake carries, wherever :func:`find_token` looks."""
    return hs.query.get_all("token") + _bearer_tokens(hs.subprotocols)


def _fingerprints(tokens: Sequence[str]) -> str:
    return ",".join(dict.fromkeys(token_fingerprint(t) for t in tokens)) or "none"


def refused_fingerprint(hs: Handshake, source: TokenSource | None) -> str:
    """Fingerprints of the token(s) a refused handshake carried, safe to log.

    Without a :class:`TokenSource` (the chat id was refused first, or the token was
    given twice) the handshake is searched the way :func:`find_token` searches it.
    """
    if source is not None:
        return token_fingerprint(source.token) if source.token else "none"
    return _fingerprints(_offered_tokens(hs))


def offered_subprotocol(hs: Handshake) -> str | None:
    """The subprotocol to select for a refused handshake: ``wschat.v1`` if offered."""
    return SUBPROTOCOL if SUBPROTOCOL in hs.subprotocols else None


# -- the decisions --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Admit:
    """Let the handshake in (once ``authorize``, if any, agrees).

    Attributes:
        principal: Who the token says this is.
        chat_id: The room, validated.
        subprotocol: The subprotocol to select on accept.
        batch: Whether the client opted in to ``batch`` frames.
        fingerprint: The token's fingerprint, for the log line of a later refusal
            (``authorize`` said no).
        since: What the client asks to recover (``?since=&epoch=``, or the
            ``auth`` frame's), or None.
    """

    principal: Principal
    chat_id: ChatId
    subprotocol: str | None
    batch: bool
    fingerprint: str
    since: Since | None = None


@dataclass(frozen=True, slots=True)
class AwaitAuth:
    """Accept, then wait for an ``auth`` frame (:func:`decide_auth_frame`).

    The handshake carried no token and ``first_message_auth`` is on.

    Attributes:
        chat_id: The room, validated.
        subprotocol: The subprotocol to select on accept.
        batch: Whether the client opted in to ``batch`` frames.
        since: What the query asks to recover (an ``auth`` frame may say instead).
    """

    chat_id: ChatId
    subprotocol: str | None
    batch: bool
    since: Since | None = None


class Refuse:
    """Refuse the handshake: what to tell the client, and what to log.

    The refused token is never shown: :attr:`fingerprint` names it. It is hashed
    only when read, for a log line that is written: a flood of refusals written as
    one line and a count costs one hash, not one per refusal.

    The error is kept for its code and words only: its traceback and the exceptions
    chained to it are dropped. They would hold the frames that decided, and those
    hold this refusal: a reference cycle per refused handshake, for the cyclic GC to
    find during a flood of them.

    Attributes:
        error: What the client is told: its close code and reason, or its HTTP
            status. An :class:`~wschat.errors.OriginRefused` is a bare HTTP 403.
        subprotocol: The subprotocol to select when the refusal is told after
            accept (``wschat.v1`` if the client offered it).
        origin: The refused ``Origin`` header, for the log line (an
            ``OriginRefused`` only).
        cause: What the verifier raised when it failed with something other than
            a :class:`~wschat.errors.WSChatError` (the client is told 1011): the
            log line's traceback.

    Args:
        error: See above.
        subprotocol: See above.
        tokens: The token(s) to name in the log: hashed when :attr:`fingerprint`
            is first read, then dropped.
        fingerprint: The fingerprint, when it is known already (an
            :class:`Admit`'s); ``tokens`` is then not used.
        origin: See above.
        cause: See above.
    """

    __slots__ = ("_fingerprint", "_tokens", "cause", "error", "origin", "subprotocol")

    def __init__(
        self,
        error: WSChatError,
        subprotocol: str | None = None,
        *,
        tokens: Sequence[str] = (),
        fingerprint: str | None = None,
        origin: str | None = None,
        cause: Exception | None = None,
    ) -> None:
        error.__traceback__ = error.__cause__ = error.__context__ = None
        self.error = error
        self.subprotocol = subprotocol
        self.origin = origin
        self.cause = cause
        self._tokens = tuple(tokens)
        self._fingerprint = fingerprint

    @property
    def fingerprint(self) -> str:
        """The refused token's fingerprint (several, comma-separated, if the
        handshake carried several), or ``none``: safe to log."""
        if self._fingerprint is None:
            self._fingerprint = _fingerprints(self._tokens)
            self._tokens = ()
        return self._fingerprint

    def __repr__(self) -> str:
        return f"Refuse({self.error!r}, subprotocol={self.subprotocol!r})"


#: What :func:`decide` answers.
Decision: TypeAlias = "Admit | AwaitAuth | Refuse"


def verify(
    verifier: Verifier, token: str, subprotocol: str | None = None
) -> Principal | Refuse:
    """Run the verifier: the principal, or the refusal (a crash in it is a 1011).

    Args:
        verifier: The configured verifier.
        token: The token to verify.
        subprotocol: The :attr:`Refuse.subprotocol` of a refusal.

    Returns:
        The principal, or a :class:`Refuse` with the verifier's error; with its
        ``cause`` when the verifier raised something else than a
        :class:`~wschat.errors.WSChatError`.
    """
    # An empty token (``?token=``) is logged as no token at all.
    tokens = (token,) if token else ()
    try:
        return verifier.verify(token)
    except WSChatError as exc:
        return Refuse(exc, subprotocol, tokens=tokens)
    except Exception as exc:
        return Refuse(WSChatError(), subprotocol, tokens=tokens, cause=exc)


def decide(hs: Handshake, options: ChatOptions, verifier: Verifier) -> Decision:
    """Decide on a handshake: admit it, refuse it, or wait for an ``auth`` frame.

    Args:
        hs: The handshake.
        options: The endpoint's options (the Origin policy, ``first_message_auth``).
        verifier: Verifies a token found in the handshake.

    Returns:
        :class:`Admit`, :class:`Refuse` or :class:`AwaitAuth`.
    """
    # The chat id is checked first, but a refused origin is told nothing more than
    # a bare 403, whatever the chat id.
    try:
        chat_id = validate_chat_id(hs.chat_id)
    except InvalidChatId as exc:
        bad_id: InvalidChatId | None = exc
    else:
        bad_id = None
    headers = hs.headers
    origin = headers.get("origin")
    if not options.origin_policy.check(origin, headers.get("host"), hs.scheme):
        return Refuse(OriginRefused(origin=origin or ""), origin=origin)
    subprotocol = SUBPROTOCOL if SUBPROTOCOL in hs.subprotocols else None
    if bad_id is not None:
        return Refuse(bad_id, subprotocol, tokens=_offered_tokens(hs))
    try:
        source = find_token(hs.query, hs.subprotocols)
    except TokenMalformed as exc:
        return Refuse(exc, subprotocol, tokens=_offered_tokens(hs))
    token = source.token
    if token is None:
        if not options.first_message_auth:
            return Refuse(TokenMissing(), subprotocol)
        since = _query_since(hs)
        if isinstance(since, BadRequest):
            return Refuse(since, subprotocol)
        return AwaitAuth(chat_id, subprotocol, source.batch, since)
    checked = verify(verifier, token, subprotocol)
    if isinstance(checked, Refuse):
        return checked
    since = _query_since(hs)
    if isinstance(since, BadRequest):
        return Refuse(since, subprotocol, tokens=(token,))
    return Admit(
        checked,
        chat_id,
        subprotocol,
        source.batch,
        checked.fingerprint or token_fingerprint(token),
        since,
    )


def _query_since(hs: Handshake) -> Since | BadRequest | None:
    """``?since=&epoch=``: what to recover, None, or why the values are refused."""
    query = hs.query
    try:
        return parse_since(query.get_all("since"), query.get_all("epoch"))
    except ValueError as exc:
        return BadRequest(str(exc))


def decide_auth_frame(
    data: str | bytes, waiting: AwaitAuth, options: ChatOptions, verifier: Verifier
) -> Admit | Refuse:
    """Decide on the first frame of a socket that waits for its ``auth`` frame.

    The socket is accepted already: a refusal here is told with a close frame, and
    has no subprotocol to select.

    Args:
        data: The frame's payload, text or bytes.
        waiting: What :func:`decide` answered for the handshake.
        options: The endpoint's options (``max_message_bytes``).
        verifier: Verifies the frame's token.

    Returns:
        :class:`Admit` (the room still to authorize), or :class:`Refuse`.
    """
    if not isinstance(data, str):
        return Refuse(TextOnly())
    limit = options.max_message_bytes
    if len(data) > limit or len(data.encode("utf-8", "replace")) > limit:
        return Refuse(MessageTooBig(f"frames are limited to {limit} bytes"))
    try:
        frame = parse_client_frame(data)
    except FrameError as exc:
        if exc.code == "bad_frame" and '"auth"' in data and "since" in data:
            # An auth frame whose since/epoch are wrong: say so, not "no token".
            return Refuse(BadRequest(f"auth frame: {exc.detail}"))
        return Refuse(TokenMissing(f"first frame is not an auth frame ({exc.code})"))
    if not isinstance(frame, ClientAuth):
        return Refuse(TokenMissing('the first frame must be {"type": "auth", ...}'))
    checked = verify(verifier, frame.token)
    if isinstance(checked, Refuse):
        return checked
    return Admit(
        checked,
        waiting.chat_id,
        waiting.subprotocol,
        waiting.batch,
        checked.fingerprint or token_fingerprint(frame.token),
        frame.since or waiting.since,
    )
