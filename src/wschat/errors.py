"""Every error wschat can put on the wire, and the one place that maps it there.

Imports: the standard library only (pure layer).

Each error carries its WebSocket close code (a :class:`CloseCode`), the HTTP status
used when a handshake is denied before ``accept``, and a stable snake_case reason
code. :func:`close_reason` builds the close reason (code first, then plain words) and
clamps it to the 123 bytes of UTF-8 a close frame allows. :func:`wire_close` turns an
error into what the peer gets (close code, reason, HTTP status) and the one log line
about it: every place that ends a connection goes through it. Errors that are
answered with an ``error`` frame instead (:class:`ErrorReply`) carry a code of
:class:`ErrorCode`, the registry of those frames' codes.

Exception tree (close code and reason code, or what the client gets instead)::

    WSChatError                       1011 internal_error
    ├── ConfigurationError            (raised at construction; never on the wire)
    ├── InvalidChatId                 4400 invalid_chat_id
    ├── BadRequest                    4400 bad_request
    ├── OriginRefused                 HTTP 403 before accept (ASGI: close 1008)
    ├── NotFound                      1008 not_found before accept (HTTP 403)
    ├── AuthenticationError           4401
    │   ├── TokenMissing              4401 token_missing
    │   ├── TokenMalformed            4401 token_malformed
    │   ├── TokenInvalid              4401 token_invalid
    │   ├── TokenExpired              4401 token_expired
    │   ├── TokenNotYetValid          4401 token_not_yet_valid
    │   ├── TokenTooLarge             4401 token_too_large
    │   ├── TokenAmbiguous            4401 token_ambiguous
    │   └── TokenRevoked              4401 token_revoked
    ├── Forbidden                     4403 forbidden
    ├── AuthTimeout                   4408 auth_timeout
    ├── TextOnly                      1003 text_only
    ├── MessageTooBig                 1009 message_too_big
    ├── SlowConsumer                  1013 slow_consumer
    ├── TryAgainLater                 1013 try_again_later
    │   └── KeysUnavailable           1013 try_again_later (no signing key yet)
    ├── RateLimited                   4429 rate_limited
    ├── TooManyConnections            4429 too_many_connections
    ├── NormalClosure                 1000 bye
    ├── GoingAway                     1001 going_away
    ├── ServiceRestart                1012 service_restart
    ├── TransportClosed               (the peer is gone: nothing is sent)
    └── ErrorReply                    an ``error`` frame; the connection stays open
        ├── FrameError                error bad_json, bad_frame or unknown_type
        ├── Veto                      error vetoed (or the hook's own code)
        ├── BackplaneUnavailable      error delivery_degraded
        │   ├── PublishInDoubt        error delivery_degraded, if not published
        │   └── HistoryStoreUnavailable  error delivery_degraded (not stored, not sent)
        ├── DeliveryInDoubt           error delivery_degraded (may or may not be sent)
        ├── HistoryUnavailable        error history_unavailable
        └── NotSent                   error not_sent

:class:`FrameError` is also re-exported by :mod:`wschat.protocol`, :class:`Veto` by
:mod:`wschat.hooks`, :class:`TransportClosed` by :mod:`wschat.transport`, and the
backplane errors by :mod:`wschat.backplane`, :class:`KeysUnavailable` by
:mod:`wschat.jwks`, :class:`HistoryStoreUnavailable` by :mod:`wschat.history`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from enum import Enum, IntEnum
from typing import ClassVar, Final, NamedTuple

__all__ = [
    "MAX_REASON_BYTES",
    "AuthTimeout",
    "AuthenticationError",
    "BackplaneUnavailable",
    "BadRequest",
    "CloseCode",
    "ConfigurationError",
    "DeliveryInDoubt",
    "ErrorCode",
    "ErrorReply",
    "Forbidden",
    "FrameError",
    "GoingAway",
    "HistoryStoreUnavailable",
    "HistoryUnavailable",
    "InvalidChatId",
    "KeysUnavailable",
    "MessageTooBig",
    "NormalClosure",
    "NotFound",
    "NotSent",
    "OriginRefused",
    "PublishInDoubt",
    "RateLimited",
    "ServiceRestart",
    "SlowConsumer",
    "TextOnly",
    "TokenAmbiguous",
    "TokenExpired",
    "TokenInvalid",
    "TokenMalformed",
    "TokenMissing",
    "TokenNotYetValid",
    "TokenRevoked",
    "TokenTooLarge",
    "TooManyConnections",
    "TransportClosed",
    "TryAgainLater",
    "Veto",
    "WSChatError",
    "WireClose",
    "close_reason",
    "error_class",
    "is_gone",
    "wire_close",
]


class CloseCode(IntEnum):
    """Every WebSocket close code wschat uses (RFC 6455 section 7.4, and 4xxx).

    The 4xxx codes mirror the HTTP status of the same meaning (4401 for 401).
    ``str()`` of a member is its number, so log lines read ``code=4401`` on every
    Python version.
    """

    #: ``bye``: the server ended the connection on purpose; do not reconnect.
    NORMAL_CLOSURE = 1000
    #: ``going_away``: the server is stopping.
    GOING_AWAY = 1001
    #: ``text_only``: a binary frame.
    UNSUPPORTED_DATA = 1003
    #: Never sent (RFC 6455 forbids it in a close frame): what a client sees when
    #: the connection drops without a close frame. :class:`TransportClosed`.
    ABNORMAL_CLOSURE = 1006
    #: A handshake refused before accept (the Origin check, a path nothing serves):
    #: ASGI servers answer it with a bare HTTP 403.
    POLICY_VIOLATION = 1008
    #: ``message_too_big``: a frame over ``max_message_bytes``.
    MESSAGE_TOO_BIG = 1009
    #: ``internal_error``: a bug, or application code raised.
    INTERNAL_ERROR = 1011
    #: ``service_restart``: the server is restarting.
    SERVICE_RESTART = 1012
    #: ``slow_consumer``, ``try_again_later``.
    TRY_AGAIN_LATER = 1013
    #: ``bad_request``, ``invalid_chat_id``.
    BAD_REQUEST = 4400
    #: ``token_*``: authentication failed, the token expired, or it was revoked.
    UNAUTHORIZED = 4401
    #: ``forbidden``: not allowed in this room.
    FORBIDDEN = 4403
    #: ``auth_timeout``: no ``auth`` frame in time.
    AUTH_TIMEOUT = 4408
    #: ``rate_limited``, ``too_many_connections``.
    TOO_MANY_REQUESTS = 4429

    def __str__(self) -> str:
        return str(self.value)


class ErrorCode(str, Enum):
    """The registry of ``error`` frame codes wschat sends; :attr:`meaning` says when.

    docs/protocol.md lists exactly these (a test holds both ways). An application's
    :class:`Veto` may send a code of its own besides.
    """

    BAD_JSON = "bad_json"
    BAD_FRAME = "bad_frame"
    UNKNOWN_TYPE = "unknown_type"
    VETOED = "vetoed"
    DELIVERY_DEGRADED = "delivery_degraded"
    HISTORY_UNAVAILABLE = "history_unavailable"
    NOT_SENT = "not_sent"
    BAD_CURSOR = "bad_cursor"

    def __str__(self) -> str:
        return str(self.value)

    @property
    def meaning(self) -> str:
        """When the server sends this code, in plain words."""
        return _MEANINGS[self]


_MEANINGS: Final[dict[ErrorCode, str]] = {
    ErrorCode.BAD_JSON: (
        "the frame is not valid JSON, or holds a number no double can hold"
    ),
    ErrorCode.BAD_FRAME: (
        "JSON, but not a frame of a known shape: not an object with a string type, "
        "a field of the wrong type, or nested too deep"
    ),
    ErrorCode.UNKNOWN_TYPE: (
        "the frame's type is not message, ping, auth, history or members"
    ),
    ErrorCode.VETOED: "the application's on_message hook refused the message",
    ErrorCode.DELIVERY_DEGRADED: (
        "with a shared backplane: the message reached only the members connected "
        "to this server"
    ),
    ErrorCode.HISTORY_UNAVAILABLE: (
        "a history request could not be answered: history is off, or the history "
        "store did not answer"
    ),
    ErrorCode.NOT_SENT: (
        "the message was not sent to anyone: the history store did not answer "
        "when it was to be numbered; send it again"
    ),
    ErrorCode.BAD_CURSOR: (
        "a members request's cursor is not one the server gave out (send none to "
        "start from the first page)"
    ),
}

#: RFC 6455 allows 125 bytes of close payload, two of which are the code.
MAX_REASON_BYTES = 123


def close_reason(code: str, words: str = "") -> str:
    """Build a close reason ``"<code>: <words>"`` that fits in a close frame.

    Args:
        code: The stable snake_case reason code, such as ``token_expired``.
        words: Plain words for a person; cut on a character boundary if too long.

    Returns:
        The reason, at most :data:`MAX_REASON_BYTES` bytes of UTF-8.
    """
    text = f"{code}: {words}" if words else code
    raw = text.encode("utf-8")
    if len(raw) <= MAX_REASON_BYTES:
        return text
    # Cut on a character boundary: dropping the partial tail sequence is exactly what
    # decode(errors="ignore") does for a truncated multi-byte character.
    return raw[:MAX_REASON_BYTES].decode("utf-8", errors="ignore")


class WSChatError(Exception):
    """Root of every wschat error.

    Attributes:
        close_code: WebSocket close code sent when this ends a connection.
        http_status: HTTP status sent when this denies a handshake before accept.
        code: Stable snake_case reason code; clients may branch on it.
        detail: Plain words for a person. Never contains a token.
    """

    close_code: ClassVar[int] = CloseCode.INTERNAL_ERROR
    http_status: ClassVar[int] = 500
    code: str = "internal_error"
    default_detail: ClassVar[str] = "the server hit an unexpected error"

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail if detail is not None else self.default_detail
        super().__init__(self.detail)

    @property
    def reason(self) -> str:
        """The close reason: the code, then the detail, clamped to 123 bytes."""
        return close_reason(self.code, self.detail)

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


class ConfigurationError(WSChatError, ValueError):
    """Options that cannot work were given; the message says what to change."""

    code = "configuration_error"
    default_detail = "invalid configuration"


class InvalidChatId(WSChatError):
    """The chat id in the path does not match the allowed pattern."""

    close_code: ClassVar[int] = CloseCode.BAD_REQUEST
    http_status = 400
    code = "invalid_chat_id"
    default_detail = (
        "chat id must be 1-128 letters, digits, '_', '-', '.' or ':' "
        "and start with a letter or digit"
    )


class BadRequest(WSChatError):
    """The client kept sending frames the server cannot understand."""

    close_code: ClassVar[int] = CloseCode.BAD_REQUEST
    http_status = 400
    code = "bad_request"
    default_detail = "too many malformed frames"


class OriginRefused(WSChatError):
    """The browser's Origin is not this site and not in ``allowed_origins``.

    Always answered before accept with a bare HTTP 403 that tells the page nothing;
    the server log names the origin and how to allow it.

    Args:
        detail: Plain words (never sent: the answer is a bare 403).
        origin: The refused ``Origin`` header, for the log line.
    """

    close_code: ClassVar[int] = CloseCode.FORBIDDEN
    http_status = 403
    code = "origin_refused"
    default_detail = "origin not allowed"

    def __init__(self, detail: str | None = None, *, origin: str = "") -> None:
        super().__init__(detail)
        self.origin = origin


class NotFound(WSChatError):
    """A WebSocket handshake for a path no chat route serves.

    Refused before accept (close 1008, which the server answers with HTTP 403).
    """

    close_code: ClassVar[int] = CloseCode.POLICY_VIOLATION
    http_status = 404
    code = "not_found"
    default_detail = "no chat route at this path"


class AuthenticationError(WSChatError):
    """The connection carries no valid token."""

    close_code: ClassVar[int] = CloseCode.UNAUTHORIZED
    http_status = 401
    code = "token_invalid"
    default_detail = "token rejected"


class TokenMissing(AuthenticationError):
    """No token in any source that is on (``token_sources``), or no ``auth`` frame.

    The default words name the default sources; the endpoint names those that are
    on, and a source that held a token but is off.
    """

    code = "token_missing"
    default_detail = (
        "send Authorization: Bearer <JWT>, ?token=<JWT> "
        "or the subprotocols wschat.v1, bearer.<JWT>"
    )


class TokenMalformed(AuthenticationError):
    """The token is not a JWT at all (for example the literal string ``test``)."""

    code = "token_malformed"
    default_detail = "not a JWT: expected three base64url parts joined by dots"


class TokenInvalid(AuthenticationError):
    """The token is a JWT but its signature, algorithm, or claims are wrong."""

    code = "token_invalid"
    default_detail = "signature or claims rejected"


class TokenExpired(AuthenticationError):
    """The token's ``exp`` has passed."""

    code = "token_expired"
    default_detail = "token has expired; get a new one"


