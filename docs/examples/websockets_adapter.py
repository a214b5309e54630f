# docs/examples/websockets_adapter.py
"""wschat on the ``websockets`` server, without ASGI: a complete adapter.

Run it with: python websockets_adapter.py
It serves ws://127.0.0.1:8765/ws/chat/{chat_id}?token=<JWT> (WSCHAT_PORT sets the port).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from wschat import ChatOptions, ConnectionManager, GoingAway, TokenVerifier
from wschat.endpoint import ChatEndpoint
from wschat.logfilter import install_filter
from wschat.transport import Handshake, TransportClosed

# DEVELOPMENT FALLBACK ONLY. In production set WSCHAT_SECRET to a random string of
# at least 32 bytes: python -c 'import secrets; print(secrets.token_urlsafe(64))'
SECRET = os.environ.get("WSCHAT_SECRET", "dev-only-secret-never-use-in-production-000")
PREFIX = "/ws/chat/"


class WebsocketsTransport:
    """A wschat Transport over one websockets connection, from its handshake on."""

    def __init__(self, connection: ServerConnection) -> None:
        self.connection = connection
        loop = asyncio.get_running_loop()
        #: How to answer the handshake: None to accept it, or an HTTP response.
        self.answer: asyncio.Future[Response | None] = loop.create_future()
        #: Set by the handler once websockets has completed the handshake.
        self.opened: asyncio.Future[None] = loop.create_future()
        self.subprotocol: str | None = None
        self.served: asyncio.Task[None] | None = None

    async def accept(self, subprotocol: str | None) -> None:
        self.subprotocol = subprotocol
        self.answer.set_result(None)
        # websockets completes the handshake, then calls the handler, or the
        # client leaves before that.
        lost = asyncio.ensure_future(self.connection.wait_closed())
        await asyncio.wait([self.opened, lost], return_when=asyncio.FIRST_COMPLETED)
        lost.cancel()
        if not self.opened.done():
            raise TransportClosed()

    async def deny(self, status: int, body: str | None) -> None:
        self.answer.set_result(self.connection.respond(status, body or ""))

    async def receive(self) -> str | bytes | None:
        try:
            return await self.connection.recv()
        except ConnectionClosed:
            return None

    async def send_text(self, text: str) -> None:
        try:
            await self.connection.send(text)
        except ConnectionClosed as exc:
            raise TransportClosed() from exc

    async def send_many(self, texts: Sequence[str]) -> None:
        try:
            for text in texts:
                await self.connection.send(text)
        except ConnectionClosed as exc:
            raise TransportClosed() from exc

    async def close(self, code: int, reason: str) -> None:
        await self.connection.close(code, reason)


def handshake(connection: ServerConnection, request: Request) -> Handshake:
    """What the endpoint needs to know about the request, read once."""
    url = urlsplit(request.path)
    headers: dict[str, str] = {}
    for name, value in request.headers.raw_items():
        headers.setdefault(name.lower(), value)  # the first value of each
    offered = [
        part.strip()
        for value in request.headers.get_all("Sec-WebSocket-Protocol")
        for part in value.split(",")
        if part.strip()
    ]
    host, port = connection.remote_address[:2]
    return Handshake(
        chat_id=unquote(url.path[len(PREFIX) :]),
        query_string=url.query.encode("latin-1"),
        headers=headers,
        subprotocols=offered,
        scheme="ws",
        client=f"{host}:{port}",
    )


class WebsocketsAdapter:
    """Serves the endpoint on a websockets server: one task per connection."""

    def __init__(self, endpoint: ChatEndpoint) -> None:
        self.endpoint = endpoint
        self.transports: dict[ServerConnection, WebsocketsTransport] = {}

    async def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        if not urlsplit(request.path).path.startswith(PREFIX):
            return connection.respond(404, "not found\n")
        transport = WebsocketsTransport(connection)
        self.transports[connection] = transport
        # The endpoint decides (accept or deny) while websockets waits for the answer.
        transport.served = asyncio.create_task(
            self.endpoint.serve(handshake(connection, request), transport)
        )
        transport.served.add_done_callback(
            lambda _: self.transports.pop(connection, None)
        )
        return await transport.answer

    def select_subprotocol(
        self, connection: ServerConnection, offered: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        chosen = self.transports[connection].subprotocol
        return Subprotocol(chosen) if chosen else None

    async def handler(self, connection: ServerConnection) -> None:
        transport = self.transports[connection]
        transport.opened.set_result(None)
        assert transport.served is not None
        await transport.served  # the endpoint serves the socket to its close


def chat_server(
    manager: ConnectionManager,
    verifier: TokenVerifier,
    options: ChatOptions | None = None,
    port: int = 8765,
) -> Server:
    """A websockets server for the chat; ``async with`` runs it."""
    endpoint = ChatEndpoint(manager, verifier, options or ChatOptions())
    adapter = WebsocketsAdapter(endpoint)
    # Print no token at debug level: websockets logs each request line and header.
    install_filter()
    return serve(
        adapter.handler,
        "127.0.0.1",
        port,
        process_request=adapter.process_request,
        select_subprotocol=adapter.select_subprotocol,
        # The server's own limit on a message, set to wschat's (64 KiB by default).
        max_size=endpoint.options.max_message_bytes,
    )


async def main() -> None:
    manager = ConnectionManager()
    verifier = TokenVerifier(SECRET, algorithms=["HS256"])
    port = int(os.environ.get("WSCHAT_PORT", "8765"))
    async with manager, chat_server(manager, verifier, port=port) as server:
        try:
            await server.serve_forever()
        finally:
            manager.close_all(GoingAway())


if __name__ == "__main__":
    asyncio.run(main())
