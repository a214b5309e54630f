"""The handshake decision: admit, refuse, or wait for an ``auth`` frame. Pure.

Imports: the standard library and the modules below it (core layer). No anyio, no
I/O: every decision here is a function of what it is given, testable without a
socket.

:func:`decide` reads a :class:`~wschat.transport.Handshake` in a fixed order, the
first failure deciding:

1. the chat id (its refusal waits until the Origin has passed: a refused Origin
   learns nothing more than a bare HTTP 403, whatever the chat id),
2. the Origin (:class:`~wschat.origin.OriginPolicy`),
3. where the token is (:func:`find_token`: the sources of ``token_sources`` that
   are on, in order: the ``Authorization: Bearer`` header, a named cookie, the
   query's ``token``, a ``bearer.<JWT>`` subprotocol; a token in a source that is
   off is never used, two different tokens are ``token_ambiguous``, the same one
   in two sources is one token),
4. the token itself (the verifier),

and answers :class:`Admit`, :class:`Refuse`, or :class:`AwaitAuth` (no token, and
the ``auth_frame`` source is on: ``first_message_auth``). :func:`decide_auth_frame`
decides on the frame such a socket sends first. Room authorization (``authorize``,
sync or async) is the endpoint's next step after an :class:`Admit`; the endpoint also
does the talking: accept, close, deny, and the log line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from .auth import Principal, Verifier, token_fingerprint
from .errors import (
    BadRequest,
    InvalidChatId,
    MessageTooBig,
    OriginRefused,
    TextOnly,
    TokenAmbiguous,
    TokenMalformed,
    TokenMissing,
    WSChatError,
)
from .ids import ChatId, validate_chat_id
from .options import (
    DEFAULT_TOKEN_COOKIE,
    DEFAULT_TOKEN_SOURCES,
    ChatOptions,
    TokenSourceName,
)
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
    "cookie_tokens",
    "decide",
    "decide_auth_frame",
    "find_token",
    "header_tokens",
    "missing_detail",
    "offered_subprotocol",
    "offered_token",
    "refused_fingerprint",
    "verify",
]

_BEARER = "bearer."
#: How each source is named to a person (the ``token_missing`` hint and
#: ``token_ambiguous`` reason).
_SAY: dict[str, str] = {
    "header": "Authorization: Bearer <JWT>",
    "cookie": "the {cookie} cookie",
    "query": "?token=<JWT>",
    "subprotocol": "the subprotocols wschat.v1, bearer.<JWT>",
    "auth_frame": "an auth frame",
}
_SHORT: dict[str, str] = {
    "header": "the Authorization header",
    "cookie": "the {cookie} cookie",
    "query": "the query",
    "subprotocol": "a subprotocol",
    "auth_frame": "an auth frame",
}


# -- where the token is ---------------------------------------------------------------

#: The default options, for the helpers that take none.
_DEFAULTS = ChatOptions()


class TokenSource:
    """Where the token was found and what to answer in the handshake.

    Attributes:
        token: The token, or None if the client sent none (in a source that is on).
        subprotocol: The subprotocol to select (``wschat.v1`` if offered).
        batch: Whether the client opted in to ``batch`` frames.
        source: The source the token was read from (the first of ``sources`` that
            held it), or None.
        ignored: Sources that are off but held a token (never used; named in the
            ``token_missing`` reason).
    """

    __slots__ = ("batch", "ignored", "source", "subprotocol", "token")

    def __init__(
        self,
        token: str | None,
        subprotocol: str | None,
        batch: bool,
        source: TokenSourceName | None = None,
        ignored: tuple[TokenSourceName, ...] = (),
    ) -> None:
        self.token = token
        self.subprotocol = subprotocol
        self.batch = batch
        self.source = source
        self.ignored = ignored

    def __repr__(self) -> str:
        return (
            f"TokenSource(token=<redacted>, source={self.source!r}, "
            f"subprotocol={self.subprotocol!r})"
        )


def _bearer_tokens(subprotocols: Sequence[str]) -> list[str]:
    return [p[len(_BEARER) :] for p in subprotocols if p.startswith(_BEARER)]


def _header_values(headers: Mapping[str, str], name: str) -> list[str]:
    """Every value of header ``name`` (a mapping may keep only the first)."""
    get_all = getattr(headers, "get_all", None)
    if get_all is not None:
        values: list[str] = get_all(name)
        return values
    value = headers.get(name)
    return [] if value is None else [value]


def header_tokens(headers: Mapping[str, str]) -> list[str]:
    """The tokens of ``Authorization: Bearer <JWT>`` headers (scheme in any case).

    An ``Authorization`` header of another scheme (``Basic``) holds no token.
    """
    tokens = []
    for value in _header_values(headers, "authorization"):
        scheme, _, rest = value.strip().partition(" ")
        if scheme.lower() == "bearer":
            tokens.append(rest.strip())
    return tokens


def cookie_tokens(headers: Mapping[str, str], name: str) -> list[str]:
    """The values of cookie ``name`` in the ``Cookie`` header(s), in order.

    Cookie names match exactly (RFC 6265); a value in double quotes is unquoted.
    """
    tokens = []
    for header in _header_values(headers, "cookie"):
        if name not in header:
            continue
        for pair in header.split(";"):
            key, eq, value = pair.partition("=")
            if eq and key.strip() == name:
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                tokens.append(value)
    return tokens


def _found(
    query: Query,
    subprotocols: Sequence[str],
    headers: Mapping[str, str],
    cookie: str,
) -> dict[TokenSourceName, list[str]]:
    """What each handshake source holds (sources with nothing left out)."""
    found: dict[TokenSourceName, list[str]] = {}
    in_query = query.get_all("token")
    if in_query:
        found["query"] = in_query
    in_protocols = _bearer_tokens(subprotocols)
    if in_protocols:
        found["subprotocol"] = in_protocols
    if headers:
        in_header = header_tokens(headers)
        if in_header:
            found["header"] = in_header
        in_cookie = cookie_tokens(headers, cookie)
        if in_cookie:
            found["cookie"] = in_cookie
    return found


def find_token(
    query: Query | bytes,
    subprotocols: Sequence[str],
    headers: Mapping[str, str] | None = None,
    *,
    sources: Sequence[TokenSourceName] = DEFAULT_TOKEN_SOURCES,
    cookie: str = DEFAULT_TOKEN_COOKIE,
) -> TokenSource:
    """Find the token in the handshake's sources that are on. Pure.

    Args:
        query: The query string, split (a handshake's ``query``) or raw.
        subprotocols: The subprotocols the client offered.
        headers: The request headers (for the ``header`` and ``cookie`` sources).
        sources: The sources that are on, in order (``token_sources``); a token
            anywhere else is never used.
        cookie: The cookie's name (``token_cookie``).

    Returns:
        Where the token is and which subprotocol to select.

    Raises:
        TokenMalformed: ``?token=`` given twice, or two ``bearer.`` subprotocols.
        TokenAmbiguous: Two different tokens, in two sources or in two
            ``Authorization`` headers or cookies of the same name.
    """
    if not isinstance(query, Query):
        query = Query(query)
    found = _found(query, subprotocols, headers or {}, cookie)
    token: str | None = None
    source: TokenSourceName | None = None
    for name in sources:
        tokens = found.get(name)
        if not tokens:
            continue
        if len(tokens) > 1:
            if name == "query":
                raise TokenMalformed(
                    f"token parameter given {len(tokens)} times; send it once"
                )
            if name == "subprotocol":
                raise TokenMalformed("more than one bearer.<JWT> subprotocol; send one")
            if len(set(tokens)) > 1:
                where = _SHORT[name].format(cookie=cookie)
                raise TokenAmbiguous(
                    f"{where} is given {len(tokens)} times with different tokens; "
                    "send one"
                )
        if token is None:
            token, source = tokens[0], name
        elif tokens[0] != token:
            assert source is not None
            raise TokenAmbiguous(
                f"different tokens in {_SHORT[source].format(cookie=cookie)} and "
                f"{_SHORT[name].format(cookie=cookie)}; send one"
            )
    ignored = tuple(n for n in found if n not in sources)
    subprotocol = SUBPROTOCOL if SUBPROTOCOL in subprotocols else None
    flags = query.get_all("batch")
    batch = SUBPROTOCOL_BATCH in subprotocols or (
        bool(flags) and flags[-1] in ("1", "true")
    )
    return TokenSource(token, subprotocol, batch, source, ignored)


def _find(hs: Handshake, options: ChatOptions) -> TokenSource:
    return find_token(
        hs.query,
        hs.subprotocols,
        hs.headers,
        sources=options.token_sources,
        cookie=options.token_cookie,
    )


def missing_detail(
    options: ChatOptions, ignored: Sequence[TokenSourceName] = ()
) -> str:
    """The words of a ``token_missing`` refusal: where to send the token.

    Args:
        options: The endpoint's options (its ``token_sources``).
        ignored: Sources that held a token but are off (named first).
    """
    cookie = options.token_cookie
    places = [
        _SAY[n].format(cookie=cookie)
        for n in options.token_sources
        if n != "auth_frame"
    ]
    if places:
        send = "send " + (
            places[0]
            if len(places) == 1
            else ", ".join(places[:-1]) + " or " + places[-1]
        )
    else:
        send = "send an auth frame first"
    if ignored:
        off = _SHORT[ignored[0]].format(cookie=cookie)
        return f"this server does not read a token from {off}; {send}"
    return send


def offered_token(hs: Handshake, options: ChatOptions | None = None) -> str | None:
    """The one token a handshake carries in a source that is on, or None (none,
    or given more than once).

    What a :class:`~wschat.auth.PreparingVerifier` prepares for before
    :func:`decide` runs; a handshake with two tokens is refused by the decision.

    Args:
        hs: The handshake.
        options: The endpoint's options (its ``token_sources``); None for the
            defaults.
    """
    tokens = set(_offered_tokens(hs, options or _DEFAULTS))
    return tokens.pop() if len(tokens) == 1 else None


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


def _offered_tokens(hs: Handshake, options: ChatOptions) -> list[str]:
    """Every token the handshake carries in a source that is on."""
    found = _found(hs.query, hs.subprotocols, hs.headers, options.token_cookie)
    return [t for n in options.token_sources for t in found.get(n, ())]


def _fingerprints(tokens: Sequence[str]) -> str:
    return ",".join(dict.fromkeys(token_fingerprint(t) for t in tokens)) or "none"


def refused_fingerprint(
    hs: Handshake, source: TokenSource | None, options: ChatOptions | None = None
) -> str:
    """Fingerprints of the token(s) a refused handshake carried, safe to log.

    Without a :class:`TokenSource` (the chat id was refused first, or the token was
    given twice) the handshake's sources that are on are searched the way
    :func:`find_token` searches them.
    """
    if source is not None:
        return token_fingerprint(source.token) if source.token else "none"
    return _fingerprints(_offered_tokens(hs, options or _DEFAULTS))


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
        return Refuse(bad_id, subprotocol, tokens=_offered_tokens(hs, options))
    try:
        source = _find(hs, options)
    except (TokenMalformed, TokenAmbiguous) as exc:
        return Refuse(exc, subprotocol, tokens=_offered_tokens(hs, options))
    token = source.token
    if token is None:
        if not options.waits_for_auth_frame:
            return Refuse(
                TokenMissing(missing_detail(options, source.ignored)), subprotocol
            )
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