class TokenNotYetValid(AuthenticationError):
    """The token's ``nbf`` or ``iat`` lies in the future."""

    code = "token_not_yet_valid"
    default_detail = "token is not valid yet; check the clocks"


class TokenTooLarge(AuthenticationError):
    """The token is over the size limit and was refused before decoding."""

    code = "token_too_large"
    default_detail = "token is over the size limit"


class TokenAmbiguous(AuthenticationError):
    """Two different tokens in one handshake (two sources, or one source twice).

    wschat never picks one: which would win is a guess an attacker could steer.
    """

    code = "token_ambiguous"
    default_detail = "the handshake holds two different tokens; send one"


class TokenRevoked(AuthenticationError):
    """The token, or the user's session, was revoked (the ``is_revoked`` hook said
    so, or ``ConnectionManager.revoke_user``)."""

    code = "token_revoked"
    default_detail = "this token or session was revoked; sign in again"


class Forbidden(WSChatError):
    """The principal may not join this room (same answer if the room does not exist)."""

    close_code: ClassVar[int] = CloseCode.FORBIDDEN
    http_status = 403
    code = "forbidden"
    default_detail = "not allowed in this chat"


class AuthTimeout(WSChatError):
    """First-message authentication was not completed in time."""

    close_code: ClassVar[int] = CloseCode.AUTH_TIMEOUT
    http_status = 408
    code = "auth_timeout"
    default_detail = "no auth frame received in time"


