"""The writer sweep: retires idle writers and sends frames left for it.

Imports: anyio and the standard library (core layer).

A :class:`WriterSweeper` serves a manager's connections in one event loop. Every
:data:`SWEEP_INTERVAL` it retires the writers of connections that waited a whole
interval with nothing to send (so an idle connection is one task), and sends the
frames queued with ``Connection.put_nowait(defer=True)`` (presence) in one short
writer run per client. Calls left for it (:meth:`WriterSweeper.call_at_sweep`: the
coalesced presence of :mod:`wschat.announcer`) run first in each round, so that the
frames they queue go out in the same round. It has no task of its own: it runs in
the task group of a connection that gave it work, and moves to another one's when
that connection ends.

A manager is normally served by one event loop, in one thread. When its connections
live in several (each ``websocket_connect`` of a Starlette ``TestClient`` used
without ``with`` runs in an event loop of its own, in a thread of its own), each loop
gets a sweeper of its own from :meth:`WriterSweeper.enter`, so that a sweep only ever
touches tasks of its own loop. Then, or once the manager is called from a thread
other than its loop's (:meth:`WriterSweeper.note_caller`: a sync route, which runs
in a worker thread; an HTTP route run in another loop; plain test code),
:data:`cross_thread` turns on and each sweeper's ``guard`` names its loop's thread:
a connection hands a call made from any other thread over to its own loop
(:meth:`WriterSweeper.call_soon`) instead of touching its tasks from there.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any, Final, Protocol, TypeAlias

import anyio
from anyio.lowlevel import checkpoint, current_token

__all__ = [
    "KICKS_PER_STEP",
    "SWEEP_INTERVAL",
    "Spawn",
    "Swept",
    "WriterSweeper",
    "cross_thread",
]

log = logging.getLogger("wschat")

#: How often the sweeper looks for idle writers; one waiting through two looks retires.
SWEEP_INTERVAL: Final = 0.1

#: A sweep starts at most this many writers for deferred frames before it lets them
#: run. Started all at once (a count-only ``presence`` frame to every member of a
#: room of 5,000), the writers' tasks would all be alive at the same time: the
#: cyclic GC's young collections would see them alive and move them to the oldest
#: generation, and every 25% growth of that generation costs a full collection
#: over every connection (in a storm of 5,000 joins: 9 full collections instead of
#: 7). A few dozen at a time, they have sent and ended before a collection sees
#: them. Frames a connection sends from the sweep itself, without a writer
#: (``Transport.try_send_text``), do not count: a checkpoint in a busy event loop
#: waits behind every ready callback, and the room's count would trail the storm.
KICKS_PER_STEP: Final = 64

#: Whether some manager in this process has been used from more than one thread.
#: Until then (always, under a server) ``Connection.put_nowait`` and ``abort`` skip
#: the thread check: one test of this flag is all they pay on the hot path.
cross_thread = False

#: Guards every manager's sweepers of other loops; taken on slow paths only (a new
#: event loop, the last connection of one, the first call from another thread).
_LOCK = threading.Lock()

#: Starts a task (``TaskGroup.start_soon``) in the task group serving a connection:
#: ``spawn(func, *args)`` runs ``func(*args)``.
Spawn: TypeAlias = Callable[..., object]


class Swept(Protocol):
    """What the sweeper needs of a :class:`~wschat.connection.Connection`."""

    @property
    def closing(self) -> object:
        """Why the connection is ending, once it is (None before)."""
        ...

    @property
    def spawn(self) -> Spawn | None:
        """Where the connection's tasks start (None unless it is served)."""
        ...

    def kick_deferred(self) -> bool:
        """Send the frames left for the sweep; whether a writer task was started."""
        ...

    def sweep(self) -> None:
        """Retire the connection's writer if it has waited since the last sweep."""
        ...


