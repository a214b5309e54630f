"""Token deadlines: one heap per manager that ends connections at their ``exp``.

Imports: anyio and the standard library (core layer).

A connection's token stops being good at ``exp`` plus the leeway (its *cutoff*).
Before that, the client gets one ``token_expiring`` notice so that it can send a
fresh token (an ``auth`` frame) in time; at the cutoff it is closed with 4401
``token_expired``, whether it sends anything or only listens. A refresh moves both.

Nothing here costs a task per connection. :class:`DeadlineHeap` is a binary min-heap
indexed by key: add, move and remove are O(log n), the next deadline is O(1).
:class:`Deadlines` holds one for a manager's connections and runs one sweep task,
only while some deadline is set, hosted like the writer sweep
(:mod:`wschat.sweeper`) by the task group of a connection it serves (it moves to
another one's when that connection ends). The sweep sleeps until the earliest
deadline, not on a fixed tick: a connection is closed at its cutoff, not up to an
interval later. Each connection holds one heap entry: its notice time until the
notice is sent, then its cutoff.

The cutoff is also kept on the connection (``cutoff``), and its writer sends nothing
once it has passed: frames queued before the cutoff but not written by then never
reach the client, whichever task runs first at that moment.

Times are Unix seconds (``time.time()``), like ``exp``: the sweep converts them to a
sleep in the running event loop's own clock, so connections of several event loops
(a ``TestClient`` without ``with``) share one heap; a lock keeps it whole there.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from typing import Final, Generic, Protocol, TypeVar

import anyio

from .auth import Principal
from .errors import TokenExpired, WSChatError
from .protocol import encode_token_expiring

__all__ = [
    "DEFAULT_EXPIRY_NOTICE",
    "EXPIRED",
    "MAX_EXPIRY_LEEWAY",
    "NOTICE_RETRY",
    "DeadlineHeap",
    "Deadlines",
    "Expiring",
    "Schedule",
    "schedule",
]

#: Seconds before ``exp`` at which ``token_expiring`` is sent, by default (half the
#: token's lifetime for tokens that live less than twice that).
DEFAULT_EXPIRY_NOTICE: Final = 60.0
#: The leeway past ``exp`` of a live connection is the verifier's, but never more.
MAX_EXPIRY_LEEWAY: Final = 5.0
#: The words of the 4401 ``token_expired`` that ends a live connection.
EXPIRED: Final = "token expired; send an auth frame before exp"
#: A notice due while the connection still waits to join its room (its ``ready``
#: frame must come first) is tried again this many seconds later.
NOTICE_RETRY: Final = 0.05

K = TypeVar("K", bound=Hashable)


class _Entry(Generic[K]):
    __slots__ = ("index", "key", "when")

    def __init__(self, key: K, when: float, index: int) -> None:
        self.key = key
        self.when = when
        self.index = index


class DeadlineHeap(Generic[K]):
    """A min-heap of ``(when, key)``, one entry per key, indexed by key.

    ``set`` adds or moves a key's deadline and ``discard`` removes it, both in
    O(log n); ``next_at`` is the earliest deadline in O(1); ``pop_due`` takes the
    keys whose deadline has come, earliest first. No I/O, no clock: the caller says
    what time it is.
    """

    __slots__ = ("_heap", "_where")

    def __init__(self) -> None:
        self._heap: list[_Entry[K]] = []
        self._where: dict[K, _Entry[K]] = {}

    def __len__(self) -> int:
        return len(self._heap)

    def __contains__(self, key: object) -> bool:
        return key in self._where

    def __iter__(self) -> Iterator[K]:
        return iter(self._where)

    def when(self, key: K) -> float | None:
        """``key``'s deadline, or None if it has none."""
        entry = self._where.get(key)
        return None if entry is None else entry.when

    def next_at(self) -> float | None:
        """The earliest deadline, or None if the heap is empty."""
        heap = self._heap
        return heap[0].when if heap else None

    def set(self, key: K, when: float) -> None:
        """Give ``key`` the deadline ``when`` (add it, or move it)."""
        if math.isnan(when):
            raise ValueError("a deadline must be a number, not nan")
        entry = self._where.get(key)
        if entry is None:
            entry = _Entry(key, when, len(self._heap))
            self._heap.append(entry)
            self._where[key] = entry
            self._up(entry.index)
            return
        earlier = when < entry.when
        entry.when = when
        if earlier:
            self._up(entry.index)
        else:
            self._down(entry.index)

    def discard(self, key: K) -> bool:
        """Remove ``key``'s deadline; False if it had none."""
        entry = self._where.pop(key, None)
        if entry is None:
            return False
        heap = self._heap
        last = heap.pop()
        if last is not entry:
            index = entry.index
            heap[index] = last
            last.index = index
            self._up(index)
            self._down(last.index)
        return True

    def pop_due(self, now: float) -> list[tuple[K, float]]:
        """Remove and return the keys due at ``now`` (deadline <= now), earliest
        first."""
        heap = self._heap
        due: list[tuple[K, float]] = []
        while heap and heap[0].when <= now:
            entry = heap[0]
            self.discard(entry.key)
            due.append((entry.key, entry.when))
        return due

    def _up(self, index: int) -> None:
        heap = self._heap
        entry = heap[index]
        while index:
            parent = (index - 1) >> 1
            above = heap[parent]
            if above.when <= entry.when:
                break
            heap[index] = above
            above.index = index
            index = parent
        heap[index] = entry
        entry.index = index

    def _down(self, index: int) -> None:
        heap = self._heap
        size = len(heap)
        entry = heap[index]
        while True:
            child = 2 * index + 1
            if child >= size:
                break
            right = child + 1
            if right < size and heap[right].when < heap[child].when:
                child = right
            below = heap[child]
            if entry.when <= below.when:
                break
            heap[index] = below
            below.index = index
            index = child
        heap[index] = entry
        entry.index = index