class TextOnly(WSChatError):
    """The client sent a binary frame; wschat speaks JSON text only."""

    close_code: ClassVar[int] = CloseCode.UNSUPPORTED_DATA
    http_status = 400
    code = "text_only"
    default_detail = "binary frames are not accepted; send JSON text"


class MessageTooBig(WSChatError):
    """A frame was over the configured size limit."""

    close_code: ClassVar[int] = CloseCode.MESSAGE_TOO_BIG
    http_status = 413
    code = "message_too_big"
    default_detail = "frame over the size limit"


class SlowConsumer(WSChatError):
    """The connection's outbox overflowed: the client does not read fast enough."""

    close_code: ClassVar[int] = CloseCode.TRY_AGAIN_LATER
    http_status = 503
    code = "slow_consumer"
    default_detail = "client did not keep up with its messages"


class TryAgainLater(WSChatError):
    """The server is overloaded or the backplane cannot take the connection now."""

    close_code: ClassVar[int] = CloseCode.TRY_AGAIN_LATER
    http_status = 503
    code = "try_again_later"
    default_detail = "server busy; reconnect later"


class KeysUnavailable(TryAgainLater):
    """The verifier has no usable key for the token now; the client retries later.

    Raised by :class:`~wschat.JwksVerifier` while its key set cannot be fetched.
    Closes with 1013 ``try_again_later``: the token was not judged, so the client
    keeps it and reconnects with backoff. A refusal's detail never names the JWKS
    URL; the one :meth:`~wschat.JwksVerifier.refresh` raises for the operator does.
    """

    default_detail = "signing keys are not available; reconnect later"


