"""What the Python client does after each close code, and its backoff. Pure.

Imports: the standard library, :mod:`wschat.schema` and :mod:`wschat.errors`
(tools layer: part of :mod:`wschat.client`).

The policy itself is data: ``wschat/schema/close-codes.json``, read through
:func:`wschat.schema.policy_for` (re-exported here), the same file
docs/close-codes.md shows. Per close code and reason code it says ``retry``
(reconnect after a backoff), ``refresh_token`` (ask the token provider once,
reconnect at once) or ``stop`` (raise :class:`ChatStopped`), with the fix for the
person running the client. This module adds only what is the client's own:

- :func:`decide`: the step the client takes for a policy, given how many reconnects
  in a row it made, whether it already refreshed the token, and whether it has a
  token provider;
- :func:`client_fix`: the policy's fix, plus the client's ``token_provider=`` hint;
- :data:`HTTP_STATUS_CODES`: an HTTP answer to the handshake read as a close code;
- :class:`Backoff`: the delays, full jitter, ``uniform(0, min(cap, base *
  2**attempt))``, from a ``random.Random`` the caller may seed.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Final, Literal, TypeAlias

from ..errors import CloseCode
from ..schema import ClosePolicy, close_policy, policy_for

__all__ = [
    "ABNORMAL",
    "HTTP_STATUS_CODES",
    "Backoff",
    "ChatStopped",
    "ClientError",
    "ClosePolicy",
    "SendQueueFull",
    "Step",
    "client_fix",
    "close_policy",
    "decide",
    "policy_for",
]

#: The code a client reports when no close frame came (the network, a dead server).
ABNORMAL: Final = int(CloseCode.ABNORMAL_CLOSURE)

#: What the client does next: reconnect after a backoff, ask the token provider and
#: reconnect at once, stop and raise (``end`` for a normal closure, 1000: the
#: events just end), or give up a retried code after too many tries in a row.
Step: TypeAlias = Literal["retry", "refresh_token", "stop", "end", "give_up"]

_PROVIDER_HINT: Final = (
    "; pass token_provider= so the client can ask for a fresh token, "
    "never retrying the same one"
)


def decide(
    policy: ClosePolicy,
    *,
    attempt: int,
    refreshed: bool,
    has_provider: bool,
    max_attempts: int | None = None,
) -> Step:
    """The client's next step after a close whose policy is ``policy``.

    Args:
        policy: The close's entry (:func:`policy_for`).
        attempt: Reconnects in a row so far (0 after a ``ready``).
        refreshed: Whether the client already asked for a fresh token since the
            last ``ready``.
        has_provider: Whether the client has a token provider to ask.
        max_attempts: The caller's cap on reconnects in a row, if any.

    Returns:
        ``refresh_token`` once per ``ready`` when there is a provider, else
        ``stop``; ``stop`` (``end`` for 1000); ``retry`` until ``attempt`` reaches
        the smaller of the policy's and the caller's ``max_attempts``, then
        ``give_up``.
    """
    if policy.action == "refresh_token":
        return "refresh_token" if has_provider and not refreshed else "stop"
    if policy.action == "stop":
        return "end" if policy.code == CloseCode.NORMAL_CLOSURE else "stop"
    limits = [n for n in (policy.max_attempts, max_attempts) if n is not None]
    if limits and attempt >= min(limits):
        return "give_up"
    return "retry"


def client_fix(policy: ClosePolicy, *, has_provider: bool) -> str:
    """The policy's fix, with the ``token_provider=`` hint when a refresh would
    have helped but the client has no provider."""
    if policy.action == "refresh_token" and not has_provider:
        return policy.fix + _PROVIDER_HINT
    return policy.fix


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
        fix: What to do about it, from the close-code policy (:func:`policy_for`).
    """

    def __init__(self, code: int, reason: str, fix: str, *, detail: str = "") -> None:
        self.code = code
        self.reason = reason
        self.fix = fix
        head = f"{code} {reason}" if reason else str(code)
        super().__init__(f"{head}{detail}; fix: {fix}")


class SendQueueFull(ClientError):
    """``send`` found the queue of messages waiting for a reconnect full."""