class Schedule(tuple[float | None, float]):
    """When a token's notice is due (None: none) and when its connection is cut off."""

    __slots__ = ()

    def __new__(cls, notice_at: float | None, cutoff: float) -> Schedule:
        return super().__new__(cls, (notice_at, cutoff))

    @property
    def notice_at(self) -> float | None:
        """When to send ``token_expiring`` (Unix seconds), or None for no notice."""
        return self[0]

    @property
    def cutoff(self) -> float:
        """When the connection ends with ``token_expired`` (Unix seconds)."""
        return self[1]


def schedule(
    exp: float,
    *,
    now: float,
    leeway: float,
    notice: float | None,
    issued_at: float | None = None,
) -> Schedule:
    """A token's notice time and cutoff (pure).

    Args:
        exp: The token's ``exp``.
        now: The time of verification.
        leeway: Seconds past ``exp`` the connection may live, capped at
            :data:`MAX_EXPIRY_LEEWAY`.
        notice: Seconds before ``exp`` to send the notice; None for no notice.
        issued_at: The token's ``iat`` if it has one (not in the future): a token
            living less than twice ``notice`` gets its notice half-way through its
            lifetime, counted from ``iat`` (else from ``now``).

    Returns:
        The notice time (None if ``notice`` is None) and the cutoff.
    """
    cutoff = exp + min(max(leeway, 0.0), MAX_EXPIRY_LEEWAY)
    if notice is None:
        return Schedule(None, cutoff)
    start = now if issued_at is None or issued_at > now else issued_at
    lifetime = max(exp - start, 0.0)
    return Schedule(exp - min(notice, lifetime / 2), cutoff)


class Expiring(Hashable, Protocol):
    """What :class:`Deadlines` needs of a :class:`~wschat.connection.Connection`."""

    #: The moment (Unix seconds) after which nothing is written to this client.
    cutoff: float | None

    @property
    def principal(self) -> Principal:
        """Who the token says this is (its ``exp`` goes into the notice)."""
        ...

    @property
    def closing(self) -> WSChatError | None:
        """Why the connection is ending, once it is."""
        ...

    @property
    def spawn(self) -> Callable[..., object] | None:
        """Where the connection's tasks start (None unless it is served)."""
        ...

    def put_nowait(self, frame: str) -> bool:
        """Queue a frame for the client."""
        ...

    def abort(self, error: WSChatError | None) -> None:
        """Close the connection with ``error``."""
        ...

    def call_soon(self, func: Callable[..., object], *args: object) -> None:
        """Run ``func(*args)`` in the event loop serving the connection."""
        ...


E = TypeVar("E", bound=Expiring)