class RateLimited(WSChatError):
    """The client sent frames faster than allowed."""

    close_code: ClassVar[int] = CloseCode.TOO_MANY_REQUESTS
    http_status = 429
    code = "rate_limited"
    default_detail = "too many frames; slow down"


class TooManyConnections(WSChatError):
    """The user already holds the maximum number of connections."""

    close_code: ClassVar[int] = CloseCode.TOO_MANY_REQUESTS
    http_status = 429
    code = "too_many_connections"
    default_detail = "too many open connections for this user"


class NormalClosure(WSChatError):
    """The server ends the connection normally; the client should not reconnect."""

    close_code: ClassVar[int] = CloseCode.NORMAL_CLOSURE
    http_status = 410
    code = "bye"
    default_detail = "connection closed by the server"


class GoingAway(WSChatError):
    """The server is stopping; reconnect with jitter."""

    close_code: ClassVar[int] = CloseCode.GOING_AWAY
    http_status = 503
    code = "going_away"
    default_detail = "server is shutting down; reconnect with jitter"


class ServiceRestart(WSChatError):
    """The server is restarting; reconnect with jitter."""

    close_code: ClassVar[int] = CloseCode.SERVICE_RESTART
    http_status = 503
    code = "service_restart"
    default_detail = "server is restarting; reconnect with jitter"


