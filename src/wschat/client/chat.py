"""The connection the app holds: send, events, history, members, and the reconnect
loop.

Imports: ``anyio`` (on asyncio), ``websockets`` and the modules of
:mod:`wschat.client`, :mod:`wschat.frames`, :mod:`wschat.protocol` and
:mod:`wschat.logfilter` (tools layer; no core module imports it).

One :class:`Chat` runs one supervisor task (started by ``async with``) that
connects, reads frames into a bounded event stream, and after a close looks the
code up in the close-code policy (:func:`wschat.schema.policy_for`, the data in
``close-codes.json``) and takes the step :func:`~wschat.client.policy.decide` says:
reconnect after a backoff (full jitter, reset by each ``ready``), ask the token
provider once and reconnect at once (4401), or stop and raise
:class:`~wschat.client.policy.ChatStopped` from ``async for``, ``send``,
``history`` and ``members``. A reconnect resumes with
``?since=<offset>&epoch=<epoch>``. Messages sent while disconnected wait in a
bounded queue and go out, in order, right after the next ``ready``.

asyncio only: ``websockets`` has no trio support.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import random
import string
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Final, Generic, TypeAlias, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from ..errors import CloseCode
from ..frames import (
    Error,
    History,
    Members,
    Message,
    ProtocolViolation,
    Ready,
    TokenExpiring,
    parse_server_frame,
)
from ..logfilter import install_filter
from ..protocol import MAX_MEMBERS_PAGE, encode_client_message
from .events import Disconnected, Event, Reconnected
from .policy import (
    ABNORMAL,
    HTTP_STATUS_CODES,
    Backoff,
    ChatStopped,
    ClientError,
    SendQueueFull,
    client_fix,
    decide,
    policy_for,
)

__all__ = [
    "DEFAULT_MAX_EVENTS",
    "DEFAULT_MAX_QUEUE",
    "Chat",
    "HistoryError",
    "MembersError",
    "Sleep",
    "TokenProvider",
    "connect",
]

#: ``() -> token``, sync or async; asked when a token is needed.
TokenProvider: TypeAlias = Callable[[], "str | Awaitable[str]"]
#: ``(seconds) -> None``: how the client waits between attempts.
Sleep: TypeAlias = Callable[[float], Awaitable[None]]

#: Messages ``send`` queues while disconnected, at most (then :class:`SendQueueFull`).
DEFAULT_MAX_QUEUE: Final = 100
#: Events read but not yet taken by ``async for``; past it the client stops reading
#: the socket (and a server whose outbox for it overflows closes it with 1013).
DEFAULT_MAX_EVENTS: Final = 1000
#: Largest frame the client accepts from the server (a ``history`` page of 100
#: messages at the server's 64 KiB default fits).
MAX_FRAME_BYTES: Final = 16 * 1024 * 1024

_TCHARS: Final = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")
# Error-frame codes that answer a history or members request rather than a message
# (an error frame names no request: one request at a time is in flight, so the code
# says which it answers). ``unknown_type``: a server without that request.
_HISTORY_ERRORS: Final = frozenset({"unknown_type", "bad_frame", "history_unavailable"})
_MEMBERS_ERRORS: Final = frozenset({"unknown_type", "bad_frame", "bad_cursor"})
_LOG = logging.getLogger("wschat.client")
# websockets logs the handshake's headers at DEBUG (the bearer subprotocol too).
_WS_LOG: Final = "wschat.client.websockets"


class HistoryError(ClientError):
    """The server answered a ``history`` request with an ``error`` frame.

    Attributes:
        code: The error frame's ``code`` (``unknown_type``: the server has no
            history; ``history_unavailable``: its store did not answer).
        message: The error frame's ``message``.
    """

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"history request refused: {code}: {message}")


class MembersError(ClientError):
    """The server answered a ``members`` request with an ``error`` frame.

    Attributes:
        code: The error frame's ``code`` (``bad_cursor``: a cursor no page gave,
            or not as it was given; ``unknown_type``: a server without the
            ``members`` request).
        message: The error frame's ``message``.
    """

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"members request refused: {code}: {message}")


_AnswerT = TypeVar("_AnswerT", History, Members)


class _Waiter(Generic[_AnswerT]):
    """One ``history`` or ``members`` request waiting for its answer.

    Args:
        answer: The frame class that answers it.
        refusals: The error-frame codes that refuse it.
        refused: Builds the exception a refusal raises, from the code and message.
        request_id: The ``id`` the answer echoes, if the request sent one.
    """

    def __init__(
        self,
        answer: type[_AnswerT],
        refusals: frozenset[str],
        refused: Callable[[str, str], ClientError],
        request_id: int | None = None,
    ) -> None:
        self.answer: type[_AnswerT] = answer
        self.refusals = refusals
        self.refused = refused
        self.request_id = request_id
        self.done = anyio.Event()
        self.result: _AnswerT | None = None
        self.error: ClientError | None = None

    def take(self, frame: Event) -> bool:
        """Whether ``frame`` answers this request (then it is its result or error)."""
        if self.done.is_set():
            return False
        if isinstance(frame, self.answer) and (
            self.request_id is None or getattr(frame, "id", None) == self.request_id
        ):
            self.result = frame
        elif isinstance(frame, Error) and frame.code in self.refusals:
            self.error = self.refused(frame.code, frame.message)
        else:
            return False
        self.done.set()
        return True


def connect(
    url: str,
    *,
    token: str | None = None,
    token_provider: TokenProvider | None = None,
    max_queue: int = DEFAULT_MAX_QUEUE,
    max_events: int = DEFAULT_MAX_EVENTS,
    max_attempts: int | None = None,
    open_timeout: float = 10.0,
    close_timeout: float = 2.0,
    rng: random.Random | None = None,
    sleep: Sleep | None = None,
    backoff_scale: float = 1.0,
) -> Chat:
    """A chat connection; use it as ``async with connect(...) as chat:``.

    Args:
        url: The room's socket URL, ``ws://host/ws/chat/<chat_id>`` (or ``wss://``),
            without a token in it.
        token: The token to connect with.
        token_provider: ``() -> token`` (sync or async), asked for the first token
            when ``token`` is None, once after a 4401 close, and on a
            ``token_expiring`` notice.
        max_queue: Messages ``send`` keeps while disconnected (default 100).
        max_events: Events kept until ``async for`` takes them (default 1000).
        max_attempts: Reconnects in a row before giving up (default: no limit
            beyond the close-code policy's own).
        open_timeout: Seconds a handshake may take.
        close_timeout: Seconds a clean close may take.
        rng: The backoff's randomness (seed it for reproducible delays).
        sleep: How to wait between attempts (default ``anyio.sleep``).
        backoff_scale: Multiplies every backoff delay.

    Raises:
        ValueError: A URL that is not ``ws://`` or ``wss://`` or carries a token,
            neither ``token`` nor ``token_provider``, or a bad limit.
    """
    return Chat(
        url,
        token=token,
        token_provider=token_provider,
        max_queue=max_queue,
        max_events=max_events,
        max_attempts=max_attempts,
        open_timeout=open_timeout,
        close_timeout=close_timeout,
        backoff=Backoff(rng, backoff_scale),
        sleep=sleep or anyio.sleep,
    )


def _check_count(name: str, value: object, minimum: int) -> None:
    if type(value) is not int or value < minimum:
        raise ValueError(f"{name} must be an integer of at least {minimum}: {value!r}")


class Chat:
    """One chat connection that reconnects by itself; see :func:`connect`."""

    _send: MemoryObjectSendStream[Event]
    _receive: MemoryObjectReceiveStream[Event]

    def __init__(
        self,
        url: str,
        *,
        token: str | None,
        token_provider: TokenProvider | None,
        max_queue: int,
        max_events: int,
        max_attempts: int | None,
        open_timeout: float,
        close_timeout: float,
        backoff: Backoff,
        sleep: Sleep,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.netloc:
            raise ValueError(f"url must start with ws:// or wss://, got {url!r}")
        if any(name == "token" for name, _ in parse_qsl(parts.query)):
            raise ValueError(
                "url carries a token: pass it as token= (it then travels in the "
                "handshake's subprotocol, not in a URL that servers log)"
            )
        if token is None and token_provider is None:
            raise ValueError("give token= or token_provider= (or both)")
        _check_count("max_queue", max_queue, 0)
        _check_count("max_events", max_events, 1)
        if max_attempts is not None:
            _check_count("max_attempts", max_attempts, 0)
        self._url = url
        self._token = token
        self._provider = token_provider
        self._max_queue = max_queue
        self._max_attempts = max_attempts
        self._open_timeout = open_timeout
        self._close_timeout = close_timeout
        self._backoff = backoff
        self._sleep = sleep
        self._outbox: deque[str] = deque()
        self._max_events = max_events
        self._scope = anyio.CancelScope()
        self._ws: ClientConnection | None = None
        self._ready = False
        self._connected = anyio.Event()
        self._settled = anyio.Event()
        self._send_lock = anyio.Lock()
        # history() and members() take turns: an error frame names no request.
        self._request_lock = anyio.Lock()
        self._waiter: _Waiter[Any] | None = None
        self._request_ids = 0
        self._tg: TaskGroup | None = None
        self._closing = False
        self._error: ChatStopped | BaseException | None = None
        self._ended: ChatStopped | None = None
        self._readies = 0
        self._epoch: str | None = None
        self._offset: int | None = None
        self._max_message_bytes: int | None = None
        install_filter((_WS_LOG,))

    # -- what the app sees ---------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether a connection is open and past ``ready``."""
        return self._ready

    @property
    def queued(self) -> int:
        """Messages waiting for a reconnect."""
        return len(self._outbox)

    @property
    def position(self) -> tuple[str | None, int | None]:
        """``(epoch, offset)``: where a reconnect resumes (None before history)."""
        return self._epoch, self._offset

    async def __aenter__(self) -> Chat:
        if self._tg is not None or self._closing:
            raise ClientError("a Chat is entered once; call connect() again")
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise ClientError(
                "wschat.client runs on asyncio only (websockets has no trio "
                "support): run it under asyncio.run() or anyio's asyncio backend"
            ) from None
        self._send, self._receive = anyio.create_memory_object_stream[Event](
            self._max_events
        )
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._supervise)
        try:
            await self._settled.wait()
            if self._error is not None:
                raise self._error
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
        tg, self._tg = self._tg, None
        try:
            if tg is not None:
                # aclose() cancelled the supervisor, which never raises: this waits
                # for it to end. The app's exception (or cancellation) is not the
                # task group's to wrap; it propagates from the async with as is.
                await tg.__aexit__(None, None, None)
        finally:
            self._receive.close()

    async def aclose(self) -> None:
        """Close the connection (1000 ``bye``) and stop; safe to call any time,
        from any task. ``async for`` then ends."""
        if self._closing or self._tg is None:
            self._closing = True
            return
        self._closing = True
        ws = self._ws
        if ws is not None:
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(self._close_timeout),
            ):
                await ws.close(CloseCode.NORMAL_CLOSURE, "bye")
        # The supervisor's own scope: the app's code in the async with block runs
        # inside the task group's scope, which must not be cancelled.
        self._scope.cancel()
        self._send.close()

    def __aiter__(self) -> Chat:
        return self

    async def __anext__(self) -> Event:
        if not hasattr(self, "_receive"):
            raise ClientError("use the chat as: async with connect(...) as chat")
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            if self._error is not None:
                raise self._error from None
            raise StopAsyncIteration from None

    async def send(self, body: Any, *, client_id: str | None = None) -> None:
        """Send a chat message; while disconnected, queue it for the reconnect.

        Raises:
            ChatStopped: The client stopped (the error says why and what to do).
            ClientError: The chat was closed.
            SendQueueFull: ``max_queue`` messages already wait for a reconnect.
            ValueError: The frame is over the server's ``max_message_bytes``, or
                ``body`` is not JSON.
            TypeError: ``body`` is not JSON.
        """
        self._check_usable()
        text = encode_client_message(body, client_id)
        limit = self._max_message_bytes
        if limit is not None and len(text.encode()) > limit:
            raise ValueError(
                f"message frame of {len(text.encode())} bytes is over the server's "
                f"max_message_bytes ({limit}); send a smaller body"
            )
        async with self._send_lock:
            ws = self._ws
            if self._ready and ws is not None and not self._outbox:
                try:
                    await ws.send(text)
                    return
                except ConnectionClosed:
                    pass  # not written: queue it for the reconnect
            if len(self._outbox) >= self._max_queue:
                raise SendQueueFull(
                    f"{len(self._outbox)} messages already wait for the reconnect "
                    f"(max_queue={self._max_queue}); wait for a Reconnected event, "
                    "or connect with a larger max_queue"
                )
            self._outbox.append(text)

    async def history(self, *, before: int | None = None, limit: int = 50) -> History:
        """A page of the room's history: up to ``limit`` messages before ``before``.

        Waits for a connection if the client is reconnecting, and asks again on
        the next one if the connection drops before the answer.

        Args:
            before: Messages with an offset below this; None for the latest.
            limit: How many at most (the server caps it; 100 by default).

        Raises:
            HistoryError: The server refused the request (e.g. it keeps no history).
            ChatStopped: The client stopped.
        """
        if before is not None:
            _check_count("before", before, 1)
        _check_count("limit", limit, 1)
        frame: dict[str, Any] = {"type": "history", "limit": limit}
        if before is not None:
            frame["before"] = before
        return await self._request(
            json.dumps(frame), lambda: _Waiter(History, _HISTORY_ERRORS, HistoryError)
        )

    async def members(self, cursor: str | None = None, limit: int = 100) -> Members:
        """A page of the room's member list, in order of user id.

        Start without a cursor and pass each page's ``cursor`` back until it is
        None: a member present throughout is listed exactly once. Waits for a
        connection if the client is reconnecting, and asks again on the next one
        if the connection drops before the answer.

        Args:
            cursor: The previous page's ``cursor``; None for the first page.
            limit: How many members at most, 1 to 1000.

        Returns:
            The page: ``members``, ``count`` (users in the room now) and
            ``cursor`` (None on the last page).

        Raises:
            MembersError: The server refused the request (``bad_cursor``: a cursor
                no page gave, or not as it was given).
            ChatStopped: The client stopped.
            ValueError: ``limit`` is not an integer from 1 to 1000.
            TypeError: ``cursor`` is not a string.
        """
        _check_count("limit", limit, 1)
        if limit > MAX_MEMBERS_PAGE:
            raise ValueError(f"limit must be at most {MAX_MEMBERS_PAGE}: {limit!r}")
        if cursor is not None and not isinstance(cursor, str):
            raise TypeError(f"cursor must be a page's cursor (a str): {cursor!r}")
        self._request_ids += 1
        request_id = self._request_ids
        frame: dict[str, Any] = {"type": "members", "limit": limit, "id": request_id}
        if cursor is not None:
            frame["cursor"] = cursor
        return await self._request(
            json.dumps(frame),
            lambda: _Waiter(Members, _MEMBERS_ERRORS, MembersError, request_id),
        )

    async def _request(
        self, text: str, waiter_for: Callable[[], _Waiter[_AnswerT]]
    ) -> _AnswerT:
        """Send a request frame and wait for its answer, across reconnects."""
        async with self._request_lock:
            while True:
                await self._wait_ready()
                ws = self._ws
                if ws is None:
                    continue
                waiter = self._waiter = waiter_for()
                try:
                    await ws.send(text)
                    await waiter.done.wait()
                except ConnectionClosed:
                    continue
                finally:
                    self._waiter = None
                if waiter.error is not None:
                    raise waiter.error
                if waiter.result is not None:
                    return waiter.result

    async def refresh(self, token: str) -> None:
        """Send a fresh token in-band (``{"type": "auth", "token": ...}``).

        Reconnects use it too. A ``token_provider`` does this by itself on a
        ``token_expiring`` notice.
        """
        self._check_usable()
        self._token = token
        ws = self._ws
        if self._ready and ws is not None:
            async with self._send_lock:
                # Not sent: the reconnect uses the new token.
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(json.dumps({"type": "auth", "token": token}))

    # -- the supervisor ------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._error is not None:
            raise self._error
        if self._ended is not None:
            raise self._ended
        if self._closing:
            raise ClientError("the chat is closed")

    async def _wait_ready(self) -> None:
        while not self._ready:
            self._check_usable()
            await self._connected.wait()
        self._check_usable()

    async def _emit(self, event: Event) -> None:
        # Closed by aclose(): nobody reads any more.
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            await self._send.send(event)

    async def _supervise(self) -> None:
        try:
            with self._scope:
                await self._reconnect()
        except ChatStopped as exc:
            self._error = exc
        except Exception as exc:  # a bug: surface it, never hang the app
            _LOG.exception("wschat client stopped on an unexpected error")
            self._error = exc
        finally:
            self._ready = False
            self._ws = None
            self._settled.set()
            self._connected.set()
            if self._waiter is not None:
                self._waiter.done.set()
            self._send.close()

    async def _reconnect(self) -> None:
        attempt = 0
        refreshed = False
        while not self._closing:
            if self._token is None:
                await self._ask_token(4401, "token_missing", "")
            code, reason, reached = await self._connect_once()
            if self._closing:
                return
            if reached:
                attempt, refreshed = 0, False
            policy = policy_for(code, reason)
            has_provider = self._provider is not None
            fix = client_fix(policy, has_provider=has_provider)
            step = decide(
                policy,
                attempt=attempt,
                refreshed=refreshed,
                has_provider=has_provider,
                max_attempts=self._max_attempts,
            )
            if step == "refresh_token":
                refreshed = True
                await self._ask_token(code, reason, fix)
                continue
            if step == "end":
                self._ended = ChatStopped(code, reason, fix)  # iteration just ends
                return
            if step == "stop":
                detail = " (after a fresh token)" if refreshed else ""
                raise ChatStopped(code, reason, fix, detail=detail)
            if step == "give_up":
                raise ChatStopped(
                    code, reason, fix, detail=f" (gave up after {attempt} tries)"
                )
            delay = self._backoff.delay(policy, attempt)
            await self._emit(Disconnected(code, reason, delay, attempt))
            attempt += 1
            await self._sleep(delay)

    async def _ask_token(self, code: int, reason: str, fix: str) -> None:
        fix = fix or client_fix(
            policy_for(code, reason), has_provider=self._provider is not None
        )
        if self._provider is None:
            raise ChatStopped(code, reason, fix)
        try:
            token = self._provider()
            if inspect.isawaitable(token):
                token = await token
        except Exception as exc:
            raise ChatStopped(
                code,
                reason,
                fix,
                detail=f" (the token provider raised {type(exc).__name__})",
            ) from exc
        if not isinstance(token, str) or not token:
            raise ChatStopped(
                code, reason, fix, detail=" (the token provider returned no token)"
            )
        self._token = token

    def _resume_url(self) -> str:
        if self._epoch is None or self._offset is None:
            return self._url
        parts = urlsplit(self._url)
        query = [
            (k, v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if k not in ("since", "epoch")
        ]
        query += [("since", str(self._offset)), ("epoch", self._epoch)]
        scheme, netloc, path, _, fragment = parts
        return urlunsplit((scheme, netloc, path, urlencode(query), fragment))

    async def _connect_once(self) -> tuple[int, str, bool]:
        """One connection, from handshake to close: ``(code, reason, reached
        ready)``."""
        token = self._token or ""
        if not all(c in _TCHARS for c in token):
            # It cannot travel in a subprotocol; the server would say the same.
            return (
                4401,
                "token_malformed: the token has characters a JWT has not",
                False,
            )
        try:
            ws = await ws_connect(
                self._resume_url(),
                subprotocols=[Subprotocol("wschat.v1"), Subprotocol(f"bearer.{token}")],
                open_timeout=self._open_timeout,
                close_timeout=self._close_timeout,
                max_size=MAX_FRAME_BYTES,
                logger=logging.getLogger(_WS_LOG),
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            return HTTP_STATUS_CODES.get(status, ABNORMAL), f"http_{status}", False
        except (OSError, TimeoutError, asyncio.TimeoutError, InvalidHandshake):
            return ABNORMAL, "", False
        readies = self._readies
        self._ws = ws
        try:
            async with anyio.create_task_group() as tg:
                await self._read(ws, tg)
                tg.cancel_scope.cancel()
        finally:
            self._ws = None
            self._ready = False
            self._connected = anyio.Event()
            if self._waiter is not None:
                self._waiter.done.set()  # the request is sent again on the next one
        with anyio.move_on_after(self._close_timeout):
            await ws.wait_closed()
        code = ws.close_code if ws.close_code is not None else ABNORMAL
        return code, ws.close_reason or "", self._readies > readies

    async def _read(self, ws: ClientConnection, tg: TaskGroup) -> None:
        try:
            async for text in ws:
                if isinstance(text, bytes):
                    _LOG.warning("wschat client: ignored a binary frame")
                    continue
                try:
                    frames = parse_server_frame(text)
                except ProtocolViolation as exc:
                    _LOG.warning("wschat client: ignored a frame: %s", exc)
                    continue
                for frame in frames:
                    await self._handle(frame, ws, tg)
        except ConnectionClosed:
            pass

    async def _handle(self, frame: Event, ws: ClientConnection, tg: TaskGroup) -> None:
        if isinstance(frame, Ready):
            await self._on_ready(frame, ws)
            return
        if isinstance(frame, Message):
            if frame.offset is not None and frame.offset > (self._offset or 0):
                self._offset = frame.offset
        elif isinstance(frame, TokenExpiring):
            if self._provider is not None:
                tg.start_soon(self._refresh_in_band, ws)
        elif self._waiter is not None and self._waiter.take(frame):
            return
        await self._emit(frame)

    async def _on_ready(self, ready: Ready, ws: ClientConnection) -> None:
        recovered, epoch, offset = ready.recovered is True, ready.epoch, ready.offset
        if not recovered:
            # Start from the room's present; what came before is history().
            self._epoch = epoch if isinstance(epoch, str) else None
            self._offset = offset if type(offset) is int else None
        limit = ready.limits.get("max_message_bytes")
        self._max_message_bytes = limit if type(limit) is int else None
        self._readies += 1
        self._ready = True
        self._connected.set()
        self._settled.set()
        await self._flush(ws)
        await self._emit(ready)
        if self._readies > 1:
            await self._emit(Reconnected(recovered, ready))

    async def _flush(self, ws: ClientConnection) -> None:
        async with self._send_lock:
            while self._outbox:
                try:
                    await ws.send(self._outbox[0])
                except ConnectionClosed:
                    return
                self._outbox.popleft()

    async def _refresh_in_band(self, ws: ClientConnection) -> None:
        try:
            await self._ask_token(4401, "token_expired", "")
        except ChatStopped as exc:
            # The server closes at exp; the reconnect asks the provider again.
            _LOG.warning("wschat client: token refresh failed: %s", exc)
            return
        async with self._send_lock:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(json.dumps({"type": "auth", "token": self._token}))
