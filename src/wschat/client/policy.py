"""What the Python client does after each close code, and its backoff. Pure.

Imports: the standard library only (tools layer: part of :mod:`wschat.client`).

:data:`CLOSE_POLICY` is the one table the client reads: per close code and reason
code, ``retry`` (reconnect after a backoff), ``refresh_token`` (ask the token
provider once, reconnect at once) or ``stop`` (raise :class:`ChatStopped`), with the
fix for the person running the client. It mirrors the close-code policy data that
docs/close-codes.md is built from; when that data file ships in the package, this
mapping is built from it instead and nothing else in the client changes.

:class:`Backoff` draws the delays: full jitter, ``uniform(0, min(cap, base *
2**attempt))``, from a ``random.Random`` the caller may seed.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

__all__ = [
    "ABNORMAL",
    "CLOSE_POLICY",
    "HTTP_STATUS_CODES",
    "Action",
    "Backoff",
    "ChatStopped",
    "ClientError",
    "ClosePolicy",
    "SendQueueFull",
    "policy_for",
]

Action: TypeAlias = Literal["retry", "refresh_token", "stop"]

#: The code a client reports when no close frame came (the network, a dead server).
ABNORMAL: Final = 1006


@dataclass(frozen=True, slots=True)
class ClosePolicy:
    """What the client does after a close.

    Attributes:
        action: ``retry``, ``refresh_token`` or ``stop``.
        fix: What the person running the client (or the server) changes.
        backoff_ms: ``(base, cap)`` of the backoff in milliseconds, for ``retry``.
        max_attempts: How many reconnects in a row at most, if limited.
    """

    action: Action
    fix: str
    backoff_ms: tuple[int, int] | None = None
    max_attempts: int | None = None


_RESTART = ClosePolicy(
    "retry",
    "the server is stopping or restarting; the client reconnects once it is back",
    (500, 10_000),
)
_BUSY = (15_000, 120_000)
_REFRESH: Final = "refresh_token"

#: ``(code, reason code) -> policy``; reason ``""`` is the code's policy for any
#: reason the table does not name. The one place the client's behaviour per close
#: code lives (see the module docstring).
CLOSE_POLICY: Final[Mapping[tuple[int, str], ClosePolicy]] = {
    (1000, ""): ClosePolicy(
        "stop",
        "the server's code ended the session on purpose (a logout or a kick); "
        "connect again only when the user asks",
    ),
    (1001, ""): _RESTART,
    (1012, ""): _RESTART,
    (1003, ""): ClosePolicy(
        "stop", "send JSON as text frames, never binary (this client always does)"
    ),
    (1009, ""): ClosePolicy(
        "stop",
        "send smaller frames, or raise max_message_bytes (and the server's "
        "--ws-max-size with it)",
    ),
    (1011, ""): ClosePolicy(
        "retry",
        "the server log has an ERROR with the traceback of the hook or authorize "
        "that raised",
        (1_000, 30_000),
    ),
    (1013, ""): ClosePolicy(
        "retry",
        "the server is busy, or this client read too slowly: read events faster, "
        "or retry later",
        _BUSY,
    ),
    (ABNORMAL, ""): ClosePolicy(
        "retry",
        "no close frame: the network dropped or the server is down; if it happens "
        "on every try, run wschat doctor",
        (1_000, 30_000),
    ),
    (4400, ""): ClosePolicy(
        "stop",
        "use a chat id of 1 to 128 letters, digits, _ - . : starting with a letter "
        "or digit, and send only wschat frames (docs/protocol.md)",
    ),
    (4401, ""): ClosePolicy(
        _REFRESH,
        "get a new token from your login API or identity provider (pass "
        "token_provider= so the client can ask for one); never retry the same one",
        max_attempts=1,
    ),
    (4403, ""): ClosePolicy(
        "stop",
        "the server's authorize refused this user for this room, or the server "
        "closed the room or the user's sessions; do not retry",
    ),
    (4408, ""): ClosePolicy(
        "retry",
        "send the auth frame right after the socket opens (this client sends the "
        "token in the handshake)",
        (0, 0),
        max_attempts=3,
    ),
    (4429, ""): ClosePolicy(
        "retry",
        "the client sends too many frames per second: slow it down, or raise "
        "rate_limit / rate_burst",
        _BUSY,
    ),
    (4429, "too_many_connections"): ClosePolicy(
        "stop",
        "close the user's other sockets (often a reconnect loop that never closes "
        "the old one), or raise max_connections_per_user",
    ),
}

_UNKNOWN = ClosePolicy(
    "stop", "a close code wschat does not define: look it up in your application"
)

#: An HTTP answer to the handshake (no WebSocket at all) read as the close code a
#: wschat server sends for the same refusal; any other status is :data:`ABNORMAL`.
HTTP_STATUS_CODES: Final[Mapping[int, int]] = {
    400: 4400,
    401: 4401,
    403: 4403,
    404: 4400,
    429: 4429,
    503: 1013,
}


def policy_for(code: int, reason: str = "") -> ClosePolicy:
    """The policy for a close with ``code`` and ``reason``.

    Args:
        code: The close code (:data:`ABNORMAL` when no close frame came).
        reason: The whole close reason or just its code (``token_expired: ...``).

    Returns:
        The entry for that code and reason code, else the code's entry, else
        ``stop`` for a code the table does not know.
    """
    reason_code = reason.split(":", 1)[0].strip()
    found = CLOSE_POLICY.get((code, reason_code)) or CLOSE_POLICY.get((code, ""))
    return found or _UNKNOWN


class Backoff:
    """Delays with full jitter: ``uniform(0, min(cap, base * 2**attempt))``.

    Args:
        rng: Where the randomness comes from; seed it for a reproducible run.
        scale: Multiplies every delay (``0.1`` makes a test ten times faster).
    """

    def __init__(self, rng: random.Random | None = None, scale: float = 1.0) -> None:
        if not scale >= 0:
            raise ValueError(f"backoff scale must be at least 0, got {scale!r}")
        self.rng = rng or random.Random()
        self.scale = scale

    @staticmethod
    def ceiling(policy: ClosePolicy, attempt: int) -> float:
        """The largest delay, in seconds, of attempt ``attempt`` (0 first)."""
        base, cap = policy.backoff_ms or (0, 0)
        return float(min(cap, base * 2 ** min(attempt, 32))) / 1000

    def delay(self, policy: ClosePolicy, attempt: int) -> float:
        """A delay in seconds for reconnect attempt ``attempt`` (0 first)."""
        return self.rng.uniform(0, self.ceiling(policy, attempt)) * self.scale


class ClientError(Exception):
    """The root of the client's errors."""


class ChatStopped(ClientError):
    """The client stopped for good: the server refused it, or it gave up.

    Attributes:
        code: The close code (1006 when no close frame came; an HTTP refusal is
            read as the close code of the same refusal).
        reason: The server's close reason (empty if none).
        fix: What to do about it, from :data:`CLOSE_POLICY`.
    """

    def __init__(self, code: int, reason: str, fix: str, *, detail: str = "") -> None:
        self.code = code
        self.reason = reason
        self.fix = fix
        head = f"{code} {reason}" if reason else str(code)
        super().__init__(f"{head}{detail}; fix: {fix}")


class SendQueueFull(ClientError):
    """``send`` found the queue of messages waiting for a reconnect full."""
