"""Every error wschat can put on the wire, and the one place that maps it there.

Imports: the standard library only (pure layer).

Each error carries its WebSocket close code, the HTTP status used when a handshake is
denied before ``accept``, and a stable snake_case reason code. :func:`close_reason`
builds the close reason (code first, then plain words) and clamps it to the 123 bytes
of UTF-8 a close frame allows.

Exception tree::

    WSChatError                       1011 internal_error
    ├── ConfigurationError            (raised at construction; never on the wire)
    ├── InvalidChatId                 4400 invalid_chat_id
    ├── BadRequest                    4400 bad_request
    ├── OriginRefused                 HTTP 403 before accept
    ├── AuthenticationError           4401
    │   ├── TokenMissing              4401 token_missing
    │   ├── TokenMalformed            4401 token_malformed
    │   ├── TokenInvalid              4401 token_invalid
    │   ├── TokenExpired              4401 token_expired
    │   ├── TokenNotYetValid          4401 token_not_yet_valid
    │   └── TokenTooLarge             4401 token_too_large
    ├── Forbidden                     4403 forbidden
    ├── AuthTimeout                   4408 auth_timeout
    ├── TextOnly                      1003 text_only
    ├── MessageTooBig                 1009 message_too_big
    ├── SlowConsumer                  1013 slow_consumer
    ├── TryAgainLater                 1013 try_again_later
    ├── RateLimited                   4429 rate_limited
    ├── TooManyConnections            4429 too_many_connections
    ├── NormalClosure                 1000 bye
    ├── GoingAway                     1001 going_away
    └── ServiceRestart                1012 service_restart
"""

from __future__ import annotations

import math
from typing import ClassVar

__all__ = [
    "MAX_REASON_BYTES",
    "AuthTimeout",
    "AuthenticationError",
    "BadRequest",
    "ConfigurationError",
    "Forbidden",
    "GoingAway",
    "InvalidChatId",
    "MessageTooBig",
    "NormalClosure",
    "OriginRefused",
    "RateLimited",
    "ServiceRestart",
    "SlowConsumer",
    "TextOnly",
    "TokenExpired",
    "TokenInvalid",
    "TokenMalformed",
    "TokenMissing",
    "TokenNotYetValid",
    "TokenTooLarge",
    "TooManyConnections",
    "TryAgainLater",
    "WSChatError",
    "check_number",
    "close_reason",
]

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

    close_code: ClassVar[int] = 1011
    http_status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
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


def check_number(
    name: str,
    value: object,
    *,
    minimum: float,
    maximum: float | None = None,
    integer: bool = False,
    above: bool = False,
    unit: str = "",
    none: str = "",
) -> None:
    """Refuse a numeric option that is not a finite number of the right type in range.

    ``nan`` passes every ``x <= 0`` check and ``True`` is an ``int`` in Python, so
    options are checked here rather than with a bare comparison.

    Args:
        name: The option's name, for the message.
        value: The value given.
        minimum: The smallest value allowed (or the bound to stay above).
        maximum: The largest value allowed, if any.
        integer: Whether only an ``int`` will do (else ``int`` or ``float``).
        above: Whether ``minimum`` itself is refused.
        unit: What the number counts (``"seconds"``), for the message.
        none: If set, None is allowed and this says what it means (``"for no
            limit"``).

    Raises:
        ConfigurationError: The value is refused; the message says what is allowed.
    """
    if value is None and none:
        return
    types = int if integer else (int, float)
    # bool is an int in Python, never a count or a number of seconds here.
    if (
        isinstance(value, types)
        and not isinstance(value, bool)
        and (isinstance(value, int) or math.isfinite(value))
        and (value > minimum if above else value >= minimum)
        and (maximum is None or value <= maximum)
    ):
        return
    kind = "an integer" if integer else "a number"
    if unit:
        kind += f" of {unit}"
    if maximum is not None:
        span = f"from {minimum:g} to {maximum:g}"
    else:
        span = f"above {minimum:g}" if above else f"of at least {minimum:g}"
    alternative = f", or None {none}" if none else ""
    try:
        shown = repr(value)[:40]
    except ValueError:  # an int too long to print
        shown = f"an {type(value).__name__} too large to show"
    raise ConfigurationError(f"{name} must be {kind} {span}{alternative}; got {shown}")


