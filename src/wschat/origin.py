"""The Origin check: the only protection a browser gives a WebSocket. Pure.

Imports: the standard library only (core layer).

CORS does not apply to WebSockets: any page on any site can open a socket to your server
and the browser sends your cookies along. The browser does send an ``Origin`` header,
and this module decides on it: same-origin and the configured allowlist pass by exact
scheme, host and port; a missing Origin (a non-browser client) is a configurable choice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from .errors import ConfigurationError

__all__ = ["OriginPolicy", "normalize_origin"]

_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_WS_TO_HTTP: Final = {"ws": "http", "wss": "https"}


def normalize_origin(origin: str) -> str | None:
    """Reduce an origin to ``scheme://host:port`` with the port always written.

    Args:
        origin: An Origin header value or a configured origin.

    Returns:
        The normal form, or None if it is not an http(s) origin (``null``, garbage).
    """
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port or _DEFAULT_PORTS[scheme]}"


@dataclass(frozen=True, slots=True)
class OriginPolicy:
    """Which browser origins may open a chat socket.

    Attributes:
        allowed: Normalized allowed origins; ``"*"`` allows every origin.
        allow_missing: Whether a handshake without ``Origin`` (not a browser) passes.
        allow_same_origin: Whether an Origin equal to the request's own host passes.
    """

    allowed: frozenset[str] = frozenset()
    allow_missing: bool = True
    allow_same_origin: bool = True

    @classmethod
    def build(
        cls,
        allowed_origins: Iterable[str] = (),
        *,
        allow_missing: bool = True,
        allow_same_origin: bool = True,
    ) -> OriginPolicy:
        """Build a policy, refusing allowlist entries that could never match.

        Raises:
            ConfigurationError: An entry is not ``scheme://host[:port]`` or ``"*"``.
        """
        if isinstance(allowed_origins, str):
            raise ConfigurationError(
                f'allowed_origins must be a list, e.g. ["{allowed_origins}"]'
            )
        normal: set[str] = set()
        for entry in allowed_origins:
            if entry == "*":
                normal.add("*")
                continue
            value = normalize_origin(entry)
            if value is None:
                raise ConfigurationError(
                    f"allowed_origins entry {entry!r} is not an origin like "
                    "'https://app.example.com' (scheme, host, optional port, no path)"
                )
            normal.add(value)
        return cls(frozenset(normal), allow_missing, allow_same_origin)

    def check(self, origin: str | None, host: str | None, scheme: str) -> bool:
        """Decide whether a handshake may go on.

        Args:
            origin: The ``Origin`` header, or None if absent.
            host: The ``Host`` header of the request.
            scheme: The ASGI scope scheme (``ws`` or ``wss``).

        Returns:
            True if the origin passes.
        """
        if origin is None:
            return self.allow_missing
        if "*" in self.allowed:
            return True
        normal = normalize_origin(origin)
        if normal is None:
            return False
        if normal in self.allowed:
            return True
        if self.allow_same_origin and host:
            own = normalize_origin(f"{_WS_TO_HTTP.get(scheme, scheme)}://{host}")
            return own is not None and own == normal
        return False
