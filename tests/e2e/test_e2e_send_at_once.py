"""``AsgiTransport.try_send_text`` against the real uvicorn: which servers' ``send``
it drives without a task, and that a send it gives up on sent nothing.

A connection sends presence to an idle client from the sweep itself when the
transport takes the frame at once (wschat/connection.py, ``_send_queued_now``).
That is only right if a ``False`` really sent nothing: on uvicorn's
``websockets-sansio``, ``send`` waits for the socket to be writable *before* it
writes (wschat/asgi_server.py, ``sends_at_once``). These tests pin that against the
installed uvicorn: a client that stops reading makes ``try_send_text`` say False,
and once it reads again it gets every frame exactly once, in order.
"""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import connect

from tests.support.common import serve
from tests.support.server_process import WS_IMPLS
from wschat.asgi import AsgiTransport
from wschat.asgi_server import sends_at_once

pytestmark = pytest.mark.anyio

#: How many 1 KiB frames the server tries before it gives up on the socket filling.
MAX_FRAMES = 100_000


class Probe:
    """A raw ASGI app: accepts, then sends 1 KiB frames with ``try_send_text`` until
    one is not taken, then one more with ``send_text`` (which waits its turn)."""

    def __init__(self) -> None:
        self.at_once: bool | None = None
        self.taken = 0
        self.refused = threading.Event()
        self.done = threading.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        self.at_once = sends_at_once(send)
        transport = AsgiTransport(scope, receive, send)
        await transport.accept(None)
        pad = "x" * 1024
        for n in range(MAX_FRAMES):
            if not transport.try_send_text(f"{n} {pad}"):
                break
            self.taken += 1
        self.refused.set()
        await transport.send_text("last")
        self.done.set()
        await transport.receive()


@pytest.mark.parametrize("ws", WS_IMPLS)
async def test_only_uvicorn_sansio_sends_at_once(ws: str) -> None:
    probe = Probe()
    with serve(probe, ws=ws) as server:
        async with connect(f"{server.ws}/", max_queue=4) as client:
            # The server runs in a thread of its own: wait for it there.
            assert await anyio.to_thread.run_sync(probe.refused.wait, 10)
            assert probe.at_once is (ws == "websockets-sansio")
            if ws != "websockets-sansio":
                # Nothing is driven without a task there: every frame is sent
                # with send_text, by a writer.
                assert probe.taken == 0
            received = []
            with anyio.fail_after(10):
                while True:
                    text = str(await client.recv())
                    if text == "last":
                        break
                    received.append(int(text.split(" ", 1)[0]))
    # A client that stopped reading filled the socket: the send that would have
    # waited sent nothing, so every frame arrived once, in order, then "last".
    assert received == list(range(probe.taken))
    if ws == "websockets-sansio":
        assert 0 < probe.taken < MAX_FRAMES
