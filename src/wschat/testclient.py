"""An in-process chat client for tests: drive an app's chat socket with no server.

Imports: anyio, PyJWT, the standard library, wschat's core and its raw-ASGI adapter
(tools layer). No web framework, no redis, no asyncio: it runs on asyncio and trio.

:class:`ChatTestClient` runs an ASGI app (``chat_app``, a Starlette app mounting
``chat_routes``, a FastAPI app including ``chat_router``) or a bare
:class:`~wschat.endpoint.ChatEndpoint` in the calling event loop, with its lifespan,
and opens chat sockets on it the way a server would: no sockets, no threads. What
the server sends comes back as typed frames (``batch`` frames unpacked); a close
shows its code and reason (frames are those of :mod:`wschat.frames`). Every wait is
bounded (``timeout``, 2 s by default).

Example::

    async with ChatTestClient(app, secret=SECRET) as client:
        async with client.connect("lobby", user="alice") as alice:
            ready = await alice.receive_until(Ready)
            await alice.send({"text": "hi"})
            message = await alice.receive_until(Message)
            assert (message.user, message.body) == ("alice", {"text": "hi"})
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, overload
from urllib.parse import quote, urlencode

import anyio
import jwt
from anyio.abc import TaskGroup
from anyio.lowlevel import checkpoint
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .asgi import AsgiTransport, handshake_from_scope
from .endpoint import ChatEndpoint
from .frames import Frame, FrameT, ProtocolViolation, parse_server_frame
from .protocol import SUBPROTOCOL, SUBPROTOCOL_BATCH, encode_client_message

__all__ = [
    "DEFAULT_TIMEOUT",
    "ChatClosed",
    "ChatDenied",
    "ChatTestClient",
    "ChatTestSession",
    "mint_token",
]

#: Seconds any wait of the client may take unless told otherwise.
DEFAULT_TIMEOUT = 2.0

AsgiMessage = dict[str, Any]
AsgiApp = Callable[
    [dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


def mint_token(
    key: str | bytes,
    sub: str,
    *,
    ttl: float = 3600,
    algorithm: str = "HS256",
    claims: Mapping[str, Any] | None = None,
    now: float | None = None,
) -> str:
    """Sign a real JWT for ``sub``.

    Args:
        key: HMAC secret, or a PEM private key for ``RS*``/``ES*``/``EdDSA``.
        sub: The user id (the ``sub`` claim).
        ttl: Seconds until ``exp``.
        algorithm: The JWS algorithm.
        claims: Extra claims (``aud``, ``iss``, ...); they override the defaults.
        now: The issue time in Unix seconds (default: now).

    Returns:
        The encoded token.
    """
    issued = time.time() if now is None else now
    payload: dict[str, Any] = {"sub": sub, "iat": int(issued), "exp": int(issued + ttl)}
    payload.update(claims or {})
    return jwt.encode(payload, key, algorithm=algorithm)


# -- errors ----------------------------------------------------------------------------


class ChatClosed(Exception):
    """The connection is closed: receiving from it has nothing more to give.

    Attributes:
        code: The close code (the server's, or the client's if it closed first).
        reason: The close reason (``"<code>: <words>"`` for wschat's own).
        by: ``"server"`` or ``"client"``: who closed first.
    """

    def __init__(
        self,
        code: int,
        reason: str,
        by: Literal["server", "client"],
        *,
        skipped: Sequence[str] | None = None,
    ) -> None:
        message = f"closed by the {by}: {code} {reason}".rstrip()
        if skipped is not None:
            message += f"; before it: {list(skipped)}"
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.by = by


class ChatDenied(Exception):
    """The server refused the handshake: the client never got a socket.

    A server answers a close before accept with HTTP 403 (wschat's Origin check
    does this); with ``http_denials=True`` wschat answers with its own status.

    Attributes:
        status: The HTTP status the client would see.
        body: The response body, if the app sent one.
        code: The close code the app used, when it closed before accept.
    """

    def __init__(self, status: int, body: str | None, code: int | None = None) -> None:
        detail = f": {body.strip()}" if body else ""
        close = f" (the app closed with {code} before accept)" if code else ""
        super().__init__(f"handshake refused with HTTP {status}{detail}{close}")
        self.status = status
        self.body = body
        self.code = code


# -- one socket ------------------------------------------------------------------------


class ChatTestSession:
    """One chat socket opened by :meth:`ChatTestClient.connect`.

    Attributes:
        chat_id: The room asked for.
        subprotocol: The subprotocol the server selected, if any.
        close_code: The close code once closed (by either side), else None.
        close_reason: The close reason once closed, else None.
        closed_by: ``"server"`` or ``"client"`` once closed, else None.
        timeout: Seconds any wait of this socket may take (the client's by
            default); set it to change them. For a shorter wait, use
            ``anyio.fail_after`` or ``anyio.move_on_after`` around the call.
    """

    def __init__(
        self,
        chat_id: str,
        scope: dict[str, Any],
        timeout: float,
        *,
        app: AsgiApp,
        task_group: TaskGroup,
    ) -> None:
        self.chat_id = chat_id
        self.timeout = timeout
        self.subprotocol: str | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.closed_by: Literal["server", "client"] | None = None
        self._scope = scope
        self._state: Literal["connecting", "open", "denying", "closed"] = "connecting"
        self._to_app: MemoryObjectSendStream[AsgiMessage]
        self._app_inbox: MemoryObjectReceiveStream[AsgiMessage]
        self._to_app, self._app_inbox = anyio.create_memory_object_stream[AsgiMessage](
            math.inf
        )
        self._frames: MemoryObjectSendStream[Frame]
        self._inbox: MemoryObjectReceiveStream[Frame]
        self._frames, self._inbox = anyio.create_memory_object_stream[Frame](math.inf)
        self._disconnect: AsgiMessage | None = None
        self._handshake = anyio.Event()
        self._closed = anyio.Event()
        self._ended = anyio.Event()
        self._denial: ChatDenied | None = None
        self._denial_status = 0
        self._denial_body = b""
        self._violation: ProtocolViolation | None = None
        self._error: BaseException | None = None
        self._scope_cancel = anyio.CancelScope()
        self._app = app
        self._tg = task_group

    async def __aenter__(self) -> ChatTestSession:
        """Open the socket: run the app and wait until it accepts or refuses.

        Raises:
            ChatDenied: The app refused the handshake.
            TimeoutError: It did neither within :attr:`timeout` seconds.
        """
        if self._state != "connecting" or self._ended.is_set():
            raise RuntimeError("a ChatTestSession is opened once")
        self._to_app.send_nowait({"type": "websocket.connect"})
        self._tg.start_soon(self._run, self._app)
        try:
            await self._opened()
        except BaseException:
            self._inbox.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close from the client's side; raise what the app raised, if anything."""
        try:
            await self.close()
        finally:
            self._inbox.close()
        error, self._error = self._error, None
        if error is not None:
            raise error

    def __repr__(self) -> str:
        return f"<ChatTestSession chat={self.chat_id!r} state={self._state}>"

    @property
    def closed(self) -> bool:
        """Whether either side has closed the socket."""
        return self.close_code is not None

    # -- the test's side --------------------------------------------------------------

    async def send(self, body: Any, *, client_id: str | None = None) -> None:
        """Send a chat ``message`` frame with ``body`` (any JSON)."""
        await self.send_text(encode_client_message(body, client_id))

    async def send_json(self, frame: Any) -> None:
        """Send any JSON value as one text frame (a raw client frame)."""
        await self.send_text(json.dumps(frame))

    async def ping(self, id: str | int | None = None) -> None:
        """Send a ``ping`` frame; the server answers with a :class:`Pong`."""
        await self.send_json(
            {"type": "ping"} if id is None else {"type": "ping", "id": id}
        )

    async def authenticate(self, token: str) -> None:
        """Send an ``auth`` frame (first-message auth, or a token refresh)."""
        await self.send_json({"type": "auth", "token": token})

    async def send_text(self, text: str) -> None:
        """Send one text frame as is."""
        self._send_to_app({"type": "websocket.receive", "text": text})
        await checkpoint()

    async def send_bytes(self, data: bytes) -> None:
        """Send one binary frame (wschat closes with 1003 ``text_only``)."""
        self._send_to_app({"type": "websocket.receive", "bytes": data})
        await checkpoint()

    def _send_to_app(self, message: AsgiMessage) -> None:
        if self._state != "open":
            raise self._closed_error()
        self._to_app.send_nowait(message)

    async def receive(self) -> Frame:
        """The next frame from the server (each frame of a ``batch`` in turn).

        Raises:
            ChatClosed: The socket is closed and every frame sent before the close
                has been received.
            TimeoutError: No frame within :attr:`timeout` seconds.
            ProtocolViolation: The server sent something the protocol forbids.
        """
        wait = self.timeout
        try:
            with anyio.fail_after(wait):
                return await self._inbox.receive()
        except TimeoutError:
            raise TimeoutError(
                f"no frame from the server within {wait:g} s on {self.chat_id!r}"
            ) from None
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise self._closed_error() from None

    @overload
    async def receive_until(self, kind: type[FrameT]) -> FrameT: ...

    @overload
    async def receive_until(self, kind: str) -> Frame: ...

    async def receive_until(self, kind: type[FrameT] | str) -> Frame:
        """Receive frames until one of type ``kind``; return it, dropping the others.

        Args:
            kind: A frame class (:class:`Message`) or a type name (``"message"``,
                or a type your application sends).

        Raises:
            ChatClosed: The socket closed first; its message lists what came before.
            TimeoutError: No such frame within :attr:`timeout` seconds; says what
                came instead.
        """
        name = kind if isinstance(kind, str) else kind.type
        wait = self.timeout
        skipped: list[str] = []
        try:
            with anyio.fail_after(wait):
                while True:
                    try:
                        frame = await self._inbox.receive()
                    except (anyio.EndOfStream, anyio.ClosedResourceError):
                        error = self._closed_error()
                        if isinstance(error, ChatClosed):
                            error = ChatClosed(
                                error.code, error.reason, error.by, skipped=skipped
                            )
                        raise error from None
                    if frame.type == name:
                        return frame
                    skipped.append(frame.type)
        except TimeoutError:
            raise TimeoutError(
                f"no {name!r} frame within {wait:g} s on {self.chat_id!r}; "
                f"received instead: {skipped}"
            ) from None

    async def wait_closed(self) -> tuple[int, str]:
        """Wait until the socket is closed; its close code and reason.

        Frames sent before the close stay receivable.

        Raises:
            TimeoutError: Still open after :attr:`timeout` seconds.
        """
        wait = self.timeout
        try:
            with anyio.fail_after(wait):
                await self._closed.wait()
        except TimeoutError:
            raise TimeoutError(
                f"the server did not close {self.chat_id!r} within {wait:g} s"
            ) from None
        if self.close_code is None:  # refused before accept: never opened
            raise self._closed_error()
        assert self.close_reason is not None
        return self.close_code, self.close_reason

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close from the client's side and wait (bounded) for the app to finish.

        Raises:
            TimeoutError: The app did not return within the timeout (it was
                cancelled).
        """
        if self._state == "open":
            self._set_closed(code, reason, "client")
            message: AsgiMessage = {"type": "websocket.disconnect", "code": code}
            if reason:
                message["reason"] = reason
            self._to_app.send_nowait(message)
        with anyio.move_on_after(self.timeout):
            await self._ended.wait()
        if not self._ended.is_set():
            self._scope_cancel.cancel()
            raise TimeoutError(
                f"the app did not return within {self.timeout:g} s after the client "
                f"closed {self.chat_id!r}"
            )

    # -- the app's side (ASGI) --------------------------------------------------------

    async def _asgi_receive(self) -> AsgiMessage:
        if self._disconnect is None and self.closed_by == "server":
            # The app closed: what a server hands it next is the disconnect.
            self._disconnect = {"type": "websocket.disconnect", "code": self.close_code}
        if self._disconnect is not None:
            await checkpoint()
            return dict(self._disconnect)
        message = await self._app_inbox.receive()
        if message["type"] == "websocket.disconnect":
            self._disconnect = message
        return message

    async def _asgi_send(self, message: Any) -> None:
        kind = message["type"]
        state = self._state
        if kind == "websocket.send" and state == "open":
            text = message.get("text")
            if text is None:
                self._violate(f"server sent a binary frame: {message.get('bytes')!r}")
                return
            try:
                frames = parse_server_frame(text)
            except ProtocolViolation as exc:
                self._violate(str(exc))
                return
            for frame in frames:
                self._frames.send_nowait(frame)
        elif kind == "websocket.accept" and state == "connecting":
            self.subprotocol = message.get("subprotocol")
            self._state = "open"
            self._handshake.set()
        elif kind == "websocket.close" and state == "open":
            self._set_closed(
                int(message.get("code") or 1000),
                str(message.get("reason") or ""),
                "server",
            )
        elif kind == "websocket.close" and state == "connecting":
            self._deny(ChatDenied(403, None, int(message.get("code") or 1000)))
        elif kind == "websocket.http.response.start" and state == "connecting":
            self._state = "denying"
            self._denial_status = int(message["status"])
        elif kind == "websocket.http.response.body" and state == "denying":
            self._denial_body += bytes(message.get("body", b""))
            if not message.get("more_body", False):
                body = self._denial_body.decode("utf-8", "replace")
                self._deny(ChatDenied(self._denial_status, body))
        elif state == "closed" and self.closed_by == "client":
            # What a server does when the peer is gone: the send fails.
            raise OSError(f"the client closed {self.chat_id!r}: cannot send {kind!r}")
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} on a {state} socket")
        await checkpoint()

    def _violate(self, detail: str) -> None:
        # The client drops the connection, as a browser would.
        self._violation = ProtocolViolation(detail)
        self._set_closed(1006, f"protocol violation: {detail}", "server")
        self._to_app.send_nowait({"type": "websocket.disconnect", "code": 1006})

    def _set_closed(
        self, code: int, reason: str, by: Literal["server", "client"]
    ) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason, self.closed_by = code, reason, by
        self._state = "closed"
        self._frames.close()
        self._handshake.set()
        self._closed.set()

    def _deny(self, denial: ChatDenied) -> None:
        self._denial = denial
        self._state = "closed"
        self._frames.close()
        self._handshake.set()
        self._closed.set()

    def _closed_error(self) -> Exception:
        if self._error is not None:
            error, self._error = self._error, None
            if isinstance(error, Exception):
                return error
        if self._violation is not None:
            return self._violation
        if self.close_code is None:
            return RuntimeError(f"socket {self.chat_id!r} is not open ({self._state})")
        assert self.close_reason is not None
        assert self.closed_by is not None
        return ChatClosed(self.close_code, self.close_reason, self.closed_by)

    async def _run(self, app: AsgiApp) -> None:
        """Run the app for this socket; what it raises is kept for the test."""
        try:
            with self._scope_cancel:
                try:
                    await app(self._scope, self._asgi_receive, self._asgi_send)
                except Exception as exc:
                    self._error = exc
        finally:
            if self._state == "connecting":
                # Returned without accepting: a server answers HTTP 403.
                self._deny(ChatDenied(403, None))
            elif self._state == "denying":
                body = self._denial_body.decode("utf-8", "replace")
                self._deny(ChatDenied(self._denial_status, body))
            elif self._state == "open":
                # Returned without closing: servers close with 1000.
                self._set_closed(1000, "", "server")
            self._to_app.close()
            self._app_inbox.close()
            self._ended.set()

    async def _opened(self) -> None:
        with anyio.move_on_after(self.timeout):
            await self._handshake.wait()
        if self._error is not None and self._state != "open":
            error, self._error = self._error, None
            raise error
        if self._denial is not None:
            raise self._denial
        if not self._handshake.is_set():
            self._scope_cancel.cancel()
            raise TimeoutError(
                f"the app did not accept or refuse {self.chat_id!r} within "
                f"{self.timeout:g} s"
            )


# -- the client ------------------------------------------------------------------------


class ChatTestClient:
    """Run an app in the calling event loop and open chat sockets on it.

    Args:
        app: An ASGI app serving the chat route (``chat_app``, or a Starlette or
            FastAPI app with wschat's routes), or a bare
            :class:`~wschat.endpoint.ChatEndpoint`.
        secret: Key that signs tokens for ``connect(user=...)`` (the verifier's
            secret, or a PEM private key for public-key algorithms).
        algorithm: JWS algorithm of those tokens.
        prefix: Where the chat route is mounted: sockets open
            ``{prefix}/chat/{chat_id}``. Ignored for a bare endpoint.
        lifespan: ``"auto"`` runs the app's lifespan if it has one (for an endpoint:
            enters its manager, which runs a shared backplane); ``"on"`` requires
            it to start; ``"off"`` skips it.
        timeout: Seconds any wait may take (a frame, a close, the lifespan, the app
            returning after a close); every method takes its own too.

    Raises:
        RuntimeError: The lifespan startup failed (or, with ``"on"``, never ran).
    """

    def __init__(
        self,
        app: AsgiApp | ChatEndpoint,
        *,
        secret: str | bytes | None = None,
        algorithm: str = "HS256",
        prefix: str = "/ws",
        lifespan: Literal["auto", "on", "off"] = "auto",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if lifespan not in ("auto", "on", "off"):
            raise ValueError(
                f"lifespan must be 'auto', 'on' or 'off'; got {lifespan!r}"
            )
        self.app = app
        self.secret = secret
        self.algorithm = algorithm
        self.prefix = prefix.rstrip("/")
        self.lifespan = lifespan
        self.timeout = timeout
        self._tg: TaskGroup | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._state: dict[str, Any] = {}

    async def __aenter__(self) -> ChatTestClient:
        stack = contextlib.AsyncExitStack()
        self._tg = await stack.enter_async_context(anyio.create_task_group())
        stack.push_async_callback(self._cancel_leftovers)
        try:
            if self.lifespan != "off":
                if isinstance(self.app, ChatEndpoint):
                    await stack.enter_async_context(self.app.manager)
                else:
                    await self._lifespan(stack)
        except BaseException:
            # Raised as is, not inside the task group's exception group.
            await stack.__aexit__(None, None, None)
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            # The block's own exception is not the task group's: the app's tasks
            # keep theirs, so it propagates as raised, not in an exception group.
            # Sockets still open have their app cancelled.
            await stack.__aexit__(None, None, None)

    async def _cancel_leftovers(self) -> None:
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    async def _lifespan(self, stack: contextlib.AsyncExitStack) -> None:
        app = self.app
        assert not isinstance(app, ChatEndpoint)
        assert self._tg is not None
        to_app, inbox = anyio.create_memory_object_stream[AsgiMessage](math.inf)
        answers, from_app = anyio.create_memory_object_stream[AsgiMessage](math.inf)
        for stream in (to_app, inbox, answers, from_app):
            stack.callback(stream.close)
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self._state,
        }
        failure: list[BaseException] = []

        async def run() -> None:
            try:
                await app(scope, inbox.receive, answers.send)
            except Exception as exc:
                failure.append(exc)
            finally:
                answers.close()

        self._tg.start_soon(run)
        to_app.send_nowait({"type": "lifespan.startup"})
        answer = await self._lifespan_answer(from_app, "startup")
        if answer is None:
            if self.lifespan == "on":
                raise RuntimeError(
                    "the app did not answer lifespan.startup"
                    + (f": it raised {failure[0]!r}" if failure else "")
                ) from (failure[0] if failure else None)
            return  # lifespan="auto": an app without a lifespan
        if answer["type"] == "lifespan.startup.failed":
            raise RuntimeError(f"lifespan startup failed: {answer.get('message', '')}")

        async def shutdown() -> None:
            to_app.send_nowait({"type": "lifespan.shutdown"})
            answer = await self._lifespan_answer(from_app, "shutdown")
            if answer is not None and answer["type"] == "lifespan.shutdown.failed":
                raise RuntimeError(
                    f"lifespan shutdown failed: {answer.get('message', '')}"
                )

        stack.push_async_callback(shutdown)

    async def _lifespan_answer(
        self, from_app: MemoryObjectReceiveStream[AsgiMessage], phase: str
    ) -> AsgiMessage | None:
        try:
            with anyio.fail_after(self.timeout):
                return await from_app.receive()
        except anyio.EndOfStream:
            return None
        except TimeoutError:
            raise TimeoutError(
                f"the app did not answer lifespan.{phase} within {self.timeout:g} s"
            ) from None

    def token(
        self,
        user: str,
        *,
        ttl: float = 3600,
        claims: Mapping[str, Any] | None = None,
        now: float | None = None,
    ) -> str:
        """A token for ``user`` signed with the client's ``secret``.

        Raises:
            ValueError: The client has no ``secret``.
        """
        if self.secret is None:
            raise ValueError(
                "pass secret=... to ChatTestClient to sign tokens for "
                "connect(user=...), or pass token=... to connect()"
            )
        return mint_token(
            self.secret, user, ttl=ttl, algorithm=self.algorithm, claims=claims, now=now
        )

    def connect(
        self,
        chat_id: str,
        *,
        user: str | None = None,
        token: str | None = None,
        ttl: float = 3600,
        claims: Mapping[str, Any] | None = None,
        token_via: Literal["query", "subprotocol"] = "query",
        subprotocols: Sequence[str] = (SUBPROTOCOL,),
        batch: bool = False,
        origin: str | None = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
    ) -> ChatTestSession:
        """A chat socket: ``async with`` opens it, and closes it (as the client).

        Args:
            chat_id: The room (the ``{chat_id}`` path segment, sent as is).
            user: Sign a token for this user with the client's ``secret``.
            token: Send this token instead (``None`` and no ``user``: no token).
            ttl: Lifetime of the token signed for ``user``; negative for an expired
                one.
            claims: Extra claims of the token signed for ``user``.
            token_via: Send the token in ``?token=`` or as a ``bearer.<token>``
                subprotocol.
            subprotocols: Subprotocols offered (``wschat.v1`` by default).
            batch: Opt in to ``batch`` frames (the kit unpacks them).
            origin: The ``Origin`` header (none by default: not a browser).
            headers: More request headers.
            query: More query parameters.

        Returns:
            The socket, to open with ``async with``. A refusal after accept
            (4401, 4403, ...) is seen as a close: ``receive()`` raises
            :class:`ChatClosed`. A refusal before accept (the Origin check,
            ``http_denials``, no route) raises :class:`ChatDenied` from
            ``async with``.

        Raises:
            ValueError: ``user`` without the client's ``secret``.
            RuntimeError: The client is not running (use ``async with`` on it).
        """
        if self._tg is None:
            raise RuntimeError("use the client as `async with ChatTestClient(app):`")
        if user is not None and token is None:
            token = self.token(user, ttl=ttl, claims=claims)
        offered = list(subprotocols)
        params = dict(query or {})
        if token is not None:
            if token_via == "subprotocol":
                offered.append(f"bearer.{token}")
            else:
                params["token"] = token
        if batch:
            offered.append(SUBPROTOCOL_BATCH)
        path = f"{self.prefix}/chat/{chat_id}"
        raw_headers = [(b"host", b"testserver")]
        if origin is not None:
            raw_headers.append((b"origin", origin.encode("latin-1")))
        if offered:
            raw_headers.append((b"sec-websocket-protocol", ", ".join(offered).encode()))
        for name, value in (headers or {}).items():
            raw_headers.append(
                (name.lower().encode("latin-1"), value.encode("latin-1"))
            )
        scope: dict[str, Any] = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "ws",
            "server": ("testserver", 80),
            "client": ("testclient", 50000),
            "root_path": "",
            "path": path,
            "raw_path": f"{self.prefix}/chat/{quote(chat_id, safe='')}".encode(),
            "query_string": urlencode(params).encode("ascii"),
            "headers": raw_headers,
            "subprotocols": offered,
            "state": dict(self._state),
            "extensions": {"websocket.http.response": {}},
        }
        return ChatTestSession(
            chat_id,
            scope,
            self.timeout,
            app=self._asgi_app(chat_id),
            task_group=self._tg,
        )

    def _asgi_app(self, chat_id: str) -> AsgiApp:
        app = self.app
        if not isinstance(app, ChatEndpoint):
            return app
        endpoint = app

        async def serve(
            scope: dict[str, Any],
            receive: Callable[[], Awaitable[Any]],
            send: Callable[[Any], Awaitable[None]],
        ) -> None:
            hs = handshake_from_scope(scope, chat_id)
            await endpoint.serve(hs, AsgiTransport(scope, receive, send))

        return serve