class InvalidChatId(WSChatError):
    """The chat id in the path does not match the allowed pattern."""

    close_code = 4400
    http_status = 400
    code = "invalid_chat_id"
    default_detail = (
        "chat id must be 1-128 letters, digits, '_', '-', '.' or ':' "
        "and start with a letter or digit"
    )


class BadRequest(WSChatError):
    """The client kept sending frames the server cannot understand."""

    close_code = 4400
    http_status = 400
    code = "bad_request"
    default_detail = "too many malformed frames"


class OriginRefused(WSChatError):
    """The browser's Origin is not this site and not in ``allowed_origins``."""

    close_code = 4403
    http_status = 403
    code = "origin_refused"
    default_detail = "origin not allowed"


class AuthenticationError(WSChatError):
    """The connection carries no valid token."""

    close_code = 4401
    http_status = 401
    code = "token_invalid"
    default_detail = "token rejected"


class TokenMissing(AuthenticationError):
    """No token in the query string, the subprotocol list, or a first ``auth`` frame."""

    code = "token_missing"
    default_detail = "send ?token=<JWT> or the subprotocols wschat.v1, bearer.<JWT>"


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


class Forbidden(WSChatError):
    """The principal may not join this room (same answer if the room does not exist)."""

    close_code = 4403
    http_status = 403
    code = "forbidden"
    default_detail = "not allowed in this chat"


class AuthTimeout(WSChatError):
    """First-message authentication was not completed in time."""

    close_code = 4408
    http_status = 408
    code = "auth_timeout"
    default_detail = "no auth frame received in time"


class TextOnly(WSChatError):
    """The client sent a binary frame; wschat speaks JSON text only."""

    close_code = 1003
    http_status = 400
    code = "text_only"
    default_detail = "binary frames are not accepted; send JSON text"


class MessageTooBig(WSChatError):
    """A frame was over the configured size limit."""

    close_code = 1009
    http_status = 413
    code = "message_too_big"
    default_detail = "frame over the size limit"


class SlowConsumer(WSChatError):
    """The connection's outbox overflowed: the client does not read fast enough."""

    close_code = 1013
    http_status = 503
    code = "slow_consumer"
    default_detail = "client did not keep up with its messages"


class TryAgainLater(WSChatError):
    """The server is overloaded or the backplane cannot take the connection now."""

    close_code = 1013
    http_status = 503
    code = "try_again_later"
    default_detail = "server busy; reconnect later"


class RateLimited(WSChatError):
    """The client sent frames faster than allowed."""

    close_code = 4429
    http_status = 429
    code = "rate_limited"
    default_detail = "too many frames; slow down"


class TooManyConnections(WSChatError):
    """The user already holds the maximum number of connections."""

    close_code = 4429
    http_status = 429
    code = "too_many_connections"
    default_detail = "too many open connections for this user"


class NormalClosure(WSChatError):
    """The server ends the connection normally; the client should not reconnect."""

    close_code = 1000
    http_status = 410
    code = "bye"
    default_detail = "connection closed by the server"


class GoingAway(WSChatError):
    """The server is stopping; reconnect with jitter."""

    close_code = 1001
    http_status = 503
    code = "going_away"
    default_detail = "server is shutting down; reconnect with jitter"


class ServiceRestart(WSChatError):
    """The server is restarting; reconnect with jitter."""

    close_code = 1012
    http_status = 503
    code = "service_restart"
    default_detail = "server is restarting; reconnect with jitter"