class Deadlines(Generic[E]):
    """The token deadlines of one manager's connections, and the one sweep task.

    Args:
        joined: Whether a connection has joined its room (its ``ready`` frame is
            queued): a notice waits for it.
        clock: The time in Unix seconds (tests pass a fake one).
    """

    __slots__ = (
        "_clock",
        "_heap",
        "_host",
        "_joined",
        "_lock",
        "_running",
        "_sleep",
        "_sleep_until",
        "fired",
    )

    def __init__(
        self,
        joined: Callable[[E], bool] = lambda conn: True,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._heap: DeadlineHeap[E] = DeadlineHeap()
        self._joined = joined
        self._clock = clock
        self._lock = threading.Lock()
        self._running = False
        self._host: E | None = None
        # The sweep's sleep, and the deadline it sleeps until: a deadline set
        # earlier than that wakes it.
        self._sleep: anyio.CancelScope | None = None
        self._sleep_until = math.inf
        #: How many notices and closes the sweep made (for stats and tests).
        self.fired = 0

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def running(self) -> bool:
        """Whether the sweep task runs now (only while a deadline is set)."""
        return self._running

    def when(self, conn: E) -> float | None:
        """The connection's next deadline (its notice, then its cutoff), or None."""
        with self._lock:
            return self._heap.when(conn)

    def track(self, conn: E, plan: Schedule | None) -> None:
        """Set (or move, on a refresh) a connection's notice and cutoff.

        Call it from the task serving ``conn`` once it is open. ``plan`` None (a
        token without ``exp``) clears them.
        """
        if plan is None:
            conn.cutoff = None
            self.discard(conn)
            return
        conn.cutoff = plan.cutoff
        notice = plan.notice_at
        first = plan.cutoff if notice is None or notice >= plan.cutoff else notice
        with self._lock:
            self._heap.set(conn, first)
            start = not self._running
            if start:
                self._running = True
                self._host = conn
            wake = first < self._sleep_until
        if start:
            self._start(conn)
        elif wake:
            self._wake_host()

    def discard(self, conn: E) -> None:
        """Forget a connection (it ended). Idempotent."""
        with self._lock:
            self._heap.discard(conn)

    def fire_due(self, now: float) -> float | None:
        """Send the notices and make the closes due at ``now``; the next deadline.

        What the sweep task does when it wakes; public so that a test with a fake
        clock can drive it.
        """
        with self._lock:
            due = self._heap.pop_due(now)
        for conn, when in due:
            self._fire(conn, when, now)
        with self._lock:
            return self._heap.next_at()

    def _fire(self, conn: E, when: float, now: float) -> None:
        cutoff = conn.cutoff
        if cutoff is None or conn.closing is not None:
            return
        if when < cutoff and now < cutoff:
            if not self._joined(conn):
                # Its ready frame is not queued yet: the notice comes after it.
                retry = min(now + NOTICE_RETRY, cutoff)
                with self._lock:
                    self._heap.set(conn, retry)
                return
            exp = conn.principal.expires_at
            if exp is not None:
                conn.put_nowait(encode_token_expiring(exp))
            self.fired += 1
            with self._lock:
                self._heap.set(conn, cutoff)
            return
        self.fired += 1
        conn.abort(TokenExpired(EXPIRED))

    # -- the sweep task ----------------------------------------------------------------

    def _start(self, host: E) -> None:
        """Start the sweep in ``host``'s task group (from ``host``'s own loop)."""
        spawn = host.spawn
        if spawn is not None and host.closing is None:
            try:
                spawn(self._run, host)
                return
            except RuntimeError:  # its task group is ending
                pass
        with self._lock:
            self._running = False
            self._host = None
        self._rehost(host)

    def _wake_host(self) -> None:
        host = self._host
        if host is not None:
            host.call_soon(self._wake)

    def _wake(self) -> None:
        scope = self._sleep
        if scope is not None:
            scope.cancel()

    async def _run(self, host: E) -> None:
        try:
            while True:
                next_at = self.fire_due(self._clock())
                if next_at is None:
                    with self._lock:
                        if not len(self._heap):
                            self._running = False
                            self._host = None
                            return
                    continue
                delay = next_at - self._clock()
                if delay <= 0:
                    continue
                with anyio.CancelScope() as scope:
                    scope.deadline = anyio.current_time() + delay
                    with self._lock:
                        self._sleep = scope
                        self._sleep_until = next_at
                    await anyio.sleep_forever()
                with self._lock:
                    self._sleep = None
                    self._sleep_until = math.inf
        finally:
            with self._lock:
                self._sleep = None
                self._sleep_until = math.inf
                stopped = self._host is host and self._running
                if stopped:
                    self._running = False
                    self._host = None
            if stopped:
                # Cancelled with the connection hosting it: go on in another one's.
                self._rehost(host)

    def _rehost(self, gone: E) -> None:
        """Start the sweep in the task group of another connection that has a
        deadline, in that connection's event loop."""
        with self._lock:
            if self._running:
                return
            candidate = next(
                (
                    conn
                    for conn in self._heap
                    if conn is not gone
                    and conn.spawn is not None
                    and conn.closing is None
                ),
                None,
            )
            if candidate is None:
                return
            self._running = True
            self._host = candidate
        candidate.call_soon(self._start, candidate)
