"""``wschat``: the library as a user mounts it with ``chat_app``.

The per-user rate limit (100 frames/s by default) is turned off: a closed-loop
benchmark sender would otherwise be throttled. Everything else is the default.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks.common import ALGORITHM, SECRET
from wschat import ConnectionManager, TokenVerifier
from wschat.asgi import chat_app


def build_app(**options: str) -> Callable[..., Awaitable[None]]:
    """The wschat app; ``options`` may set ``outbox_max_bytes``, ``presence``,
    ``history`` (``0`` turns message history off; on, in memory, by default) or
    ``http_denials`` (refusals answered with an HTTP status, before accept)."""
    manager_kwargs: dict[str, Any] = {}
    if "outbox_max_bytes" in options:
        manager_kwargs["outbox_max_bytes"] = int(options["outbox_max_bytes"])
    if "presence" in options:
        manager_kwargs["presence"] = options["presence"] not in ("0", "false")
    if "history" in options:
        manager_kwargs["history"] = options["history"] not in ("0", "false")
    manager = ConnectionManager(**manager_kwargs)
    verifier = TokenVerifier(SECRET, algorithms=[ALGORITHM])
    app_kwargs: dict[str, Any] = {"rate_limit": None}
    if options.get("http_denials") not in (None, "0", "false"):
        app_kwargs["http_denials"] = True
    return chat_app(manager, verifier, **app_kwargs)
