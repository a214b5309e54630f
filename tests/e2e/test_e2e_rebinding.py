"""End to end: DNS rebinding passes the same-origin check; a Host check stops it.

A rebinding page sends ``Origin: http://evil.example:8000`` and ``Host:
evil.example:8000``: the same origin. The apps under test are built from the snippets
in docs/origin.md (FastAPI, Starlette, raw ASGI with ``TrustedHostMiddleware``), on a
real uvicorn, and on hypercorn for the raw ASGI app and hypercorn's own
``server_names``. The client connects to 127.0.0.1 while sending the Host header a
browser would send for the name in the URL.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from tests.e2e.test_e2e_servers import TrioHypercorn
from tests.support.common import SECRET, serve
from tests.support.e2e import Flavor, build_app, client, next_frame, token
from wschat import ConnectionManager, TokenVerifier

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

DOCS = Path(__file__).resolve().parents[2] / "docs"
ADAPTER = {"fastapi": "fastapi", "starlette": "starlette", "asgi": "asgi"}
#: What a rebinding page at http://evil.example:8000 sends.
EVIL_URL = "ws://evil.example:8000/ws/chat/lobby"
EVIL_ORIGIN = "http://evil.example:8000"
#: What the site's own page at http://chat.example.com sends.
OWN_URL = "ws://chat.example.com/ws/chat/lobby"
OWN_ORIGIN = "http://chat.example.com"


def docs_snippet(flavor: Flavor) -> str:
    """The python block of the DNS rebinding section that mounts ``flavor``."""
    text = (DOCS / "origin.md").read_text()
    start = text.index("## DNS rebinding")
    section = text[start : text.index("\n## ", start + 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    found = [b for b in blocks if f"from wschat.{ADAPTER[flavor]} import" in b]
    assert len(found) == 1, f"one {flavor} example in docs/origin.md"
    block: str = found[0]
    return block


def app_from_docs(flavor: Flavor) -> Any:
    namespace: dict[str, Any] = {
        "manager": ConnectionManager(),
        "verifier": TokenVerifier(SECRET, algorithms=["HS256"]),
    }
    exec(docs_snippet(flavor), namespace)
    return namespace["app"]


async def admitted(url: str, origin: str | None, port: int) -> bool:
    """Whether the handshake for ``url`` (sent to 127.0.0.1:port) gets ``ready``."""
    async with client(
        f"{url}?token={token('alice')}", origin=origin, host="127.0.0.1", port=port
    ) as ws:
        frame = await next_frame(ws, "ready")
        return bool(frame["user"] == "alice")


async def refused(url: str, origin: str | None, port: int) -> int:
    """The HTTP status that refused the handshake for ``url``."""
    with pytest.raises(InvalidStatus) as denied:
        await admitted(url, origin, port)
    status: int = denied.value.response.status_code
    return status


async def test_same_origin_alone_lets_a_rebinding_page_in(flavor: Flavor) -> None:
    # The open edge docs/origin.md describes: Origin and Host agree.
    app = build_app(flavor, ConnectionManager())
    with serve(app, log_config=None) as server:
        assert await admitted(EVIL_URL, EVIL_ORIGIN, server.port)


async def test_trusted_host_middleware_refuses_a_rebinding_host(flavor: Flavor) -> None:
    with serve(app_from_docs(flavor), log_config=None) as server:
        assert await refused(EVIL_URL, EVIL_ORIGIN, server.port) == 400
        # No Origin at all (a script) with a foreign Host: refused the same way.
        assert await refused(EVIL_URL, None, server.port) == 400
        # The site's own host and page still get in.
        assert await admitted(OWN_URL, OWN_ORIGIN, server.port)


async def test_hypercorn_with_trusted_host_middleware() -> None:
    with TrioHypercorn(app_from_docs("asgi")) as server:
        assert await refused(EVIL_URL, EVIL_ORIGIN, server.port) == 400
        assert await admitted(OWN_URL, OWN_ORIGIN, server.port)


async def test_hypercorn_server_names() -> None:
    server = TrioHypercorn(build_app("asgi", ConnectionManager()))
    server.config.server_names = ["chat.example.com"]
    with server:
        assert await refused(EVIL_URL, EVIL_ORIGIN, server.port) == 404
        assert await admitted(OWN_URL, OWN_ORIGIN, server.port)
        # The whole Host header is compared, port included.
        own_with_port = OWN_URL.replace(".com/", ".com:8080/")
        assert await refused(own_with_port, None, server.port) == 404


async def test_listed_origins_without_same_origin_refuse_it(flavor: Flavor) -> None:
    app = build_app(
        flavor,
        ConnectionManager(),
        allow_same_origin=False,
        allowed_origins=[OWN_ORIGIN],
    )
    with serve(app, log_config=None) as server:
        assert await refused(EVIL_URL, EVIL_ORIGIN, server.port) == 403
        assert await admitted(OWN_URL, OWN_ORIGIN, server.port)
