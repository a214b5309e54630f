"""The options every adapter takes, documented once, and typed for the adapters.

Imports: the standard library and typing-extensions (core layer).

:class:`ChatOptions` holds them; :class:`ChatOptionsKwargs` is the same fields as a
``TypedDict``, so that ``chat_router(manager, verifier, rate_limt=5)`` is a type error
(``Unpack[ChatOptionsKwargs]`` in each adapter's signature), not a surprise at
startup. :meth:`ChatOptions.from_kwargs` still names an unknown option at run time,
for callers without a type checker.

The outbox caps (``outbox_max_messages``, ``outbox_max_bytes``, ``overflow``) are the
manager's, set once on :class:`~wschat.ConnectionManager`: it owns the outboxes and
the fan-out that fills them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias

from typing_extensions import Self, TypedDict

from .auth import Principal
from .errors import ConfigurationError
from .hooks import ChatHooks
from .ids import ChatId
from .origin import OriginPolicy
from .validation import check_number

__all__ = [
    "DEFAULT_TOKEN_COOKIE",
    "DEFAULT_TOKEN_SOURCES",
    "MOVED_TO_MANAGER",
    "TOKEN_SOURCE_NAMES",
    "Authorize",
    "ChatOptions",
    "ChatOptionsKwargs",
    "IsRevoked",
    "TokenSourceName",
]

#: ``(principal, chat_id) -> bool``, sync or async; False closes with 4403 forbidden.
Authorize: TypeAlias = Callable[[Principal, ChatId], "bool | Awaitable[bool]"]
#: ``(principal) -> bool``, sync or async; True refuses with 4401 token_revoked.
IsRevoked: TypeAlias = Callable[[Principal], "bool | Awaitable[bool]"]

#: Options that were endpoint options in wschat 0.1 and are now set on the manager
#: only (``ConnectionManager(outbox_max_messages=...)``).
MOVED_TO_MANAGER = frozenset({"outbox_max_messages", "outbox_max_bytes", "overflow"})

#: Where a token may be: the ``Authorization: Bearer`` header, a named cookie, the
#: query's ``token``, a ``bearer.<JWT>`` subprotocol, a first ``auth`` frame.
TokenSourceName: TypeAlias = Literal[
    "header", "cookie", "query", "subprotocol", "auth_frame"
]
TOKEN_SOURCE_NAMES: Final[tuple[TokenSourceName, ...]] = (
    "header",
    "cookie",
    "query",
    "subprotocol",
    "auth_frame",
)
#: The sources read by default: none a browser page can be made to send on its own
#: (a cookie can: it is off until asked for, and never with ``allowed_origins=["*"]``).
DEFAULT_TOKEN_SOURCES: Final[tuple[TokenSourceName, ...]] = (
    "header",
    "query",
    "subprotocol",
)
#: The cookie read when ``"cookie"`` is among the token sources.
DEFAULT_TOKEN_COOKIE: Final = "wschat_token"
# RFC 6265 cookie-name: an RFC 7230 token.
_COOKIE_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

_SWITCHES = (
    "allow_missing_origin",
    "allow_same_origin",
    "http_denials",
    "first_message_auth",
)


def _moved(names: Collection[str]) -> ConfigurationError:
    listed = ", ".join(sorted(names))
    example = ", ".join(f"{name}=..." for name in sorted(names))
    verb = "is" if len(names) == 1 else "are"
    return ConfigurationError(
        f"{listed} {verb} set on the manager, which owns the outboxes: "
        f"ConnectionManager({example}), not on the endpoint (since wschat 0.2)"
    )


@dataclass(frozen=True)
class ChatOptions:
    """Options shared by ``chat_router``, ``chat_routes`` and ``chat_app``.

    Every field is also a keyword argument of ``chat_router``, ``chat_routes``,
    ``chat_app`` and ``wschat.demo.create_app``. The outbox caps are not here: they
    are set on the manager (:data:`MOVED_TO_MANAGER`).

    Attributes:
        allowed_origins: Browser origins allowed besides the site's own, exact
            ``scheme://host[:port]``; ``["*"]`` allows all (never with cookies).
            None is the default: none besides the site's own.
        allow_missing_origin: Let clients that send no ``Origin`` (not browsers) in.
        allow_same_origin: Let pages served from the same host and port in.
        authorize: ``(principal, chat_id) -> bool`` (sync or async); None allows all.
            Asked at connect and again on every token refresh (False then closes
            the open connection with 4403).
        is_revoked: ``(principal) -> bool`` (sync or async), asked at connect and
            on every token refresh: True refuses with 4401 ``token_revoked`` (a
            deny-list of ``jti``, a session store). None asks nothing.
        expiry_notice: Seconds before the token's ``exp`` at which an open
            connection gets a ``token_expiring`` notice (half the token's lifetime
            for tokens that live less than twice that); None sends none. The
            connection is closed at ``exp`` plus the leeway either way.
        hooks: A :class:`~wschat.hooks.ChatHooks` to persist, transform or veto
            messages and observe joins and leaves.
        max_message_bytes: Largest accepted client frame; larger closes with 1009.
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
        token_sources: Where a token is looked for, in this order (see
            :data:`TokenSourceName`); a token anywhere else is never used. Default
            ``("header", "query", "subprotocol")``. ``"cookie"`` needs explicit
            ``allowed_origins`` (never ``["*"]``); ``"auth_frame"`` (last) is
            ``first_message_auth=True``. Two different tokens found close with
            4401 ``token_ambiguous``.
        token_cookie: The cookie's name, when ``"cookie"`` is a token source.
    """

    allowed_origins: Sequence[str] | None = ()
    allow_missing_origin: bool = True
    allow_same_origin: bool = True
    authorize: Authorize | None = None
    is_revoked: IsRevoked | None = None
    expiry_notice: float | None = 60.0
    hooks: ChatHooks | None = None
    max_message_bytes: int = 64 * 1024
    rate_limit: float | None = 100.0
    rate_burst: int = 200
    malformed_limit: int = 10
    http_denials: bool = False
    first_message_auth: bool = False
    auth_timeout: float = 10.0
    max_pending_auth: int | None = 1000
    close_timeout: float = 5.0
    token_sources: Sequence[TokenSourceName] = DEFAULT_TOKEN_SOURCES
    token_cookie: str = DEFAULT_TOKEN_COOKIE
    origin_policy: OriginPolicy = field(init=False, repr=False)

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        # Only to say where a 0.1 option went; the dataclass __init__ does the rest.
        moved = MOVED_TO_MANAGER.intersection(kwargs)
        if moved:
            raise _moved(moved)
        return super().__new__(cls)

    def __post_init__(self) -> None:
        if self.allowed_origins is None:
            object.__setattr__(self, "allowed_origins", ())
        for name in _SWITCHES:
            # None or "false" would read as a truth value, the opposite of what was
            # meant for the two that default to True.
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ConfigurationError(f"{name} must be True or False; got {value!r}")
        policy = OriginPolicy.build(
            self.allowed_origins or (),
            allow_missing=self.allow_missing_origin,
            allow_same_origin=self.allow_same_origin,
        )
        object.__setattr__(self, "origin_policy", policy)
        # nan passes a bare "<= 0" check, and True is an int: check_number() refuses
        # both, and says what is allowed.
        check_number(
            "max_message_bytes", self.max_message_bytes, minimum=64, integer=True
        )
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
        object.__setattr__(self, "token_sources", self._checked_sources())
        if self.is_revoked is not None and not callable(self.is_revoked):
            raise ConfigurationError(
                "is_revoked must be a callable (principal) -> bool, or None"
            )
        check_number(
            "expiry_notice",
            self.expiry_notice,
            minimum=0,
            unit="seconds",
            none="for no notice",
        )

    def _checked_sources(self) -> tuple[TokenSourceName, ...]:
        """``token_sources`` as a tuple, refused with the fix if it is unsafe or
        makes no sense."""
        given = self.token_sources
        known = ", ".join(repr(n) for n in TOKEN_SOURCE_NAMES)
        if isinstance(given, str) or not all(isinstance(n, str) for n in given):
            raise ConfigurationError(
                f"token_sources must be a list of names, e.g. "
                f'token_sources=["header", "query"]; known: {known}'
            )
        sources = tuple(given)
        unknown = [n for n in sources if n not in TOKEN_SOURCE_NAMES]
        if unknown:
            raise ConfigurationError(
                f"unknown token source {unknown[0][:32]!r}; known: {known}"
            )
        if len(set(sources)) != len(sources):
            raise ConfigurationError(
                "token_sources names a source twice; name each once"
            )
        if not sources and not self.first_message_auth:
            raise ConfigurationError(
                "token_sources is empty: no token could ever be found; name at least "
                'one, e.g. token_sources=["header"]'
            )
        if "auth_frame" in sources and sources[-1] != "auth_frame":
            raise ConfigurationError(
                '"auth_frame" must come last in token_sources: the auth frame is '
                "read after the handshake, and only when the handshake had no token"
            )
        if not isinstance(self.token_cookie, str) or not _COOKIE_NAME.fullmatch(
            self.token_cookie
        ):
            raise ConfigurationError(
                f"token_cookie must be a cookie name (letters, digits, "
                f"!#$%&'*+.^_`|~-); got {self.token_cookie!r}"
            )
        if "cookie" in sources and "*" in (self.allowed_origins or ()):
            raise ConfigurationError(
                'token_sources includes "cookie" while allowed_origins=["*"]: any '
                "web page could then open a socket as your logged-in users "
                "(cross-site WebSocket hijacking). List the origins that may "
                'connect (allowed_origins=["https://app.example.com"]), or read '
                'the token from the "header", "subprotocol" or "auth_frame" instead'
            )
        return sources

    @property
    def waits_for_auth_frame(self) -> bool:
        """Whether a handshake without a token waits for a first ``auth`` frame
        (``first_message_auth=True``, or ``"auth_frame"`` among the sources)."""
        return self.first_message_auth or "auth_frame" in self.token_sources

    @classmethod
    def from_kwargs(
        cls, base: ChatOptions | None = None, /, **options: Any
    ) -> ChatOptions:
        """Build options from keyword arguments, naming any unknown one.

        What every adapter does with its ``options`` and keyword arguments; the
        check is for callers without a type checker (``mypy`` sees an unknown name
        in the adapter's signature already).

        Args:
            base: Options to start from; None for the defaults.
            **options: :class:`ChatOptions` fields, replacing those of ``base``.

        Returns:
            ``base`` itself when no keyword is given, else new options.

        Raises:
            ConfigurationError: An option is unknown, moved to the manager, or
                invalid; ``base`` is not a :class:`ChatOptions`.
        """
        if base is not None and not isinstance(base, ChatOptions):
            raise ConfigurationError(
                f"options must be a ChatOptions; got {type(base).__name__} "
                "(pass the options as keyword arguments, or as ChatOptions(...))"
            )
        unknown = set(options) - _FIELDS
        if unknown:
            moved = unknown & MOVED_TO_MANAGER
            if moved:
                raise _moved(moved)
            raise ConfigurationError(
                f"unknown option(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(_FIELDS))}"
            )
        if base is None:
            return cls(**options)
        return dataclasses.replace(base, **options) if options else base


#: The option names: :class:`ChatOptions`' fields but the computed ``origin_policy``.
_FIELDS = frozenset(f.name for f in dataclasses.fields(ChatOptions) if f.init)


class ChatOptionsKwargs(TypedDict, total=False):
    """:class:`ChatOptions`' fields as keyword arguments, for ``Unpack``.

    The adapters take ``**options: Unpack[ChatOptionsKwargs]``: a type checker then
    refuses a misspelt or mistyped option. Each key has the type of the field of the
    same name (``tests/core/test_options.py`` holds the two together).
    """

    allowed_origins: Sequence[str] | None
    allow_missing_origin: bool
    allow_same_origin: bool
    authorize: Authorize | None
    is_revoked: IsRevoked | None
    expiry_notice: float | None
    hooks: ChatHooks | None
    max_message_bytes: int
    rate_limit: float | None
    rate_burst: int
    malformed_limit: int
    http_denials: bool
    first_message_auth: bool
    auth_timeout: float
    max_pending_auth: int | None
    close_timeout: float
    token_sources: Sequence[TokenSourceName]
    token_cookie: str
