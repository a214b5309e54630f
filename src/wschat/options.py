"""The options every adapter takes, documented once.

Imports: the standard library only (core layer).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from .auth import Principal
from .connection import OutboxLimits, OverflowPolicy
from .errors import ConfigurationError, check_number
from .hooks import ChatHooks
from .ids import ChatId
from .origin import OriginPolicy

__all__ = ["Authorize", "ChatOptions"]

#: ``(principal, chat_id) -> bool``, sync or async; False closes with 4403 forbidden.
Authorize: TypeAlias = Callable[[Principal, ChatId], "bool | Awaitable[bool]"]


@dataclass(frozen=True)
class ChatOptions:
    """Options shared by ``chat_router``, ``chat_routes`` and ``chat_app``.

    Attributes:
        allowed_origins: Browser origins allowed besides the site's own, exact
            ``scheme://host[:port]``; ``["*"]`` allows all (never with cookies).
        allow_missing_origin: Let clients that send no ``Origin`` (not browsers) in.
        allow_same_origin: Let pages served from the same host and port in.
        authorize: ``(principal, chat_id) -> bool`` (sync or async); None allows all.
        hooks: A :class:`~wschat.hooks.ChatHooks` to persist, transform or veto
            messages and observe joins and leaves.
        max_message_bytes: Largest accepted client frame; larger closes with 1009.
        outbox_max_messages: Override the manager's per-connection frame cap.
        outbox_max_bytes: Override the manager's per-connection byte cap.
        overflow: Override the manager's overflow policy.
        rate_limit: Frames per second a user may send on average, over all the
            user's connections (in this process) together; None for no limit.
        rate_burst: Frames a user may send at once before ``rate_limit`` applies.
        malformed_limit: Malformed frames tolerated in a burst before 4400.
        http_denials: Answer auth and room refusals with an HTTP status before
            accept (for non-browser deployments) instead of accept-then-close.
        first_message_auth: Allow a socket with no token to authenticate with an
            ``auth`` frame within ``auth_timeout`` seconds.
        auth_timeout: Seconds to wait for that ``auth`` frame (then 4408).
        max_pending_auth: Sockets that may wait for their ``auth`` frame at once
            (per manager); the next is closed with 1013 ``try_again_later``. None
            for no cap.
        close_timeout: Seconds to try to deliver a close frame to a stuck client.
    """

    allowed_origins: Sequence[str] = ()
    allow_missing_origin: bool = True
    allow_same_origin: bool = True
    authorize: Authorize | None = None
    hooks: ChatHooks | None = None
    max_message_bytes: int = 64 * 1024
    outbox_max_messages: int | None = None
    outbox_max_bytes: int | None = None
    overflow: OverflowPolicy | None = None
    rate_limit: float | None = 100.0
    rate_burst: int = 200
    malformed_limit: int = 10
    http_denials: bool = False
    first_message_auth: bool = False
    auth_timeout: float = 10.0
    max_pending_auth: int | None = 1000
    close_timeout: float = 5.0
    origin_policy: OriginPolicy = field(init=False, repr=False)

    def __post_init__(self) -> None:
        policy = OriginPolicy.build(
            self.allowed_origins,
            allow_missing=self.allow_missing_origin,
            allow_same_origin=self.allow_same_origin,
        )
        object.__setattr__(self, "origin_policy", policy)
        # nan passes a bare "<= 0" check, and True is an int: check_number() refuses
        # both, and says what is allowed.
        check_number(
            "max_message_bytes", self.max_message_bytes, minimum=64, integer=True
        )
        for name in ("outbox_max_messages", "outbox_max_bytes"):
            value = getattr(self, name)
            check_number(name, value, minimum=1, integer=True, none="for the manager's")
        check_number(
            "rate_limit",
            self.rate_limit,
            minimum=0,
            above=True,
            unit="frames per second",
            none="for no limit",
        )
        check_number("rate_burst", self.rate_burst, minimum=1, integer=True)
        check_number("malformed_limit", self.malformed_limit, minimum=1, integer=True)
        for name in ("auth_timeout", "close_timeout"):
            check_number(
                name, getattr(self, name), minimum=0, above=True, unit="seconds"
            )
        check_number(
            "max_pending_auth",
            self.max_pending_auth,
            minimum=1,
            integer=True,
            none="for no cap",
        )
        if self.authorize is not None and not callable(self.authorize):
            raise ConfigurationError(
                "authorize must be a callable (principal, chat_id)"
            )

    @classmethod
    def from_kwargs(cls, **options: Any) -> ChatOptions:
        """Build options from keyword arguments, naming any unknown one.

        Raises:
            ConfigurationError: An option is unknown or invalid.
        """
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigurationError(
                f"unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        return cls(**options)

    def outbox_limits(self, base: OutboxLimits) -> OutboxLimits:
        """The manager's limits with this endpoint's overrides applied."""
        if (
            self.outbox_max_messages is None
            and self.outbox_max_bytes is None
            and self.overflow is None
        ):
            return base
        return OutboxLimits(
            self.outbox_max_messages or base.max_messages,
            self.outbox_max_bytes or base.max_bytes,
            self.overflow or base.overflow,
        )
