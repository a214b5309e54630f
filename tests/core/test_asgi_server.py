"""wschat.asgi_server on real asyncio transports: bounding and dropping a connection.

The e2e tests (test_e2e_load.py, test_e2e_deployment.py) show the behaviour through
uvicorn; these pin the edges: a connection that is already gone is left alone, and
nothing is scheduled outside asyncio.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest
import trio

from tests.support.server_process import TCP_CLOSE, TCP_ESTABLISHED, tcp_state
from wschat.asgi_server import (
    UNSENT_LIMIT,
    SocketTransport,
    drop,
    drop_later,
    limit_unsent,
)


def with_connection(
    body: Callable[[asyncio.Transport, socket.socket], Awaitable[None]],
) -> None:
    """Run ``body(server_transport, client_socket)`` over a loopback connection."""

    async def main() -> None:
        accepted: asyncio.Future[asyncio.Transport] = asyncio.Future()

        class Server(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                assert isinstance(transport, asyncio.Transport)
                accepted.set_result(transport)

        server = await asyncio.get_running_loop().create_server(Server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        try:
            transport = await asyncio.wait_for(accepted, 5)
            await body(transport, client)
        finally:
            client.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def test_limit_unsent_sets_notsent_lowat() -> None:
    async def body(transport: asyncio.Transport, client: socket.socket) -> None:
        assert limit_unsent(transport)
        sock = transport.get_extra_info("socket")
        lowat = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT)
        assert lowat == UNSENT_LIMIT == 65536

    with_connection(body)


def test_drop_resets_an_open_connection_and_leaves_a_closed_one() -> None:
    async def body(transport: asyncio.Transport, client: socket.socket) -> None:
        assert tcp_state(client) == TCP_ESTABLISHED
        assert drop(transport)
        await asyncio.sleep(0.05)
        assert tcp_state(client) == TCP_CLOSE
        with pytest.raises(ConnectionResetError):  # a reset, not an end of stream
            client.recv(65536)
        # Gone already: nothing to drop, and no error.
        assert not drop(transport)

    with_connection(body)


def test_drop_later_drops_when_due() -> None:
    async def body(transport: asyncio.Transport, client: socket.socket) -> None:
        assert drop_later(transport, 0.2)
        await asyncio.sleep(0.1)
        assert tcp_state(client) == TCP_ESTABLISHED
        await asyncio.sleep(0.3)
        assert tcp_state(client) == TCP_CLOSE

    with_connection(body)


def test_a_connection_closed_gracefully_meanwhile_is_left_alone() -> None:
    async def body(transport: asyncio.Transport, client: socket.socket) -> None:
        assert drop_later(transport, 0.2)
        transport.close()  # nothing queued: it closes at once, with a FIN
        await asyncio.sleep(0.4)
        assert client.recv(10) == b""  # a clean end of stream, not a reset

    with_connection(body)


def test_nothing_is_scheduled_outside_asyncio() -> None:
    class Never:
        def get_extra_info(self, name: str, default: object = None) -> object:
            raise AssertionError("must not be touched")

        def is_closing(self) -> bool:
            raise AssertionError("must not be touched")

        def abort(self) -> None:
            raise AssertionError("must not be touched")

    async def main() -> bool:
        transport: SocketTransport = Never()
        return drop_later(transport, 0.01)

    assert trio.run(main) is False
