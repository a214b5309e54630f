"""A connection's messages in a pipelined history store, answered in frame order.

Imports: anyio and the standard library (core layer).

With a shared backplane and a store that queues an append at call time and
publishes it (``submit_and_publish``, as ``RedisHistoryStore`` has), a connection's
next message goes to the store before the previous one is answered
(``ConnectionManager.submit``). :class:`InFlight` holds those messages, at most
:data:`MAX_IN_FLIGHT` of one connection at once, and one task tells their outcomes
in the order the client sent them, as the frame loop does for a message it awaited.
Once the connection is closing, what is in the store is still answered, for at most
``close_timeout`` in all (and never past the connection's own close deadline, when a
close let a send in progress end first); what was not sent to the store yet never is.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

import anyio

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from .messages import Submitted

__all__ = ["MAX_IN_FLIGHT", "InFlight"]

#: Messages of one connection a pipelined history store may hold unanswered at once
#: (``ConnectionManager.history_pipelined``: a shared backplane and a store with
#: ``submit_and_publish``, such as ``RedisHistoryStore``). The frame loop reads the
#: connection's next frame while they are out, and waits when this many are.
MAX_IN_FLIGHT: Final = 8


class InFlight:
    """One connection's messages in a pipelined store, oldest first, and the task
    that tells their outcomes.

    Args:
        answer: Tells one message's outcome (its ``error`` frame, or the
            ``on_published`` hook); what it raises ends the reporting.
        failed: Told what ``answer`` raised (the connection is then closed).
        close_timeout: How long, once the connection is closing, the messages in
            the store may still be answered, in all.
        finish_by: Reads the connection's own close deadline, or None: when a
            close lets a send in progress end first (``Connection.finish_by``),
            the whole close ends by then, and so does the answering.
    """

    __slots__ = (
        "_answer",
        "_close_timeout",
        "_failed",
        "_finish_by",
        "_wake",
        "deadline",
        "queue",
        "reporting",
        "stopped",
    )

    def __init__(
        self,
        answer: Callable[[Submitted], Awaitable[None]],
        failed: Callable[[Exception], None],
        close_timeout: float,
        finish_by: Callable[[], float | None],
    ) -> None:
        self._answer = answer
        self._failed = failed
        self._close_timeout = close_timeout
        self._finish_by = finish_by
        self.queue: deque[Submitted] = deque()
        self.reporting = False
        self.stopped = False
        # Once the connection is closing: until when its messages in the store may
        # still be answered (close_timeout from then), on the event loop's clock.
        self.deadline: float | None = None
        self._wake: anyio.Event | None = None

    async def submit(self, tg: TaskGroup, submit: Callable[[], Submitted]) -> None:
        """Hand a message to the store (``submit()``: in frame order), once fewer
        than :data:`MAX_IN_FLIGHT` are unanswered; the first starts the reporting
        task in ``tg``.

        Raises:
            ValueError: The body cannot be encoded as JSON (as ``publish``).
        """
        while len(self.queue) >= MAX_IN_FLIGHT:
            await self.wait()
        self.queue.append(submit())
        self.notify()
        if not self.reporting:
            self.reporting = True
            tg.start_soon(self.report)

    async def report(self) -> None:
        """Tell each submitted message's outcome, in frame order, until
        :meth:`stop` and the queue is empty.

        What ``answer`` raises goes to ``failed``, and what was not sent to the
        store yet is not sent. A connection that closes otherwise (the client left,
        a kick, shutdown) still has what is in the store answered, for at most
        ``close_timeout``.
        """
        queue = self.queue
        try:
            try:
                while True:
                    if not queue:
                        if self.stopped:
                            return
                        await self.wait()
                        continue
                    await self._answer(queue[0])
                    queue.popleft()
                    self.notify()
            except anyio.get_cancelled_exc_class():
                with anyio.CancelScope(shield=True) as scope:
                    scope.deadline = self.closing()
                    while queue:
                        await self._answer(queue[0])
                        queue.popleft()
                raise
        except Exception as exc:
            self._failed(exc)
        finally:
            self.reporting = False
            for submitted in queue:
                submitted.cancel()
            queue.clear()
            self.notify()

    async def wait(self) -> None:
        """Until the next :meth:`notify`."""
        wake = self._wake
        if wake is None:
            wake = self._wake = anyio.Event()
        await wake.wait()

    def notify(self) -> None:
        """The queue changed: wake who waits."""
        wake, self._wake = self._wake, None
        if wake is not None:
            wake.set()

    async def drain(self) -> None:
        """Until every message submitted so far is reported."""
        while self.queue and self.reporting:
            await self.wait()

    def closing(self) -> float:
        """The connection is closing: the deadline for its messages in the store,
        ``close_timeout`` from the first call, or the connection's own close
        deadline (``finish_by``) if that is sooner."""
        if self.deadline is None:
            self.deadline = anyio.current_time() + self._close_timeout
        finish_by = self._finish_by()
        if finish_by is not None and finish_by < self.deadline:
            self.deadline = finish_by
        return self.deadline

    async def drain_closing(self) -> None:
        """:meth:`drain`, for at most ``close_timeout`` (the connection is
        closing): what the store has not answered by then is given up."""
        with anyio.CancelScope(deadline=self.closing()):
            await self.drain()

    def stop(self) -> None:
        """No more messages: the reporting task ends once the queue is empty."""
        self.stopped = True
        self.notify()
