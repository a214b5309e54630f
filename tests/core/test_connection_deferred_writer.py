"""Deferred frames (presence) and the writer, on asyncio and trio: a connection that
gets a deferred frame at sweep after sweep keeps one writer task, woken per sweep,
instead of a new task per frame (what a member of a big room gets during a join storm:
a count-only presence frame every interval); the sweep retires it once idle.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import pytest
from anyio.abc import TaskGroup

from tests.support.common import FakeTransport
from tests.support.core import frame, make_conn, wait_until
from wschat.errors import NormalClosure
from wschat.sweeper import WriterSweeper

pytestmark = pytest.mark.anyio


class CountingGroup:
    """A task group that counts the tasks started in it, by the function's name."""

    def __init__(self, tg: TaskGroup) -> None:
        self.tg = tg
        self.cancel_scope = tg.cancel_scope
        self.started: list[str] = []

    def start_soon(
        self,
        func: Callable[..., Coroutine[Any, Any, Any]],
        *args: object,
        name: object = None,
    ) -> None:
        self.tg.start_soon(func, *args, name=name)
        self.started.append(getattr(func, "__name__", "?"))


async def test_deferred_frames_at_every_sweep_reuse_one_writer() -> None:
    sweeper = WriterSweeper(interval=0.05)
    conn = make_conn(sweeper=sweeper)
    transport = FakeTransport()
    async with anyio.create_task_group() as tg:
        group = CountingGroup(tg)
        await conn.open(transport, group)  # type: ignore[arg-type]
        assert not conn.writing
        for i in range(6):
            # Deferred: nothing starts now; the next sweep sends it.
            assert conn.put_nowait(frame(i), defer=True)
            with anyio.fail_after(5):
                assert await transport.next_text() == frame(i)
        # Six frames, six sweeps, one writer task (it waited between them).
        assert group.started.count("_write") == 1
        # Nothing more: the sweep retires it, and the connection holds no task.
        await wait_until(lambda: not conn.writing)
        assert len(sweeper) == 0
        # The next deferred frame starts a writer again.
        assert conn.put_nowait(frame(6), defer=True)
        with anyio.fail_after(5):
            assert await transport.next_text() == frame(6)
        assert group.started.count("_write") == 2
        assert conn.sent == 7
        conn.abort(NormalClosure())
    transport.aclose_streams()


async def test_deferred_frames_still_wait_for_the_sweep_with_a_writer_waiting() -> None:
    # A writer waiting for more does not send a deferred frame at once: the frames
    # of one interval still leave together, at the sweep.
    sweeper = WriterSweeper(interval=0.2)
    conn = make_conn(sweeper=sweeper)
    transport = FakeTransport()
    async with anyio.create_task_group() as tg:
        await conn.open(transport, tg)
        assert conn.put_nowait(frame(0), defer=True)
        with anyio.fail_after(5):
            assert await transport.next_text() == frame(0)
        assert conn.writing  # waiting, not retired
        assert conn.put_nowait(frame(1), defer=True)
        assert conn.put_nowait(frame(2), defer=True)
        await anyio.sleep(0.01)
        assert conn.queued == 2  # left for the sweep
        with anyio.fail_after(5):
            assert await transport.next_text() == frame(1)
            assert await transport.next_text() == frame(2)
        conn.abort(NormalClosure())
    transport.aclose_streams()