class WriterSweeper:
    """Retires the writers of idle connections and sends the frames left for it.

    An idle connection is then one task; frames left for the sweep are those queued
    with ``put_nowait(defer=True)``. One sweeper serves a manager's connections in
    one event loop. It runs as a task only while some writer runs or some frame waits
    for it, hosted by the task group of a connection that gave it work; if that
    connection ends first, the sweep moves to the task group of another connection it
    still has work for.
    """

    __slots__ = (
        "_call_hosts",
        "_calls",
        "_deferred",
        "_foreign",
        "_host",
        "_loop",
        "_nudge",
        "_others",
        "_root",
        "_running",
        "_schedule",
        "_sole_thread",
        "_soon",
        "_users",
        "_writers",
        "guard",
        "interval",
        "several",
        "thread",
    )

    def __init__(
        self,
        interval: float = SWEEP_INTERVAL,
        *,
        root: WriterSweeper | None = None,
        loop: object = None,
    ) -> None:
        self.interval = interval
        self._writers: set[Swept] = set()
        # Connections holding frames left for the next sweep (put_nowait(defer=True)).
        self._deferred: set[Swept] = set()
        # Calls left for the next sweep, and connections that could host the sweep
        # for them (call_at_sweep).
        self._calls: list[Callable[[], object]] = []
        # The shortest ``within`` asked of the calls since the sweep last slept,
        # and what wakes the sweep to look at it while it sleeps.
        self._soon: float | None = None
        self._nudge: anyio.Event | None = None
        self._call_hosts: set[Swept] = set()
        self._running = False
        # The spawn of the connection whose task group runs the sweep.
        self._host: Spawn | None = None
        # The event loop this sweeper serves (anyio's native token for it), how to
        # call into it from another thread, and how many connections made in it
        # are not yet released.
        self._loop: object = None
        self._schedule: Callable[..., object] | None = None
        self._users = 0
        #: The thread of the event loop this sweeper serves, once it serves one.
        self.thread: int | None = None
        #: :attr:`thread` while the manager is used from more than one thread
        #: (calls from other threads are then handed over); else None.
        self.guard: int | None = None
        # The rest is the manager's sweeper's alone: the sweepers of other loops;
        # whether the manager is used from several threads, and whether because
        # of a call from a thread that serves no connection; the thread of the one
        # loop serving connections, while there is exactly one.
        self._root = root
        self._others: dict[object, WriterSweeper] = {}
        #: Whether the manager is used from more than one thread.
        self.several = False
        self._foreign = False
        self._sole_thread: int | None = None
        if loop is not None:
            self._bind(loop)

    def __len__(self) -> int:
        others = list(self._others.values()) if self._others else ()
        return len(self._writers) + sum(len(other) for other in others)

    @property
    def running(self) -> bool:
        """Whether the sweep runs now (as a task: only while it has work)."""
        return self._running

    # -- one sweeper per event loop ----------------------------------------------------

    def enter(self) -> WriterSweeper:
        """Count a new connection made in the calling event loop; its sweeper.

        The manager's sweeper serves the first event loop a connection is made in
        (and the next one, once all of that loop's connections are released); any
        other loop gets a sweeper of its own. Called where the connection is made,
        in the task that serves it.

        Returns:
            The sweeper of the calling event loop (this one outside any loop).
        """
        try:
            loop = current_token().native_token
        except RuntimeError:  # no event loop here (a connection made in sync code)
            loop = None
        if loop is None or loop is self._loop:
            self._users += 1
            return self
        with _LOCK:
            sweeper = self._others.get(loop)
            if sweeper is None:
                if self._loop is None or not self.alive():
                    self._bind(loop)
                    sweeper = self
                else:
                    sweeper = WriterSweeper(self.interval, root=self, loop=loop)
                    self._others[loop] = sweeper
                self._rebalance()
        return sweeper.enter()  # this loop's now: counted there

    def note_caller(self) -> None:
        """Turn the thread guard on if called from a thread no connection lives in.

        The manager calls this first in the methods an application calls from
        anywhere (``broadcast_nowait``, ``send_to_user``, ``close_user``, ...). It
        costs one thread id while the manager serves one loop.
        """
        if self.several:
            return
        sole = self._sole_thread
        if sole is None or sole == threading.get_ident():
            return
        with _LOCK:
            self._foreign = True
            self._rebalance()

    def alive(self) -> bool:
        """Whether the event loop this sweeper serves still runs (takes calls)."""
        try:
            self.call_soon(_nothing, strict=True)
        except RuntimeError:
            return False
        return True

    def call_soon(
        self, func: Callable[..., object], *args: object, strict: bool = False
    ) -> None:
        """Run ``func(*args)`` in this sweeper's event loop soon, from any thread.

        Never waits: calls made from one thread run in the order made. A call to a
        loop that has ended is dropped (its connections ended with it), or raises
        ``RuntimeError`` with ``strict``.
        """
        schedule = self._schedule
        if schedule is None:
            func(*args)
            return
        try:
            schedule(func, *args)
        except RuntimeError:  # asyncio: the loop is closed; trio: RunFinishedError
            if strict:
                raise

    def drop_loop(self, loop: object) -> None:
        """Forget the sweeper of another loop once its connections are released."""
        with _LOCK:
            self._others.pop(loop, None)
            self._rebalance()

    def _bind(self, loop: object) -> None:
        self._loop = loop
        self.thread = threading.get_ident()
        # asyncio's loop.call_soon_threadsafe, or trio's TrioToken.run_sync_soon:
        # both run a callback in that loop soon, without waiting, in call order.
        # An asyncio callback runs outside any task, where anyio cannot start one
        # (it cannot tell which library runs it): there the callback starts a task
        # that makes the call. Tasks start in the order made, so calls keep theirs.
        # Either way the call runs in an empty context: the caller's may name
        # another async library (a trio thread calling into an asyncio loop).
        create_task = getattr(loop, "create_task", None)
        self._schedule = getattr(loop, "call_soon_threadsafe", None)
        if create_task is not None and self._schedule is not None:
            self._schedule = partial(_in_a_task, self._schedule, create_task)
        else:
            run_sync_soon = getattr(loop, "run_sync_soon", None)
            if run_sync_soon is not None:
                self._schedule = partial(_in_new_context, run_sync_soon)

    def _rebalance(self) -> None:
        """Set every sweeper's ``guard``: its thread while several are in use.

        Called with the lock held, on the manager's sweeper.
        """
        global cross_thread
        for loop, other in list(self._others.items()):
            if not other.alive():
                del self._others[loop]  # its connections ended with their loop
        sweepers = [*self._others.values()]
        if self._loop is not None:
            sweepers.append(self)
        several = self._foreign or len(sweepers) > 1
        self._sole_thread = sweepers[0].thread if len(sweepers) == 1 else None
        for sweeper in sweepers:
            sweeper.guard = sweeper.thread if several else None
        if several:
            cross_thread = True
        self.several = several

    def _leave(self) -> None:
        """Count a connection released; forget the loop once it holds none.

        Called in the loop's own thread, the only one that counts its connections.
        """
        self._users -= 1
        if self._users > 0 or self._loop is None:
            return
        if self._root is not None:
            self._root.drop_loop(self._loop)
            return
        with _LOCK:
            self._loop = self._schedule = self.thread = self.guard = None
            self._rebalance()

    def watch(self, conn: Swept, spawn: Spawn) -> None:
        """Track a connection whose writer just started; run the sweep if it is not."""
        self._writers.add(conn)
        self._ensure_running(spawn)

    def defer(self, conn: Swept) -> None:
        """Send ``conn``'s queued frames at the next sweep (run in ``conn``'s task
        group if none runs; its ``spawn`` is asked for only then: presence puts one
        frame into every member's outbox)."""
        self._deferred.add(conn)
        if not self._running:
            spawn = conn.spawn
            if spawn is not None:
                self._ensure_running(spawn)

    def call_at_sweep(
        self, func: Callable[[], object], host: Swept, within: float | None = None
    ) -> None:
        """Call ``func()`` at the start of the next sweep, before deferred frames go.

        Args:
            func: What to call, in this sweeper's event loop; what it raises is
                logged.
            host: A connection whose task group may run the sweep (when it runs
                none now); one not served yet hosts it from :meth:`adopt`.
            within: Call it at most this many seconds from now (or from the end
                of the sweep running now) rather than at the next whole sweep: an
                early wake runs the calls and sends the deferred frames, and
                leaves the writers to the next whole sweep. None: at the next
                sweep.
        """
        if within is not None and (self._soon is None or within < self._soon):
            self._soon = within
            nudge = self._nudge
            if nudge is not None:
                nudge.set()  # asleep: wake up to sleep less
        self._calls.append(func)
        self._call_hosts.add(host)
        spawn = host.spawn
        if spawn is not None:
            self._ensure_running(spawn)

    def adopt(self, conn: Swept) -> None:
        """A connection is served now: run the sweep in its task group if work waits."""
        spawn = conn.spawn
        if spawn is not None and not self._running and (self._calls or self._deferred):
            self._ensure_running(spawn)

    def _ensure_running(self, spawn: Spawn) -> None:
        if not self._running:
            try:
                spawn(self._run)
            except RuntimeError:  # that connection's task group is ending
                return
            self._running = True
            self._host = spawn

    def forget(self, conn: Swept) -> None:
        """Stop tracking a connection whose writer ended."""
        self._writers.discard(conn)

    def release(self, conn: Swept) -> None:
        """Forget a connection that has ended (it came from :meth:`enter`)."""
        self._writers.discard(conn)
        self._deferred.discard(conn)
        self._call_hosts.discard(conn)
        self._leave()

    async def _run(self) -> None:
        try:
            # When the next whole sweep (writers too) is due.
            whole = anyio.current_time() + self.interval
            while self._writers or self._deferred or self._calls:
                soon, self._soon = self._soon, None
                now = anyio.current_time()
                if soon is not None and now + soon < whole:
                    await anyio.sleep(soon)
                else:
                    self._nudge = nudge = anyio.Event()
                    with anyio.move_on_after(whole - now):
                        await nudge.wait()
                    self._nudge = None
                    if nudge.is_set():
                        continue  # asked for sooner: sleep that long instead
                if self._calls:
                    calls, self._calls = self._calls, []
                    self._call_hosts.clear()
                    for call in calls:
                        try:
                            call()
                        except Exception:
                            log.exception("wschat: a call left for the sweep raised")
                deferred, self._deferred = self._deferred, set()
                try:
                    started = 0
                    while deferred:
                        if deferred.pop().kick_deferred():
                            started += 1
                            if started % KICKS_PER_STEP == 0 and deferred:
                                # Let the writers just started send and end before
                                # starting more (see KICKS_PER_STEP).
                                await checkpoint()
                finally:
                    if deferred:  # cancelled between two steps: the next host's
                        self._deferred |= deferred
                if anyio.current_time() < whole:
                    continue  # an early wake (within): the writers wait
                for conn in list(self._writers):
                    conn.sweep()
                whole = anyio.current_time() + self.interval
        finally:
            self._running = False
            self._nudge = None
            host, self._host = self._host, None
            # Cancelled with the connection hosting it: go on in another one's task
            # group, or frames left for the sweep would wait for the next one.
            for conn in (*self._deferred, *self._writers, *self._call_hosts):
                spawn = conn.spawn
                if spawn is not None and spawn != host and conn.closing is None:
                    self._ensure_running(spawn)
                    if self._running:
                        break


def _nothing() -> None:
    pass


def _in_a_task(
    call_soon_threadsafe: Callable[..., object],
    create_task: Callable[[Coroutine[Any, Any, None]], object],
    func: Callable[..., object],
    *args: object,
) -> None:
    """Make ``func(*args)`` in a new task of an asyncio loop, from any thread."""
    coro = _call(func, args)
    try:
        call_soon_threadsafe(create_task, coro, context=contextvars.Context())
    except BaseException:
        coro.close()  # the loop is closed: never awaited, and not a warning either
        raise


def _in_new_context(
    run_sync_soon: Callable[..., object], func: Callable[..., object], *args: object
) -> None:
    """Make ``func(*args)`` in a trio loop, from any thread."""
    run_sync_soon(contextvars.Context().run, _logged, func, args)


async def _call(func: Callable[..., object], args: tuple[object, ...]) -> None:
    _logged(func, args)


def _logged(func: Callable[..., object], args: tuple[object, ...]) -> None:
    """Call ``func``; log what it raises (in trio, a raising callback ends the run)."""
    try:
        func(*args)
    except Exception:
        log.exception("wschat: a call handed over from another thread raised")