class TransportClosed(WSChatError):
    """The peer is gone; sending is no longer possible. Never an error to log.

    Raised by a :class:`~wschat.transport.Transport` whose peer went away, and the
    reason a connection ends when its client vanished: there is nobody to send a
    close frame to (its code, 1006, is never sent).
    """

    close_code: ClassVar[int] = CloseCode.ABNORMAL_CLOSURE
    code = "gone"
    default_detail = "client disconnected"


def is_gone(error: WSChatError | None) -> bool:
    """Whether ``error`` means the client is already gone (no close frame to send)."""
    return isinstance(error, TransportClosed)


class ErrorReply(WSChatError):
    """Answered with an ``error`` frame carrying :attr:`code`; the connection stays.

    Only the client that sent the frame (or the message) concerned gets it. One
    that ends a connection instead was raised where no ``error`` frame can answer
    it (a :class:`Veto` from a verifier): :func:`wire_close` closes with 1011
    ``internal_error`` and logs an ERROR.
    """


class FrameError(ErrorReply, ValueError):
    """A client frame cannot be understood; answered with an ``error`` frame.

    Args:
        code: The ``error`` frame's code.
        detail: Plain words for the person fixing the client.

    Attributes:
        code: Stable snake_case code sent in the error frame.
        detail: Plain words for the person fixing the client.
    """

    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code


