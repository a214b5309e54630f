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
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from typing_extensions import Self, TypedDict

from .auth import Principal
from .errors import ConfigurationError
from .hooks import ChatHooks
from .ids import ChatId
from .origin import OriginPolicy
from .validation import check_number

__all__ = ["MOVED_TO_MANAGER", "Authorize", "ChatOptions", "ChatOptionsKwargs"]

#: ``(principal, chat_id) -> bool``, sync or async; False closes with 4403 forbidden.
Authorize: TypeAlias = Callable[[Principal, ChatId], "bool | Awaitable[bool]"]

#: Options that were endpoint options in wschat 0.1 and are now set on the manager
#: only (``ConnectionManager(outbox_max_messages=...)``).
MOVED_TO_MANAGER = frozenset({"outbox_max_messages", "outbox_max_bytes", "overflow"})

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
    """

    allowed_origins: Sequence[str] | None = ()
    allow_missing_origin: bool = True
    allow_same_origin: bool = True
    authorize: Authorize | None = None
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
