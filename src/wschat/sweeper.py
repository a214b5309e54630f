"""The writer sweep: retires idle writers and sends frames left for it.

Imports: anyio and the standard library (core layer).

One :class:`WriterSweeper` serves a manager. Every :data:`SWEEP_INTERVAL` it retires
the writers of connections that waited a whole interval with nothing to send (so an
idle connection is one task), and sends the frames queued with
``Connection.put_nowait(defer=True)`` (presence) in one short writer run per client.
It has no task of its own: it runs in the task group of a connection that gave it
work, and moves to another one's when that connection ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final, TypeAlias

import anyio

if TYPE_CHECKING:
    from .connection import Connection

__all__ = ["SWEEP_INTERVAL", "Spawn", "WriterSweeper"]

#: How often the sweeper looks for idle writers; one waiting through two looks retires.
SWEEP_INTERVAL: Final = 0.1

#: Starts a task (``TaskGroup.start_soon``) in the task group serving a connection:
#: ``spawn(func, *args)`` runs ``func(*args)``.
Spawn: TypeAlias = Callable[..., object]


class WriterSweeper:
    """Retires the writers of idle connections and sends the frames left for it.

    An idle connection is then one task; frames left for the sweep are those queued
    with ``put_nowait(defer=True)``. One sweeper serves a manager. It runs as a task
    only while some writer runs or some frame waits for it, hosted by the task group
    of a connection that gave it work; if that connection ends first, the sweep moves
    to the task group of another connection it still has work for.
    """

    __slots__ = ("_deferred", "_host", "_running", "_writers", "interval")

    def __init__(self, interval: float = SWEEP_INTERVAL) -> None:
        self.interval = interval
        self._writers: set[Connection] = set()
        # Connections holding frames left for the next sweep (put_nowait(defer=True)).
        self._deferred: set[Connection] = set()
        self._running = False
        # The spawn of the connection whose task group runs the sweep.
        self._host: Spawn | None = None

    def __len__(self) -> int:
        return len(self._writers)

    def watch(self, conn: Connection, spawn: Spawn) -> None:
        """Track a connection whose writer just started; run the sweep if it is not."""
        self._writers.add(conn)
        self._ensure_running(spawn)

    def defer(self, conn: Connection, spawn: Spawn) -> None:
        """Send ``conn``'s queued frames at the next sweep."""
        self._deferred.add(conn)
        self._ensure_running(spawn)

    def _ensure_running(self, spawn: Spawn) -> None:
        if not self._running:
            try:
                spawn(self._run)
            except RuntimeError:  # that connection's task group is ending
                return
            self._running = True
            self._host = spawn

    def forget(self, conn: Connection) -> None:
        """Stop tracking a connection whose writer ended."""
        self._writers.discard(conn)

    def release(self, conn: Connection) -> None:
        """Forget a connection that has ended."""
        self._writers.discard(conn)
        self._deferred.discard(conn)

    async def _run(self) -> None:
        try:
            while self._writers or self._deferred:
                await anyio.sleep(self.interval)
                deferred, self._deferred = self._deferred, set()
                for conn in deferred:
                    conn.kick_deferred()
                for conn in list(self._writers):
                    conn.sweep()
        finally:
            self._running = False
            host, self._host = self._host, None
            # Cancelled with the connection hosting it: go on in another one's task
            # group, or frames left for the sweep would wait for the next one.
            for conn in (*self._deferred, *self._writers):
                spawn = conn.spawn
                if spawn is not None and spawn is not host and conn.closing is None:
                    self._ensure_running(spawn)
                    if self._running:
                        break
