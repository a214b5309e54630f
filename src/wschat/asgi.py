"""Raw ASGI adapter: ``chat_app`` for any ASGI server, and the ASGI transport.

Imports: the core and the standard library. No framework.

:class:`AsgiTransport` drives a WebSocket through raw ASGI messages; the Starlette and
FastAPI adapters reuse it through :class:`ChatSocketApp`, an ASGI app for one route.
Before the server can log the request line, every token is replaced by
``[redacted]`` in the scope (:func:`wschat.redact.redact_scope`), so uvicorn's
``[accepted]``, ``403`` and access lines and hypercorn's access log never carry it:
on the chat route, on the status route, and on every other path ``chat_app`` serves.
:class:`RedactTokens` does the same for the routes of a whole app.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import (
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    Sequence,
)
from typing import Any

from typing_extensions import Unpack

from .asgi_server import (
    SocketTransport,
    connection_transport,
    drop_later,
    limit_unsent,
    message_limit_warning,
    sends_at_once,
    server_settings,
    websocket_warning,
)
from .auth import Verifier
from .endpoint import ChatEndpoint
from .errors import CloseCode, GoingAway, NotFound, wire_close
from .logfilter import install_server_filter
from .manager import ConnectionManager
from .options import ChatOptions, ChatOptionsKwargs
from .redact import redact_query, redact_scope
from .schema import asyncapi_document, schema_bytes
from .status import status_payload
from .transport import Handshake, TransportClosed

__all__ = [
    "AsgiTransport",
    "ChatSocketApp",
    "RedactTokens",
    "ScopeHeaders",
    "asks_for_websocket",
    "chat_app",
    "handshake_from_scope",
    "redact_query",
    "warn_plain_upgrade",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("wschat")


def handshake_from_scope(scope: Scope, chat_id: str) -> Handshake:
    """Read a WebSocket scope into a :class:`Handshake`, redacting the token in it.

    Args:
        scope: The ASGI ``websocket`` scope. Its ``query_string``, ``headers`` and
            ``subprotocols`` are replaced by redacted copies
            (:func:`~wschat.redact.redact_scope`), so that servers and middleware
            that log them never see the token.
        chat_id: The ``{chat_id}`` path segment.

    Returns:
        The handshake, holding the original query string, headers and subprotocols.
    """
    client = scope.get("client")
    headers = scope.get("headers") or ()
    if not isinstance(headers, (list, tuple)):
        # A one-shot iterable, read once for the handshake and the redaction both.
        headers = scope["headers"] = list(headers)
    hs = Handshake(
        chat_id=chat_id,
        query_string=scope.get("query_string", b""),
        headers=ScopeHeaders(headers),
        subprotocols=tuple(scope.get("subprotocols") or ()),
        scheme=scope.get("scheme", "ws"),
        client=f"{client[0]}:{client[1]}" if client else "-",
    )
    # The query string is split once, for redaction here and for admission later.
    redact_scope(scope, query=hs.query)
    return hs


class ScopeHeaders(Mapping[str, str]):
    """The scope's raw header list read as a mapping, decoded on lookup.

    Names match case-insensitively; the first value of a repeated header wins. Only
    a reference to the list the server already holds is kept, not a decoded copy of
    every header for as long as the connection lives.
    """

    __slots__ = ("_raw",)

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        self._raw = raw if isinstance(raw, (list, tuple)) else list(raw)

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return str(value)

    def get(self, name: str, default: Any = None) -> Any:
        """The first value of header ``name``, or ``default``."""
        # Without a KeyError raised and caught for each absent header (Origin is
        # absent from every non-browser handshake): this runs on every one.
        key = name.lower().encode("latin-1", "replace")
        for raw_name, value in self._raw:
            if raw_name == key or raw_name.lower() == key:
                return bytes(value).decode("latin-1")
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of header ``name``, in order (``Cookie`` and
        ``Authorization`` may be repeated)."""
        key = name.lower().encode("latin-1", "replace")
        return [
            bytes(value).decode("latin-1")
            for raw_name, value in self._raw
            if raw_name == key or raw_name.lower() == key
        ]

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(n.decode("latin-1").lower() for n, _ in self._raw))

    def __len__(self) -> int:
        return len({n.lower() for n, _ in self._raw})

    def __bool__(self) -> bool:
        # Without the set of names __len__ builds: admission asks on every handshake.
        return bool(self._raw)

    def __repr__(self) -> str:
        return f"<ScopeHeaders {len(self)} names>"