class Veto(ErrorReply):
    """Raise from :meth:`~wschat.ChatHooks.on_message` to refuse one message.

    The sender gets an ``error`` frame with ``code`` and ``message``; the connection
    stays open and nobody else sees the message.

    Args:
        message: Plain words for the sender.
        code: The ``error`` frame's code: ``vetoed``, or one of your own.
    """

    code: str = ErrorCode.VETOED
    default_detail = "message refused"

    def __init__(
        self, message: str = "message refused", code: str = ErrorCode.VETOED
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class BackplaneUnavailable(ErrorReply):
    """The backplane's engine cannot be reached; the message was not published.

    The manager answers the sender with an ``error`` frame coded ``delivery_degraded``
    and keeps delivering to the members in its own process.
    """

    code = ErrorCode.DELIVERY_DEGRADED
    default_detail = "the message reached this server's members only"


class PublishInDoubt(BackplaneUnavailable):
    """The engine stopped answering after the message was sent: it may still go out.

    A paused or overloaded engine executes what it already received once it runs
    again, so a publish that timed out is neither published nor lost yet.
    :meth:`outcome` waits until the engine tells (or the backplane gives up) and says
    whether it was published. The manager answers the sender only then: a
    ``delivery_degraded`` error if it was not published, nothing if it was (a client
    that resends on that error would otherwise duplicate the message).

    Args:
        detail: Plain words on what happened.
        outcome: Waits for the engine's answer; True if the message was published.
            Without one, the fate is unknown and counts as not published.
    """

    default_detail = "the engine did not answer in time; the message may still go out"

    def __init__(
        self,
        detail: str | None = None,
        outcome: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        super().__init__(detail)
        self._outcome = outcome

    async def outcome(self) -> bool:
        """Wait for the engine's answer; True if the message was published."""
        if self._outcome is None:
            return False
        return await self._outcome()


class HistoryStoreUnavailable(BackplaneUnavailable):
    """The history store could not be reached: the message was not stored nor sent.

    A store that assigns offsets in a shared engine (Redis) raises it when the
    engine refused the call, is unreachable, or an earlier call is still
    unanswered. The caller answers the sender like for
    :class:`BackplaneUnavailable`: an ``error`` frame coded ``delivery_degraded``.
    A call the engine received but did not answer in time raises
    :class:`PublishInDoubt` instead, whose :meth:`~PublishInDoubt.outcome` tells
    later whether the message was stored and sent.
    """

    default_detail = "the history store is unreachable; the message was not sent"


class DeliveryInDoubt(ErrorReply):
    """The history store did not say in time whether it stored (and sent) a message.

    The store received the message but had not answered when the manager stopped
    waiting (a paused or overloaded Redis): it may still be stored and reach every
    member, or never. The sender gets an ``error`` frame coded
    ``delivery_degraded`` with the message's ``id`` (and its ``client_id``); a client
    that wants to resend looks for that ``id`` in ``history`` first.

    Args:
        detail: Plain words on what happened.
        message_id: The message's ``id``.
    """

    code = ErrorCode.DELIVERY_DEGRADED
    default_detail = (
        "the history store did not answer in time: this message may or may not "
        "have been sent; look for its id in history before sending it again"
    )

    def __init__(self, detail: str | None = None, message_id: str = "") -> None:
        super().__init__(detail)
        self.message_id = message_id


class HistoryUnavailable(ErrorReply):
    """A ``history`` request could not be answered (history off, or the store failed).

    The requester gets an ``error`` frame coded ``history_unavailable``; the
    connection stays open.
    """

    code = ErrorCode.HISTORY_UNAVAILABLE
    default_detail = "history is not available"


class NotSent(ErrorReply):
    """A message could not be numbered by the history store, so it was not sent.

    The sender gets an ``error`` frame coded ``not_sent`` (with the message's
    ``client_id``); nobody else saw the message: sending it again cannot duplicate it.
    """

    code = ErrorCode.NOT_SENT
    default_detail = "the history store did not answer; the message was not sent"


def _close_classes() -> dict[str, type[WSChatError]]:
    """Reason code -> the most specific class of this module that closes with it."""
    found: dict[str, type[WSChatError]] = {}
    pending: list[type[WSChatError]] = [WSChatError]
    while pending:
        cls = pending.pop(0)
        if issubclass(cls, ErrorReply) or cls.__module__ != __name__:
            continue
        known = found.get(cls.code)
        # A subclass that only words the detail differently (it does not name its
        # own code, like KeysUnavailable) does not stand for the code.
        if known is None or (issubclass(cls, known) and "code" in cls.__dict__):
            found[cls.code] = cls
        pending += cls.__subclasses__()
    return found


_BY_CODE: Final = _close_classes()


def error_class(code: str) -> type[WSChatError]:
    """The error class that closes a connection with reason code ``code``.

    For a close decided in another process, which sends the reason code and the
    detail (and the close code: :func:`wschat.cluster.remote_error` rebuilds an
    application's own error from it). A code this module does not define is
    :class:`Forbidden` here.

    Args:
        code: A reason code, such as ``going_away``.

    Returns:
        The class; call it with the detail.
    """
    return _BY_CODE.get(code, Forbidden)


class WireClose(NamedTuple):
    """How one error ends one connection: what the peer gets, and the log line.

    A ``NamedTuple`` rather than a frozen dataclass: one is made for every refusal,
    and under a flood of junk handshakes its cost shows.

    Attributes:
        code: The close code (a :class:`CloseCode` value, or an application's).
        reason: The close reason, at most 123 bytes of UTF-8.
        http_status: The HTTP status, when the handshake is denied before accept.
        send: False when the peer is gone: send nothing.
        tell: False when a refusal must tell the peer nothing: a bare HTTP 403
            before accept (the Origin check), whatever ``http_denials`` says.
        level: The log line's level, or 0 for no line.
        message: The log line, a ``%`` format; never holds a token.
        args: The line's arguments (a token only as its fingerprint).
        throttle: For a refused handshake, the kind its line is throttled as
            (close code or HTTP status, and reason code); else None.
    """

    code: int
    reason: str
    http_status: int
    send: bool = True
    tell: bool = True
    level: int = 0
    message: str = ""
    args: tuple[object, ...] = ()
    throttle: tuple[int, str] | None = None


class _Deferred:
    """A log argument computed only if the line is written (a token's hash), once
    however many handlers format it."""

    __slots__ = ("_make", "_value")

    def __init__(self, make: Callable[[], str]) -> None:
        self._make = make
        self._value: str | None = None

    def __str__(self) -> str:
        if self._value is None:
            self._value = self._make()
        return self._value


_REFUSED: Final = {
    (token, client): "wschat refused connection: chat=%r code=%s reason=%r"
    + (" token=%s" if token else "")
    + (" client=%s" if client else "")
    for token in (False, True)
    for client in (False, True)
}


def wire_close(
    error: WSChatError,
    *,
    chat_id: str = "",
    client: str | None = None,
    token: str | Callable[[], str] | None = None,
    connection: str | None = None,
) -> WireClose:
    """The one mapping of an error to the wire and to the log.

    Every place that refuses a handshake or closes a connection calls this, then
    sends what it says (unless :attr:`WireClose.send` is False) and writes its line
    (refusals through the endpoint's throttle).

    Args:
        error: Why the connection ends.
        chat_id: The chat id from the URL, for the line (cut to 128 characters).
        client: The peer's ``host:port``, added to a refusal's line if given.
        token: The fingerprint of the token(s) the handshake carried (or a callable
            that computes it, called only if the line is written), added to a
            refusal's line if given. Never the token itself.
        connection: The connection's id once it was accepted and joined; None for a
            handshake refused before that (a refusal).

    Returns:
        The close code, reason, HTTP status and log line.
    """
    code = int(error.close_code)
    if isinstance(error, TransportClosed):
        return WireClose(code, error.reason, error.http_status, send=False)
    if isinstance(error, ErrorReply):
        internal = WSChatError()
        return WireClose(
            int(internal.close_code),
            internal.reason,
            internal.http_status,
            level=logging.ERROR,
            message="wschat: %s (%s) was raised where no error frame can answer it "
            "(chat %r%s); closing with 1011",
            args=(
                type(error).__name__,
                error.code,
                chat_id[:128],
                f", connection {connection}" if connection else "",
            ),
        )
    if isinstance(error, NotFound):
        # Not a chat route: the server's own line for the 403 says it all.
        return WireClose(code, error.reason, error.http_status)
    if isinstance(error, OriginRefused):
        return WireClose(
            code,
            error.reason,
            error.http_status,
            tell=False,
            level=logging.WARNING,
            message="wschat refused origin %r for chat %r (client %s): add it to "
            "allowed_origins=[...] if this site should connect",
            args=(error.origin[:200], chat_id[:128], client or "-"),
            throttle=(error.http_status, error.code),
        )
    if connection is None:
        reason = error.reason
        args: tuple[object, ...] = (chat_id[:128], code, reason)
        if token is not None:
            args += (token if isinstance(token, str) else _Deferred(token),)
        if client is not None:
            args += (client,)
        return WireClose(
            code,
            reason,
            error.http_status,
            True,
            True,
            logging.WARNING,
            _REFUSED[token is not None, client is not None],
            args,
            (code, error.code),
        )
    if isinstance(error, SlowConsumer):
        return WireClose(
            code,
            error.reason,
            error.http_status,
            level=logging.WARNING,
            message="wschat closed slow consumer %s (chat %s): %s",
            args=(connection, chat_id, error.detail),
        )
    # Other closes of a joined connection are the client's doing, or the
    # application's (kick, shutdown); an internal error was logged where caught.
    return WireClose(code, error.reason, error.http_status)
