"""The one per-connection lifecycle that every adapter calls.

Imports: anyio and the standard library (core layer).

validate chat id -> check origin -> find and verify token -> authorize room -> accept
-> ``ready`` -> join -> pump frames -> leave -> close with the right code.

Every refusal reaches the client as a close code and a reason it can read (or, for the
Origin check, an HTTP 403 before accept), and reaches the server log as one WARNING
that says what to fix. Nothing here ever lets a traceback escape to the server.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial

import anyio
from anyio.abc import TaskGroup
from anyio.lowlevel import checkpoint

from .admission import (
    Admit,
    AwaitAuth,
    Refuse,
    auth_frame_token,
    decide,
    decide_auth_frame,
    offered_token,
    verify,
)
from .auth import Principal, Verifier
from .connection import Connection
from .deadlines import MAX_EXPIRY_LEEWAY, schedule
from .errors import (
    AuthTimeout,
    BadRequest,
    DeliveryInDoubt,
    ErrorReply,
    Forbidden,
    GoingAway,
    HistoryUnavailable,
    MessageTooBig,
    NotSent,
    RateLimited,
    TextOnly,
    TokenInvalid,
    TokenRevoked,
    TryAgainLater,
    WireClose,
    WSChatError,
    wire_close,
)
from .hooks import ChatHooks, Veto
from .ids import ChatId, UserId
from .inflight import MAX_IN_FLIGHT, InFlight
from .limits import RateBucket, UserRates
from .logfilter import WSCHAT_LOGGER, install_own_filter
from .manager import ConnectionManager
from .messages import Submitted
from .options import ChatOptions
from .protocol import (
    ClientAuth,
    ClientHistory,
    ClientMembers,
    ClientMessage,
    ClientPing,
    FrameError,
    MemberListText,
    Published,
    Since,
    encode_auth_ok,
    encode_cursor,
    encode_error,
    encode_members,
    encode_pong,
    encode_ready,
    parse_client_frame,
)
from .refusal_log import RefusalLog
from .rooms import page_members
from .transport import Handshake, Transport, TransportClosed

__all__ = ["MAX_IN_FLIGHT", "ChatEndpoint", "expiry_leeway"]

log = logging.getLogger(WSCHAT_LOGGER)
# A hook's or verifier's traceback in wschat's lines may hold a token: redacted.
install_own_filter()

#: Client frames handled between two checkpoints of one connection's pump; far
#: below the outbox cap, so a burst cannot overflow members that keep up.
_FRAMES_PER_CHECKPOINT = 16


class ChatEndpoint:
    """Serves one chat socket from handshake to close. Adapters call :meth:`serve`."""

    def __init__(
        self, manager: ConnectionManager, verifier: Verifier, options: ChatOptions
    ) -> None:
        self.manager = manager
        self.verifier = verifier
        self.options = options
        self.hooks = options.hooks or ChatHooks()
        self._own_on_message = type(self.hooks).on_message is not ChatHooks.on_message
        self._own_on_published = (
            type(self.hooks).on_published is not ChatHooks.on_published
        )
        self.limits = manager.limits
        # One rate bucket per user, shared by the user's connections through this
        # endpoint: reconnecting or opening more sockets does not add to the rate.
        self.rates: UserRates[UserId] | None = (
            UserRates(options.rate_limit, options.rate_burst)
            if options.rate_limit
            else None
        )
        #: Refusals are logged one line per reason per interval (a flood of junk
        #: handshakes must not become a flood of log lines).
        self.refusals = RefusalLog(log)
        #: A verifier that fetches keys (``JwksVerifier``) does it here, before the
        #: decision, which only reads what it cached (``PreparingVerifier``).
        self._prepare: Callable[[str], Awaitable[None]] | None = getattr(
            verifier, "prepare", None
        )
        #: Seconds past ``exp`` an open connection lives: the verifier's leeway,
        #: at most 5 s (0 for a verifier that has no ``leeway``).
        self._leeway = expiry_leeway(verifier)
        #: The members listed in the last ``ready``, encoded (a storm into one room
        #: lists the same first members in every one).
        self._listed = MemberListText()

    async def serve(self, hs: Handshake, transport: Transport) -> None:
        """Run one connection's whole life. Never raises (but cancellation).

        One coroutine holds the connection from admission to close (with the frame
        pump under it): every frame alive per open connection is memory, and
        objects the cyclic GC walks in a connect storm.
        """
        client = hs.client
        try:
            admitted = await self._admit(hs, transport)
            # The handshake (headers, query string with the token) is not kept for
            # the connection's life.
            del hs
            if admitted is None:
                return
            conn = await self._connect(transport, *admitted)
            del admitted
            if conn is None:
                return
            try:
                async with anyio.create_task_group() as tg:
                    # abort() (slow consumer, kick, shutdown) cancels reader and
                    # writer. A writer runs only while frames flow: an idle
                    # connection is this one task, and what is queued at the start
                    # goes out from it.
                    await conn.open(
                        transport, tg, close_timeout=self.options.close_timeout
                    )
                    self._track(conn)
                    error: WSChatError | None = None
                    try:
                        # An awaited history store: ready and the recovered
                        # messages are queued once the store answered.
                        await self.manager.recover(conn)
                        try:
                            await self.hooks.on_join(conn)
                        except Exception as exc:
                            # A Veto here has no message to refuse: a hook bug.
                            if isinstance(exc, WSChatError) and not isinstance(
                                exc, ErrorReply
                            ):
                                raise
                            raise _StepFailed("the on_join hook raised") from exc
                        # The frame loop, with the user's rate bucket held around
                        # it (here, not in a wrapper: one coroutine frame less
                        # for every open connection).
                        rates = self.rates
                        if rates is None:
                            await self._frames(conn, transport, None, tg)
                        else:
                            rate = rates.acquire(conn.user_id)
                            try:
                                await self._frames(conn, transport, rate, tg)
                            finally:
                                rates.release(conn.user_id, rate)
                    except WSChatError as exc:
                        error = exc
                    except Exception as exc:
                        _log_internal_error(conn, exc)
                        error = WSChatError()
                    conn.abort(error)
            except anyio.get_cancelled_exc_class():
                # Cancelled from outside: the server is stopping this task (hypercorn
                # at shutdown). Tell the client, as a 1001 rather than a bare 1006.
                conn.abort(GoingAway())
                raise
            finally:
                self.manager.disconnect(conn)
                # What was queued before the close goes before the close frame,
                # within close_timeout of the close (of its start, when a send
                # in progress was let end first).
                finish_by = conn.finish_by
                if finish_by is None:
                    finish_by = anyio.current_time() + self.options.close_timeout
                with anyio.CancelScope(shield=True, deadline=finish_by):
                    await conn.send_remaining(transport)
                conn.release()
                with anyio.CancelScope(shield=True):
                    await self._after(conn, transport)
        except TransportClosed:
            pass
        except Exception:
            log.exception("wschat: unexpected error serving client=%s", client)

    async def _admit(
        self, hs: Handshake, transport: Transport
    ) -> tuple[Principal, ChatId, bool, Since | None] | None:
        """Decide on the handshake and accept it: who, which room, whether ``batch``.

        Returns None when the handshake was refused (the client has been told why).
        A helper rather than the body of :meth:`serve`: its frame, which holds the
        token, ends here instead of living as long as the connection.
        """
        if self._prepare is not None:
            token = offered_token(hs, self.options)
            if token is not None:
                await self._prepare(token)
        decision = decide(hs, self.options, self.verifier)
        if isinstance(decision, AwaitAuth):
            return await self._first_message_auth(hs, transport, decision)
        if isinstance(decision, Admit):
            refused = await self._authorize(decision)
            if refused is None:
                self.refusals.tick()
                await transport.accept(decision.subprotocol)
                return (
                    decision.principal,
                    decision.chat_id,
                    decision.batch,
                    decision.since,
                )
            decision = refused
        await self._refuse(hs, transport, decision)
        return None

    async def _authorize(self, admit: Admit) -> Refuse | None:
        """Revocation and room authorization, the steps after the decision: None if
        allowed."""
        error = await self._recheck(admit.principal, admit.chat_id)
        if error is None:
            return None
        return Refuse(error, admit.subprotocol, fingerprint=admit.fingerprint)

    async def _recheck(
        self, principal: Principal, chat_id: ChatId
    ) -> WSChatError | None:
        """Ask ``is_revoked`` then ``authorize`` (at connect and on every refresh).

        Returns:
            None if both let the principal in; else the error to close with: 4401
            ``token_revoked``, 4403 ``forbidden``, or 1011 if a hook raised.
        """
        revoked = self.options.is_revoked
        if revoked is not None:
            try:
                answer = revoked(principal)
                if inspect.isawaitable(answer):
                    answer = await answer
            except WSChatError as exc:
                return exc
            except Exception:
                log.exception("wschat: is_revoked() raised for chat %s", chat_id)
                return WSChatError()
            if answer:
                return TokenRevoked()
        check = self.options.authorize
        if check is None:
            return None
        try:
            allowed = check(principal, chat_id)
            if inspect.isawaitable(allowed):
                allowed = await allowed
        except WSChatError as exc:
            return exc
        except Exception:
            log.exception("wschat: authorize() raised for chat %s", chat_id)
            return WSChatError()
        return None if allowed else Forbidden()

    async def _refuse(
        self, hs: Handshake, transport: Transport, refusal: Refuse
    ) -> None:
        if refusal.cause is not None:
            _log_verifier_failure(refusal)
        closing = wire_close(
            refusal.error,
            chat_id=hs.chat_id,
            client=hs.client,
            # Hashing the token is only worth it for a line that is written.
            token=lambda: refusal.fingerprint,
        )
        self._log(closing)
        if not closing.send:
            return
        if not closing.tell or self.options.http_denials:
            await transport.deny(
                closing.http_status, closing.reason if closing.tell else None
            )
            return
        # Accept first: a browser cannot read an HTTP status, but it can read this.
        await transport.accept(refusal.subprotocol)
        await transport.close(closing.code, closing.reason)

    async def _first_message_auth(
        self, hs: Handshake, transport: Transport, waiting: AwaitAuth
    ) -> tuple[Principal, ChatId, bool, Since | None] | None:
        """Count the wait for an ``auth`` frame, within ``max_pending_auth``."""
        cap = self.options.max_pending_auth
        if not self.manager.begin_auth(cap):
            await self._refuse(
                hs,
                transport,
                Refuse(
                    TryAgainLater(
                        "too many sockets waiting to authenticate "
                        f"(max_pending_auth={cap})"
                    ),
                    waiting.subprotocol,
                ),
            )
            return None
        try:
            return await self._await_auth(hs, transport, waiting)
        finally:
            self.manager.end_auth()

    async def _await_auth(
        self, hs: Handshake, transport: Transport, waiting: AwaitAuth
    ) -> tuple[Principal, ChatId, bool, Since | None] | None:
        """Accept, wait for an ``auth`` frame: the admission, or None if refused."""
        await transport.accept(waiting.subprotocol)
        try:
            with anyio.fail_after(self.options.auth_timeout):
                data = await transport.receive()
        except TimeoutError:
            error: WSChatError = AuthTimeout(
                f"send an auth frame within {self.options.auth_timeout:g} s"
            )
        else:
            if data is None:
                return None
            if self._prepare is not None:
                token = auth_frame_token(data, self.options.max_message_bytes)
                if token is not None:
                    await self._prepare(token)
            decision = decide_auth_frame(data, waiting, self.options, self.verifier)
            if isinstance(decision, Admit):
                refused = await self._authorize(decision)
                if refused is None:
                    return (
                        decision.principal,
                        decision.chat_id,
                        decision.batch,
                        decision.since,
                    )
                decision = refused
            _log_verifier_failure(decision)
            error = decision.error
        closing = wire_close(error, chat_id=hs.chat_id, client=hs.client)
        self._log(closing)
        if closing.send:
            await transport.close(closing.code, closing.reason)
        return None

    def _log(self, closing: WireClose) -> None:
        """Write the line of a close or refusal, refusals through the throttle."""
        level = closing.level
        if closing.throttle is not None and level:
            level = self._refusal_level(*closing.throttle)
        if level:
            log.log(level, closing.message, *closing.args)

    def _refusal_level(self, code: int, reason: str) -> int:
        """The level to log a refusal at: WARNING for the first of its kind in an
        interval; DEBUG if that is enabled; else 0, not logged (only counted)."""
        if self.refusals.admit(code, reason):
            return logging.WARNING
        return logging.DEBUG if log.isEnabledFor(logging.DEBUG) else 0

    def _ready(self, conn: Connection) -> str:
        manager = self.manager
        limit = manager.ready_members
        members = manager.sample_members(conn.chat_id, limit)
        user = conn.user_id
        if user in members:
            listed = self._listed.text(members)
        else:
            # Always listed, however long the list would be.
            del members[limit - 1 :]
            listed = self._listed.text(members, user)
            members.append(user)
        return encode_ready(
            connection_id=conn.id,
            chat_id=conn.chat_id,
            user=user,
            members=members,
            members_json=listed,
            count=max(manager.user_count(conn.chat_id), len(members)),
            limits={
                "max_message_bytes": self.options.max_message_bytes,
                "outbox_max_messages": self.limits.max_messages,
            },
            batch=conn.batch,
            exp=conn.principal.expires_at,
        )

    def _track(self, conn: Connection) -> None:
        """Set (or move) the connection's token notice and cutoff."""
        principal = conn.principal
        exp = principal.expires_at
        if exp is None:
            self.manager.deadlines.track(conn, None)
            return
        iat = principal.claims.get("iat")
        plan = schedule(
            exp,
            now=time.time(),
            leeway=self._leeway,
            notice=self.options.expiry_notice,
            issued_at=iat
            if isinstance(iat, (int, float)) and not isinstance(iat, bool)
            else None,
        )
        self.manager.deadlines.track(conn, plan)

    async def _connect(
        self,
        transport: Transport,
        principal: Principal,
        chat_id: ChatId,
        batch: bool,
        since: Since | None,
    ) -> Connection | None:
        """Register the connection with the manager; None if it refused (told why)."""
        slot: str | None = None
        try:
            slot = await self.manager.reserve(principal.user_id)
            return self.manager.connect(
                principal,
                chat_id,
                batch=batch,
                limits=self.limits,
                first_frame=self._ready,
                slot=slot,
                since=since,
            )
        except WSChatError as refused:
            self.manager.release(principal.user_id, slot)
            closing = wire_close(refused, chat_id=chat_id, token=principal.fingerprint)
            self._log(closing)
            if closing.send:
                await transport.close(closing.code, closing.reason)
            return None

    async def _after(self, conn: Connection, transport: Transport) -> None:
        error = conn.closing
        closing = (
            None
            if error is None
            else wire_close(error, chat_id=conn.chat_id, connection=conn.id)
        )
        if closing is not None and closing.send:
            self._log(closing)
            # A client that stopped reading never takes its close frame, and the
            # server would keep its connection, and the bytes queued before that
            # frame, for as long as the peer's TCP stack answers.
            drop_after = getattr(transport, "drop_after", None)
            if drop_after is not None:
                drop_after(self.options.close_timeout)
            with anyio.move_on_after(self.options.close_timeout):
                with contextlib.suppress(TransportClosed):
                    await transport.close(closing.code, closing.reason)
        with anyio.move_on_after(self.options.close_timeout):
            try:
                await self.hooks.on_leave(conn)
            except Exception:
                log.exception("wschat: on_leave hook raised on connection %s", conn.id)

    async def _frames(
        self,
        conn: Connection,
        transport: Transport,
        rate: RateBucket | None,
        tg: TaskGroup,
    ) -> None:
        opts = self.options
        limit = opts.max_message_bytes
        # Made at first use: an idle connection holds none.
        malformed: RateBucket | None = None
        manager = self.manager
        burst = 0
        # Made at first use: only a connection that sent a message to a pipelined
        # store (history_pipelined) holds one.
        flight: InFlight | None = None
        try:
            while True:
                # A server may hand over many frames read in one chunk without yielding:
                # let the writers drain every few frames, or a burst from one sender
                # fills every member's outbox and closes readers that keep up as slow
                # consumers. Not after every frame: each writer would then wake once per
                # delivery, and a task switch costs more than sending the frame.
                burst += 1
                if burst == _FRAMES_PER_CHECKPOINT:
                    burst = 0
                    await checkpoint()
                data = await transport.receive()
                if data is None:
                    break
                if conn.finish_by is not None:
                    # The server is closing this connection and lets a send in
                    # progress end first (Connection.abort): read nothing more.
                    await anyio.sleep_forever()
                if not isinstance(data, str):
                    raise TextOnly()
                if len(data) > limit or (
                    len(data) * 4 > limit
                    and len(data.encode("utf-8", "replace")) > limit
                ):
                    raise MessageTooBig(f"frames are limited to {limit} bytes")
                if rate is not None and not rate.take():
                    raise RateLimited(f"at most {opts.rate_limit:g} frames/s per user")
                try:
                    frame = parse_client_frame(data)
                except FrameError as exc:
                    if malformed is None:
                        malformed = RateBucket(1.0, opts.malformed_limit)
                    if not malformed.take():
                        raise BadRequest(
                            f"too many malformed frames (last: {exc.code})"
                        ) from None
                    conn.put_nowait(encode_error(exc.code, exc.detail))
                    continue
                if isinstance(frame, ClientMessage):
                    try:
                        body = await self.hooks.on_message(conn, frame.body)
                    except Veto as veto:
                        conn.put_nowait(encode_error(veto.code, veto.message))
                        continue
                    except WSChatError:
                        raise
                    except Exception as exc:
                        raise _StepFailed("the on_message hook raised") from exc
                    try:
                        if manager.history_sync:
                            published = manager.publish_message_nowait(
                                conn, body, frame.client_id
                            )
                        elif manager.history_pipelined:
                            if flight is None:
                                flight = InFlight(
                                    partial(self._report_one, conn),
                                    partial(self._flight_failed, conn),
                                    opts.close_timeout,
                                    lambda: conn.finish_by,
                                )
                            await flight.submit(
                                tg, partial(manager.submit, conn, body, frame.client_id)
                            )
                            continue
                        else:
                            if flight is not None:
                                await flight.drain()
                            published = await manager.publish(
                                conn, body, frame.client_id
                            )
                    except NotSent as exc:
                        conn.put_nowait(_not_sent(exc, frame.client_id))
                        continue
                    except DeliveryInDoubt as exc:
                        conn.put_nowait(_not_sent(exc, frame.client_id, exc.message_id))
                        continue
                    except (TypeError, ValueError, RecursionError) as exc:
                        # A client's own body always encodes (parse_client_frame sees
                        # to it): only a body a hook returned can fail here.
                        if not self._own_on_message:
                            raise
                        raise _StepFailed(
                            "the body the on_message hook returned cannot be encoded "
                            f"as JSON ({type(exc).__name__}: {str(exc)[:200]})",
                            traceback=False,
                        ) from exc
                    if self._own_on_published:
                        await self._published(conn, published)
                    continue
                if flight is not None and flight.queue:
                    # Every other frame is answered after the messages before it
                    # (a history request sees them stored; an error is theirs).
                    await flight.drain()
                if isinstance(frame, ClientPing):
                    conn.put_nowait(encode_pong(frame.id))
                elif isinstance(frame, ClientHistory):
                    try:
                        page = await manager.history_page(
                            conn.chat_id, frame.before, frame.limit
                        )
                    except HistoryUnavailable as exc:
                        page = encode_error(exc.code, exc.detail)
                    conn.put_nowait(page)
                elif isinstance(frame, ClientMembers):
                    conn.put_nowait(self._members_page(conn, frame))
                else:
                    await self._refresh(conn, frame)
            if flight is not None:
                await flight.drain_closing()
                flight.stop()
        except Exception:
            if flight is not None:
                # Closing on the client's (or a hook's) fault: what it sent before
                # is answered first, as when its messages went one at a time.
                await flight.drain_closing()
            raise

    def _flight_failed(self, conn: Connection, exc: Exception) -> None:
        """Telling a pipelined message's outcome raised (a hook): close, as the
        frame loop does for what it raises."""
        if isinstance(exc, WSChatError):
            conn.abort(exc)
            return
        _log_internal_error(conn, exc)
        conn.abort(WSChatError())

    async def _report_one(self, conn: Connection, submitted: Submitted) -> None:
        try:
            published = await submitted.result()
        except NotSent as exc:
            conn.put_nowait(_not_sent(exc, submitted.client_id))
        except DeliveryInDoubt as exc:
            conn.put_nowait(_not_sent(exc, submitted.client_id, exc.message_id))
        else:
            if self._own_on_published:
                await self._published(conn, published)

    async def _published(self, conn: Connection, published: Published) -> None:
        """Run the ``on_published`` hook; what it raises ends the connection."""
        try:
            await self.hooks.on_published(conn, published)
        except WSChatError:
            raise
        except Exception as exc:
            raise _StepFailed("the on_published hook raised") from exc

    def _members_page(self, conn: Connection, request: ClientMembers) -> str:
        """One page of the room's member list, from what this process knows.

        In one process, its registry; with a shared backplane, its view of every
        process's presence (the backplane's members, kept up to date by the
        presence that crosses). Ordered by user id, so a cursor stays valid
        whoever comes and goes.
        """
        users = self.manager.members(conn.chat_id)
        page, more = page_members(users, request.after, request.limit)
        return encode_members(
            chat_id=conn.chat_id,
            members=page,
            count=len(users),
            cursor=encode_cursor(page[-1]) if more else None,
            request_id=request.id,
        )

    async def _refresh(self, conn: Connection, frame: ClientAuth) -> None:
        """A fresh token: verified in full, same ``sub``, not revoked, and the room
        authorized again (its claims may have changed); then the deadline moves.

        Raises:
            WSChatError: What closes the connection: 4401 (the token, or another
                ``sub``, or ``token_revoked``), 4403 (``authorize`` said no now).
        """
        if self._prepare is not None:
            await self._prepare(frame.token)
        principal = verify(self.verifier, frame.token)
        if isinstance(principal, Refuse):
            _log_verifier_failure(principal)
            raise principal.error
        if principal.user_id != conn.user_id:
            raise TokenInvalid("a refreshed token must have the same sub")
        error = await self._recheck(principal, conn.chat_id)
        if error is not None:
            raise error
        conn.principal = principal
        self._track(conn)
        conn.put_nowait(encode_auth_ok(principal.expires_at))