class AsgiTransport:
    """A :class:`~wschat.transport.Transport` over raw ASGI ``receive`` and ``send``.

    Where the server lets wschat reach the TCP connection (uvicorn, see
    :mod:`wschat.asgi_server`), it also bounds what the kernel holds unsent for the
    client (:data:`~wschat.asgi_server.UNSENT_LIMIT`) and can drop a connection
    whose close handshake does not complete (:meth:`drop_after`).
    """

    __slots__ = ("_at_once", "_connected", "_denial", "_receive", "_send", "_socket")

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._connected = False
        self._denial = "websocket.http.response" in scope.get("extensions", {})
        self._socket: SocketTransport | None = None
        # Whether try_send_text may drive the server's send without a task.
        self._at_once = False

    async def _wait_connect(self) -> None:
        if self._connected:
            return
        message = await self._receive()
        if message["type"] != "websocket.connect":
            raise TransportClosed()
        self._connected = True

    async def accept(self, subprotocol: str | None) -> None:
        await self._wait_connect()
        await self._call({"type": "websocket.accept", "subprotocol": subprotocol})
        self._socket = connection_transport(self._receive, self._send)
        if self._socket is not None:
            limit_unsent(self._socket)
        self._at_once = sends_at_once(self._send)

    def drop_after(self, seconds: float) -> None:
        """Reset the TCP connection if it is still open ``seconds`` from now.

        For a close frame the client does not take: without it uvicorn keeps the
        connection, and what it could not send, as long as the peer's TCP stack
        answers. Does nothing where the server does not show its transport.
        """
        if self._socket is not None:
            drop_later(self._socket, seconds)

    async def receive(self) -> str | bytes | None:
        message = await self._receive()
        kind = message["type"]
        if kind == "websocket.receive":
            text = message.get("text")
            if text is not None:
                return str(text)
            return bytes(message.get("bytes") or b"")
        if kind == "websocket.disconnect":
            return None
        return None

    async def send_text(self, text: str) -> None:
        # The hot path of every delivery: _call inlined, one coroutine less.
        try:
            await self._send({"type": "websocket.send", "text": text})
        except (OSError, RuntimeError) as exc:  # see _call
            raise TransportClosed() from exc

    def try_send_text(self, text: str) -> bool:
        """Send one text frame now if the server takes it without waiting.

        Only where the server's ``send`` completes at once or waits before writing
        anything (uvicorn's ``websockets-sansio``, see
        :func:`~wschat.asgi_server.sends_at_once`); elsewhere, and while the
        connection waits for its send buffer to drain, nothing is sent.

        Returns:
            True if the frame was sent; False if nothing was (send it with
            :meth:`send_text`).

        Raises:
            TransportClosed: The peer is gone.
        """
        if not self._at_once:
            return False
        send = self._send({"type": "websocket.send", "text": text})
        assert isinstance(send, Coroutine)
        try:
            send.send(None)
        except StopIteration:
            return True
        except (OSError, RuntimeError) as exc:  # see _call
            raise TransportClosed() from exc
        # It waits for the socket to be writable, before writing: nothing went out.
        send.close()
        return False

    async def send_many(self, texts: Sequence[str]) -> None:
        # The writer's path when frames queued up: one coroutine for all of them.
        send = self._send
        try:
            for text in texts:
                await send({"type": "websocket.send", "text": text})
        except (OSError, RuntimeError) as exc:  # see _call
            raise TransportClosed() from exc

    async def close(self, code: int, reason: str) -> None:
        await self._call({"type": "websocket.close", "code": code, "reason": reason})

    async def deny(self, status: int, body: str | None) -> None:
        await self._wait_connect()
        if body is None or not self._denial:
            # Closing before accept is answered with a bare HTTP 403.
            await self._call(
                {"type": "websocket.close", "code": int(CloseCode.POLICY_VIOLATION)}
            )
            return
        payload = (body + "\n").encode("utf-8")
        await self._call(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await self._call({"type": "websocket.http.response.body", "body": payload})

    async def _call(self, message: Message) -> None:
        try:
            await self._send(message)
        except (OSError, RuntimeError) as exc:
            # uvicorn's ClientDisconnected is an OSError; servers raise RuntimeError
            # for a send after the peer closed.
            raise TransportClosed() from exc


class ChatSocketApp:
    """An ASGI app serving one chat socket route; ``chat_id`` comes from path params.

    Starlette and FastAPI mount it as a ``WebSocketRoute`` endpoint.
    """

    def __init__(
        self, manager: ConnectionManager, verifier: Verifier, options: ChatOptions
    ) -> None:
        self.endpoint = ChatEndpoint(manager, verifier, options)
        self.server_checked = False
        # uvicorn at --log-level debug prints every handshake header (a bearer.<JWT>
        # subprotocol, Authorization) before the app runs: no app can redact those.
        install_server_filter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chat_id = str(scope.get("path_params", {}).get("chat_id", ""))
        await self.serve(scope, receive, send, chat_id)

    def check_server(self, receive: Receive, send: Send) -> None:
        """Warn once if the server cannot serve WebSockets at all, or if it
        assembles larger messages than wschat accepts.

        Called at startup (``chat_app``'s lifespan) and on the first connection;
        silent where the server's settings cannot be read (:mod:`wschat.asgi_server`).
        """
        self.server_checked = True
        settings = server_settings(receive, send)
        if settings is None:
            return
        cannot = websocket_warning(settings)
        if cannot is not None:
            _warn_no_websockets(cannot)
            return
        warning = message_limit_warning(
            settings, self.endpoint.options.max_message_bytes
        )
        if warning is not None:
            log.warning("%s", warning)

    def serve(
        self, scope: Scope, receive: Receive, send: Send, chat_id: str
    ) -> Coroutine[Any, Any, None]:
        """Serve one socket for ``chat_id``: await the coroutine this returns.

        Not itself a coroutine function: the caller awaits the endpoint directly,
        one coroutine frame less held for every open connection.
        """
        if not self.server_checked:
            self.check_server(receive, send)
        hs = handshake_from_scope(scope, chat_id)
        return self.endpoint.serve(hs, AsgiTransport(scope, receive, send))


def status_body(manager: ConnectionManager) -> bytes:
    """The ``/status`` JSON, encoded."""
    return json.dumps(status_payload(manager)).encode()


#: The file names of the wire's documents, served next to ``/status``.
SCHEMA_PATH = "/schema.json"
ASYNCAPI_PATH = "/asyncapi.json"


@functools.cache
def asyncapi_body(path: str) -> bytes:
    """The AsyncAPI document served at ``path`` (``{prefix}/asyncapi.json``), encoded.

    Its channel address is the chat route next to it, ``{prefix}/chat/{chat_id}``.
    """
    from . import __version__

    prefix = path[: -len(ASYNCAPI_PATH)] if path.endswith(ASYNCAPI_PATH) else ""
    document = asyncapi_document(__version__, f"{prefix}/chat/{{chat_id}}")
    return json.dumps(document, indent=1).encode()


def wire_document(path: str) -> bytes | None:
    """The body of the wire document a path under the prefix names, if any.

    Args:
        path: The request's path (``/ws/schema.json``, ``/ws/asyncapi.json``).

    Returns:
        The JSON Schema or the AsyncAPI document, or None for another path.
    """
    if path.endswith(SCHEMA_PATH):
        return schema_bytes()
    if path.endswith(ASYNCAPI_PATH):
        return asyncapi_body(path)
    return None


class _ChatApp:
    def __init__(
        self,
        manager: ConnectionManager,
        socket: ChatSocketApp,
        prefix: str,
    ) -> None:
        self.manager = manager
        self.socket = socket
        self.chat_prefix = prefix + "/chat/"
        self.status_path = prefix + "/status"
        self.documents = (prefix + SCHEMA_PATH, prefix + ASYNCAPI_PATH)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        path: str = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if kind == "websocket":
            if path.startswith(self.chat_prefix):
                await self.socket.serve(
                    scope, receive, send, path[len(self.chat_prefix) :]
                )
                return
            # Every request this app answers is logged by the server: no token in it.
            redact_scope(scope)
            await close_unknown(receive, send)
        elif kind == "http":
            redact_scope(scope)
            warn_plain_upgrade(scope)
            if path == self.status_path or path in self.documents:
                if scope.get("method") not in ("GET", "HEAD"):
                    await _respond(send, 405, "text/plain", b"method not allowed\n")
                elif path == self.status_path:
                    await _respond(
                        send, 200, "application/json", status_body(self.manager)
                    )
                else:
                    body = wire_document(path) or b""
                    await _respond(send, 200, "application/json", body, cache=True)
            else:
                await not_found(send, upgrade=asks_for_websocket(scope))
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        self.socket.check_server(receive, send)
        try:
            # Runs the backplane (listener, heartbeats) while the app serves.
            await self.manager.__aenter__()
        except Exception as exc:
            log.error("wschat could not start: %s", exc)
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        try:
            await send({"type": "lifespan.startup.complete"})
            while (await receive())["type"] != "lifespan.shutdown":
                pass
            self.manager.close_all(GoingAway())
        finally:
            await self.manager.__aexit__(None, None, None)
        await send({"type": "lifespan.shutdown.complete"})


async def _respond(
    send: Send,
    status: int,
    content_type: str,
    body: bytes,
    *,
    cache: bool = False,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"max-age=300" if cache else b"no-store"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def asks_for_websocket(scope: Scope) -> bool:
    """Whether an ``http`` scope is a WebSocket handshake (``Upgrade: websocket``).

    A server that serves WebSockets never passes one to the app as plain HTTP.
    """
    if scope.get("type") != "http":
        return False
    for name, value in scope.get("headers") or ():
        if name.lower() == b"upgrade" and b"websocket" in value.lower():
            return True
    return False


#: Set once the WARNING that the server cannot serve WebSockets was logged: it is a
#: fact about the process's server, said once.
_no_websockets_told = False


def _warn_no_websockets(text: str) -> None:
    global _no_websockets_told
    if not _no_websockets_told:
        _no_websockets_told = True
        log.warning("%s", text)


def warn_plain_upgrade(scope: Scope) -> None:
    """Log one WARNING if a WebSocket handshake reached the app as plain HTTP.

    The server then cannot serve WebSockets (uvicorn with ``--ws none``, or with
    neither ``websockets`` nor ``wsproto`` installed): each chat socket gets HTTP
    404. Said once per process, whatever path and however often. The path is logged
    without its query string (which may hold a token).

    Args:
        scope: An ASGI ``http`` scope.
    """
    if not _no_websockets_told and asks_for_websocket(scope):
        path = str(scope.get("path", ""))[:200]
        _warn_no_websockets(
            f"wschat: a WebSocket handshake for {path!r} reached the app as a plain "
            "HTTP request: this server cannot serve WebSockets, and answers every "
            "chat socket with HTTP 404. Install a server that speaks WebSocket: "
            "pip install 'uvicorn[standard]' (or 'wschat[server]'), and do not run "
            "uvicorn with --ws none (docs/troubleshooting.md)"
        )


async def close_unknown(receive: Receive, send: Send) -> None:
    """Refuse a WebSocket on a path nothing serves (the server answers HTTP 403)."""
    message = await receive()
    if message["type"] == "websocket.connect":
        closing = wire_close(NotFound())
        await send(
            {"type": "websocket.close", "code": closing.code, "reason": closing.reason}
        )


#: Set on the 404 that answers a WebSocket handshake which reached the app as plain
#: HTTP: the server in front of the app cannot speak WebSocket (``wschat doctor``
#: tells this apart from a proxy that dropped the ``Upgrade`` header).
NO_WEBSOCKET_HEADER = (b"x-wschat-websocket", b"unsupported-by-server")


async def not_found(send: Send, *, upgrade: bool = False) -> None:
    """Answer an HTTP request with a plain 404.

    Args:
        send: The ASGI send callable.
        upgrade: The request asked for a WebSocket (``Upgrade: websocket``) and
            reached the app as plain HTTP: say so in :data:`NO_WEBSOCKET_HEADER`.
    """
    await _respond(
        send,
        404,
        "text/plain",
        b"not found\n",
        headers=(NO_WEBSOCKET_HEADER,) if upgrade else (),
    )


class RedactTokens:
    """ASGI middleware: the server logs each request with its tokens redacted.

    For every ``http`` and ``websocket`` request that carries a token (a token-named
    query parameter, a JWT, ``Authorization``, ``Cookie``, a ``bearer.<token>``
    subprotocol; see :mod:`wschat.redact`), the scope the server holds is redacted
    in place, and the app is called with an unredacted copy: your routes still read
    their tokens, while what the server logs from its scope (uvicorn's access,
    ``[accepted]`` and ``403`` lines, hypercorn's access log) reads ``[redacted]``.

    Wrap the whole app, outermost, so that the scope it receives is the server's::

        app = RedactTokens(app)

    Middleware outside it, and a proxy in front of the server, still see the tokens.
    It cannot redact what the server logs before calling the app (uvicorn's
    ``--log-level debug`` headers, ``trace`` scopes): see
    :class:`wschat.logfilter.RedactingFilter` for those.

    Args:
        app: The ASGI app to wrap.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            sent = {k: scope[k] for k in _REDACTED_KEYS if k in scope}
            if redact_scope(scope):
                # The server keeps the redacted scope (it logs from it); the app
                # gets the request as it was sent.
                scope = {**scope, **sent}
        await self.app(scope, receive, send)


_REDACTED_KEYS = ("query_string", "headers", "subprotocols")


def chat_app(
    manager: ConnectionManager,
    verifier: Verifier,
    options: ChatOptions | None = None,
    *,
    prefix: str = "/ws",
    **kwargs: Unpack[ChatOptionsKwargs],
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """A complete ASGI app: ``{prefix}/chat/{chat_id}`` and ``GET {prefix}/status``.

    Args:
        manager: The connection manager (it holds the outbox caps).
        verifier: Verifies tokens (a :class:`~wschat.TokenVerifier`).
        options: A :class:`~wschat.ChatOptions`; None for the defaults.
        prefix: Path prefix of both routes; ``""`` for none.
        **kwargs: :class:`~wschat.ChatOptions` fields (typed: see
            :class:`~wschat.options.ChatOptionsKwargs`), replacing those of
            ``options``.

    Returns:
        An ASGI application (it also answers ``lifespan``).

    Raises:
        ConfigurationError: An option is unknown or invalid.
    """
    opts = ChatOptions.from_kwargs(options, **kwargs)
    return _ChatApp(manager, ChatSocketApp(manager, verifier, opts), prefix.rstrip("/"))
