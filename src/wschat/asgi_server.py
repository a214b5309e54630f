"""What wschat can learn about, and ask of, the ASGI server it runs on.

Imports: the standard library only. An adapter helper: it knows the shapes of
uvicorn's and hypercorn's objects, never imports them, and is used only by
:mod:`wschat.asgi`.

ASGI gives an app no way to read the server's settings, nor to drop a connection
whose close handshake cannot complete. Two servers let wschat do both anyway,
through the objects that own the ``receive`` and ``send`` callables they pass:

* uvicorn: ``receive`` is a method of the connection's protocol object (with each
  of its WebSocket implementations, ``websockets``, ``websockets-sansio`` and
  ``wsproto``, and of its lifespan handler). That object holds the server's
  ``Config`` (``ws_max_size``; ``ws_protocol_class``, None when it cannot serve
  WebSockets at all) and, for a socket, its asyncio ``transport``.
  Starlette and FastAPI pass ``receive`` through unchanged.
* hypercorn: ``send`` of a socket (raw ASGI only: Starlette wraps ``send``) and
  ``receive`` of the lifespan belong to objects that hold its ``Config``
  (``websocket_max_message_size``). Nothing reaches its transport.

Anything else (another server, a middleware that wraps both callables, uvicorn at
``--log-level trace``, which wraps them to log every message) finds nothing, and
then wschat says nothing and does nothing: it never guesses a setting.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

__all__ = [
    "UNSENT_LIMIT",
    "ServerSettings",
    "SocketTransport",
    "connection_transport",
    "drop",
    "drop_later",
    "limit_unsent",
    "message_limit_warning",
    "sends_at_once",
    "server_settings",
    "websocket_warning",
]

#: Bytes a connection's socket may hold that the kernel has not yet sent
#: (``TCP_NOTSENT_LOWAT``). Without it Linux grows the send buffer of a client that
#: stopped reading to ``net.ipv4.tcp_wmem``'s maximum (4 MiB by default), and a
#: close frame queued behind that never reaches a client that reads again.
UNSENT_LIMIT: Final = 64 * 1024

_LINGER_RESET: Final = struct.pack("ii", 1, 0)
_UVICORN_WEBSOCKETS: Final = "uvicorn.protocols.websockets."


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """The server's own WebSocket limits, as read from its running config.

    Attributes:
        server: ``"uvicorn"`` or ``"hypercorn"``.
        max_message_bytes: The largest message the server assembles (and inflates)
            before the app sees it.
        per_message_deflate: Whether the server offers permessage-deflate.
        setting: How to set ``max_message_bytes`` on that server.
        websockets: Whether the server can serve WebSockets at all.
        websockets_fix: Why it cannot, and what to change; ``""`` when it can.
    """

    server: str
    max_message_bytes: int
    per_message_deflate: bool
    setting: str
    websockets: bool = True
    websockets_fix: str = ""


class SocketTransport(Protocol):
    """The part of an asyncio transport wschat uses (uvloop's has it too)."""

    def get_extra_info(self, name: str, default: Any = None) -> Any: ...

    def is_closing(self) -> bool: ...

    def abort(self) -> None: ...


#: The one server implementation whose ``send`` wschat drives without a task (see
#: :func:`sends_at_once`).
_UVICORN_SANSIO: Final = ("uvicorn.protocols.websockets.websockets_sansio_impl",)


def sends_at_once(send: Callable[..., Any]) -> bool:
    """Whether a socket's ``send`` is uvicorn's ``websockets-sansio`` one, unwrapped.

    That ``send`` waits at one point only, for the connection to be writable
    (``await self.writable.wait()``: cleared while the kernel's send buffer is over
    its limit), and writes a frame without waiting after it. So a send started
    from plain code either completes at once or stops at that wait having written
    nothing, and may then be closed and sent later from a task: what
    ``AsgiTransport.try_send_text`` does. Checked against the installed uvicorn by
    ``tests/e2e/test_e2e_send_at_once.py``. Any other server, implementation or
    wrapper (middleware, Starlette's own ``send`` wrapper, uvicorn's trace
    logging) is False: its ``send`` may wait after writing.
    """
    owner = getattr(send, "__self__", None)
    return (
        owner is not None
        and type(owner).__module__ in _UVICORN_SANSIO
        and getattr(send, "__name__", None) == "send"
    )


def _owners(*callables: Callable[..., Any]) -> list[object]:
    return [
        owner
        for owner in (getattr(c, "__self__", None) for c in callables)
        if owner is not None
    ]


def server_settings(
    receive: Callable[..., Any], send: Callable[..., Any]
) -> ServerSettings | None:
    """The running server's WebSocket limits, if it lets the app see them.

    Args:
        receive: The ASGI ``receive`` callable of a ``websocket`` or ``lifespan``
            scope, as the server passed it.
        send: The matching ``send`` callable.

    Returns:
        The settings, or None when they cannot be read reliably.
    """
    for owner in _owners(receive, send):
        config = getattr(owner, "config", None)
        package = type(config).__module__.partition(".")[0]
        if package == "uvicorn":
            size = getattr(config, "ws_max_size", None)
            deflate = getattr(config, "ws_per_message_deflate", None)
            if isinstance(size, int) and isinstance(deflate, bool):
                return ServerSettings(
                    "uvicorn",
                    size,
                    deflate,
                    "--ws-max-size {}",
                    *_uvicorn_websockets(config),
                )
        elif package == "hypercorn":
            size = getattr(config, "websocket_max_message_size", None)
            if isinstance(size, int):
                # hypercorn always accepts permessage-deflate when a client asks.
                return ServerSettings(
                    "hypercorn", size, True, "websocket_max_message_size = {}"
                )
    return None


_INSTALL: Final = "pip install 'uvicorn[standard]' (or 'wschat[server]')"


def _uvicorn_websockets(config: object) -> tuple[bool, str]:
    """Whether uvicorn serves WebSockets, and if not why: its loaded ``Config`` holds
    the WebSocket protocol class it will use, None for ``--ws none`` and for
    ``--ws auto`` with neither ``websockets`` nor ``wsproto`` installed."""
    # An older uvicorn without the attribute: it cannot be told, so nothing is said.
    if getattr(config, "ws_protocol_class", True) is not None:
        return True, ""
    if getattr(config, "ws", None) == "none":
        return False, "it runs with --ws none; drop that flag (the default is auto)"
    return False, f"neither websockets nor wsproto is installed; {_INSTALL}"


def websocket_warning(settings: ServerSettings) -> str | None:
    """The warning to log when the server cannot serve WebSockets at all, else None."""
    if settings.websockets:
        return None
    return (
        f"wschat: {settings.server} cannot serve WebSockets: "
        f"{settings.websockets_fix}. Until then every chat socket is answered with "
        "HTTP 404 before wschat sees it (docs/troubleshooting.md)"
    )


def message_limit_warning(
    settings: ServerSettings, max_message_bytes: int
) -> str | None:
    """The warning to log when the server's limit is above wschat's, else None."""
    if settings.max_message_bytes <= max_message_bytes:
        return None
    inflated = ""
    if settings.per_message_deflate:
        inflated = " (inflated from permessage-deflate)"
    return (
        f"wschat: {settings.server} accepts WebSocket messages of up to "
        f"{settings.max_message_bytes} bytes but max_message_bytes is "
        f"{max_message_bytes}: the server holds a whole message{inflated} in memory "
        f"before wschat can refuse it. Set "
        f"{settings.setting.format(max_message_bytes)} (docs/deployment.md)"
    )


def connection_transport(
    receive: Callable[..., Any], send: Callable[..., Any]
) -> SocketTransport | None:
    """The asyncio transport of a socket's TCP connection, if the server shows it.

    Found under uvicorn (each WebSocket implementation); None elsewhere. Only the
    protocol objects of uvicorn's WebSocket implementations are trusted to own one
    TCP connection each: a transport shared by several streams (HTTP/2) must never
    be dropped for one of them.
    """
    for owner in _owners(receive, send):
        if not type(owner).__module__.startswith(_UVICORN_WEBSOCKETS):
            continue
        transport = getattr(owner, "transport", None)
        if (
            transport is not None
            and callable(getattr(transport, "abort", None))
            and callable(getattr(transport, "get_extra_info", None))
            and callable(getattr(transport, "is_closing", None))
        ):
            found: SocketTransport = transport
            return found
    return None


def _open_socket(transport: SocketTransport) -> Any:
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    try:
        if sock.fileno() < 0:  # closed: the connection is already gone
            return None
    except (OSError, ValueError):
        return None
    return sock


def limit_unsent(transport: SocketTransport, limit: int = UNSENT_LIMIT) -> bool:
    """Cap the bytes the kernel holds unsent for this connection.

    Sends then wait (the server's write flow control pauses) once ``limit`` bytes
    are queued in the kernel, instead of once its send buffer is full.

    Returns:
        Whether the option was set (False where the platform lacks it).
    """
    option = getattr(socket, "TCP_NOTSENT_LOWAT", None)
    sock = _open_socket(transport)
    if option is None or sock is None:
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, option, limit)
    except (OSError, ValueError):
        return False
    return True


def drop(transport: SocketTransport) -> bool:
    """Reset the TCP connection now, discarding what it has not sent.

    A plain ``abort()`` of an asyncio transport closes the socket, but the kernel
    still tries to deliver the unsent bytes, then a FIN, to a peer that may never
    read them. With ``SO_LINGER`` zero the close sends a reset and frees them.

    Returns:
        Whether the connection was still open (and is now dropped).
    """
    sock = _open_socket(transport)
    if sock is None:
        return False
    # If this fails, aborting is still worth it: the process frees its side.
    with contextlib.suppress(OSError, ValueError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    transport.abort()
    return True


def drop_later(transport: SocketTransport, seconds: float) -> bool:
    """Schedule :func:`drop` in ``seconds``, on the running asyncio loop.

    The app may return meanwhile: the server then closes the connection gracefully,
    which completes only once the peer has read everything queued for it.

    Returns:
        Whether it was scheduled (False outside asyncio).
    """
    # Not imported here: without asyncio loaded, no asyncio loop runs (the test kit on
    # trio must not load it).
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return False
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return False
    loop.call_later(seconds, drop, transport)
    return True