def expiry_leeway(verifier: Verifier) -> float:
    """Seconds past ``exp`` an open connection lives: the verifier's ``leeway``
    (``TokenVerifier`` and ``JwksVerifier``: 5 s by default), at most 5 s; 0 for a
    verifier that has no ``leeway``."""
    leeway = getattr(verifier, "leeway", 0.0)
    if isinstance(leeway, bool) or not isinstance(leeway, (int, float)):
        return 0.0
    if not leeway >= 0:  # nan
        return 0.0
    return float(min(leeway, MAX_EXPIRY_LEEWAY))


def _not_sent(
    error: NotSent | DeliveryInDoubt, client_id: str | None, id: str = ""
) -> str:
    """The sender's ``not_sent`` (or ``delivery_degraded``) error, naming the
    message's ``id`` if known and its ``client_id`` if it gave one."""
    frame: dict[str, str] = {
        "type": "error",
        "code": error.code,
        "message": error.detail,
    }
    if id:
        frame["id"] = id
    if client_id is not None:
        frame["client_id"] = client_id
    return json.dumps(frame, separators=(",", ":"))


class _StepFailed(Exception):
    """Internal: which step of a connection failed, for the log line that says so."""

    def __init__(self, step: str, *, traceback: bool = True) -> None:
        super().__init__(step)
        self.traceback = traceback


def _log_verifier_failure(refusal: Refuse) -> None:
    """Log the traceback of a verifier that failed with other than a WSChatError."""
    if refusal.cause is not None:
        log.error(
            "wschat: the verifier raised (not an AuthenticationError)",
            exc_info=refusal.cause,
        )


def _log_internal_error(conn: Connection, exc: Exception) -> None:
    """Log one ERROR naming the step that failed before closing with 1011.

    The traceback is the application's (a hook raised) or wschat's (a bug); a body
    a hook returned that JSON cannot carry is told in words only.
    """
    if isinstance(exc, _StepFailed):
        step = str(exc)
        cause = exc.__cause__ if exc.traceback else None
    else:
        step, cause = "unexpected error", exc
    log.error(
        "wschat: %s on connection %s (chat %r); closing it with 1011",
        step,
        conn.id,
        conn.chat_id,
        exc_info=cause,
    )
