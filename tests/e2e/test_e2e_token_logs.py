"""No token in any log line, exception text or repr, on every path a token takes.

Real servers in a subprocess, as a deployment runs them: uvicorn at
``--log-level debug`` and ``trace`` (each WebSocket implementation) and hypercorn at
``--log-level debug`` with an access log that prints every header that can hold a
token; wschat's own loggers at DEBUG on a handler with no redacting filter
(:mod:`tests.support.token_log_apps`). For each token source (``Authorization``
header, cookie, query, ``bearer.`` subprotocol, ``auth`` frame), a unique token per
path: accepted then refreshed, refused (bad signature), expired at connect and
while connected (4401 ``token_expired`` from the live deadline), revoked (the
``is_revoked`` deny-list at connect and at refresh, and
``manager.revoke_user`` through a route), and crashing hooks (the verifier,
``is_revoked`` and ``authorize`` raise: 1011). The server's whole output, and every
close reason and frame the clients received, are then searched for each token, its
payload part and its signature part.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import httpx
import jwt
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.support.common import SECRET, free_port
from tests.support.e2e import WAIT, client
from tests.support.log_servers import Subprocess
from tests.support.token_log_apps import ORIGIN

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

Source = Literal["header", "cookie", "query", "subprotocol", "auth_frame"]
SOURCES: tuple[Source, ...] = ("header", "cookie", "query", "subprotocol", "auth_frame")
#: Signs the refused tokens: a valid JWT, the wrong key.
OTHER_SECRET = "another-secret-of-at-least-32-bytes!!"


def unique(user: str, *, key: str = SECRET, **claims: Any) -> str:
    """A token no other test sends: its own ``jti``."""
    ttl = claims.pop("ttl", 3600)
    claims.setdefault("jti", uuid.uuid4().hex)
    return jwt.encode(
        {"sub": user, "iat": int(time.time()), "exp": int(time.time() + ttl), **claims},
        key,
        algorithm="HS256",
    )


def parts(tok: str) -> list[str]:
    """What must not show: the token, its payload part and its signature part."""
    _, payload, signature = tok.split(".")
    return [tok, payload, signature]


@dataclass
class Seen:
    """Every token sent, and every close reason and frame the clients received."""

    tokens: list[str] = field(default_factory=list)
    received: list[str] = field(default_factory=list)
    by_user: dict[str, list[str]] = field(default_factory=dict)

    def new(self, user: str, **claims: Any) -> str:
        tok = unique(user, **claims)
        self.tokens.append(tok)
        self.by_user.setdefault(user, []).append(tok)
        return tok

    def leaks(self, text: str) -> list[str]:
        return [p for tok in self.tokens for p in parts(tok) if p in text]


class Site:
    """One running server: how to connect with a token in a given source."""

    def __init__(self, port: int, seen: Seen) -> None:
        self.port = port
        self.seen = seen

    @contextlib.asynccontextmanager
    async def open(
        self, where: Source, tok: str, room: str = "room1"
    ) -> AsyncIterator[ClientConnection]:
        """A client that sent ``tok`` in ``where``."""
        url = f"ws://127.0.0.1:{self.port}/ws/chat/{room}"
        subprotocols = ["wschat.v1"]
        headers: list[tuple[str, str]] = []
        if where == "query":
            url += f"?token={tok}"
        elif where == "header":
            headers.append(("Authorization", f"Bearer {tok}"))
        elif where == "cookie":
            headers.append(("Cookie", f"theme=dark; wschat_token={tok}"))
        elif where == "subprotocol":
            subprotocols.append(f"bearer.{tok}")
        async with client(
            url,
            origin=ORIGIN,
            subprotocols=subprotocols,
            additional_headers=headers or None,
        ) as ws:
            if where == "auth_frame":
                await ws.send(json.dumps({"type": "auth", "token": tok}))
            yield ws

    async def frames_until_close(
        self, ws: ClientConnection, seconds: float = WAIT
    ) -> tuple[int, str, list[dict[str, Any]]]:
        frames: list[dict[str, Any]] = []
        ended: ConnectionClosed | None = None
        with anyio.fail_after(seconds):
            while ended is None:
                try:
                    raw = await ws.recv()
                except ConnectionClosed as exc:
                    ended = exc
                else:
                    self.seen.received.append(str(raw))
                    frames.append(json.loads(raw))
        assert ended.rcvd is not None, f"no close frame ({ended!r})"
        self.seen.received.append(ended.rcvd.reason)
        return ended.rcvd.code, ended.rcvd.reason, frames

    async def frame(self, ws: ClientConnection, kind: str) -> dict[str, Any]:
        with anyio.fail_after(WAIT):
            while True:
                raw = await ws.recv()
                self.seen.received.append(str(raw))
                frame: dict[str, Any] = json.loads(raw)
                if frame["type"] == kind:
                    return frame

    async def refused(self, where: Source, tok: str) -> tuple[int, str]:
        """Connect with a token the server refuses: the close code and reason."""
        async with self.open(where, tok) as ws:
            code, reason, frames = await self.frames_until_close(ws)
        assert not [f for f in frames if f["type"] == "ready"], frames
        return code, reason

    async def revoke(self, user: str) -> int:
        async with httpx.AsyncClient(timeout=WAIT) as http:
            answer = await http.post(
                f"http://127.0.0.1:{self.port}/admin/revoke/{user}"
            )
        assert answer.status_code == 200, answer.text
        closed: int = answer.json()["closed"]
        return closed


async def accepted_and_refreshed(site: Site, where: Source) -> None:
    user = f"ok-{where}"
    async with site.open(where, site.seen.new(user)) as ws:
        ready = await site.frame(ws, "ready")
        assert ready["user"] == user
        await ws.send(json.dumps({"type": "message", "body": "hello"}))
        await site.frame(ws, "message")
        # A refresh through an ``auth`` frame, with another unique token.
        await ws.send(json.dumps({"type": "auth", "token": site.seen.new(user)}))
        assert (await site.frame(ws, "auth"))["ok"] is True
        # A token sent the wrong way: as a bare text frame, and as the type.
        await ws.send(site.seen.new(user))
        assert (await site.frame(ws, "error"))["code"] == "bad_json"
        await ws.send(json.dumps({"type": site.seen.new(user)}))
        assert (await site.frame(ws, "error"))["code"] == "unknown_type"
        await ws.send(json.dumps({"type": "ping", "id": 1}))
        await site.frame(ws, "pong")


async def refresh_refused(site: Site, where: Source) -> None:
    """A refresh with a bad signature closes the connection (no error frame)."""
    user = f"badrefresh-{where}"
    async with site.open(where, site.seen.new(user)) as ws:
        await site.frame(ws, "ready")
        bad = unique(user, key=OTHER_SECRET)
        site.seen.tokens.append(bad)
        await ws.send(json.dumps({"type": "auth", "token": bad}))
        code, reason, _ = await site.frames_until_close(ws)
    assert (code, reason.split(":")[0]) == (4401, "token_invalid"), reason


async def refused_bad_signature(site: Site, where: Source) -> None:
    bad = unique(f"bad-{where}", key=OTHER_SECRET)
    site.seen.tokens.append(bad)
    code, reason = await site.refused(where, bad)
    assert (code, reason.split(":")[0]) == (4401, "token_invalid"), reason


async def expired_at_connect(site: Site, where: Source) -> None:
    tok = site.seen.new(f"old-{where}", ttl=-60)
    code, reason = await site.refused(where, tok)
    assert (code, reason.split(":")[0]) == (4401, "token_expired"), reason


async def expires_while_connected(site: Site, where: Source) -> None:
    """A 5-second token (4 s at least once sent, ``exp`` being whole seconds): the
    ``token_expiring`` notice, then 4401 token_expired from the live deadline."""
    async with site.open(where, site.seen.new(f"short-{where}", ttl=5)) as ws:
        await site.frame(ws, "ready")
        code, reason, frames = await site.frames_until_close(ws, seconds=15)
    assert (code, reason.split(":")[0]) == (4401, "token_expired"), reason
    assert "token_expiring" in [f["type"] for f in frames], frames


async def revoked_at_connect(site: Site, where: Source) -> None:
    tok = site.seen.new(f"denied-{where}", jti=f"deny-{uuid.uuid4().hex}")
    code, reason = await site.refused(where, tok)
    assert (code, reason.split(":")[0]) == (4401, "token_revoked"), reason


async def revoked_at_refresh(site: Site, where: Source) -> None:
    user = f"denied-later-{where}"
    async with site.open(where, site.seen.new(user)) as ws:
        await site.frame(ws, "ready")
        denied = site.seen.new(user, jti=f"deny-{uuid.uuid4().hex}")
        await ws.send(json.dumps({"type": "auth", "token": denied}))
        code, reason, _ = await site.frames_until_close(ws)
    assert (code, reason.split(":")[0]) == (4401, "token_revoked"), reason


async def revoked_by_the_server(site: Site, where: Source) -> None:
    user = f"kicked-{where}"
    async with site.open(where, site.seen.new(user)) as ws:
        await site.frame(ws, "ready")
        assert await site.revoke(user) == 1
        code, reason, _ = await site.frames_until_close(ws)
    assert (code, reason.split(":")[0]) == (4401, "token_revoked"), reason


async def crashing_hooks(site: Site, where: Source) -> None:
    for hook in ("verify", "introspect", "is_revoked", "authorize"):
        tok = site.seen.new(f"crash-{hook}-{where}", crash=hook)
        code, reason = await site.refused(where, tok)
        assert (code, reason.split(":")[0]) == (1011, "internal_error"), reason
    # A hook that crashes on a refresh.
    user = f"crash-later-{where}"
    async with site.open(where, site.seen.new(user)) as ws:
        await site.frame(ws, "ready")
        crash = site.seen.new(user, crash="authorize")
        await ws.send(json.dumps({"type": "auth", "token": crash}))
        code, reason, _ = await site.frames_until_close(ws)
    assert (code, reason.split(":")[0]) == (1011, "internal_error"), reason


PATHS = (
    accepted_and_refreshed,
    refresh_refused,
    refused_bad_signature,
    expired_at_connect,
    expires_while_connected,
    revoked_at_connect,
    revoked_at_refresh,
    revoked_by_the_server,
    crashing_hooks,
)


async def every_path(port: int) -> Seen:
    seen = Seen()
    site = Site(port, seen)
    async with anyio.create_task_group() as tg:
        for where in SOURCES:
            for path in PATHS:
                tg.start_soon(path, site, where)
    return seen


APPS = {
    "unfiltered": "tests.support.token_log_unfiltered:fastapi_app",
    "asgi": "tests.support.token_log_apps:asgi_app",
    "starlette": "tests.support.token_log_apps:starlette_app",
    "fastapi": "tests.support.token_log_apps:fastapi_app",
}
#: hypercorn's access log, with every atom that can hold a token.
ACCESS_FORMAT = (
    '%(h)s "%(r)s" "%(R)s" %(s)s q=%(q)s Uq=%(Uq)s auth=%({authorization}i)s '
    "cookie=%({cookie}i)s proto=%({sec-websocket-protocol}i)s"
)


def uvicorn(app: str, port: int, ws: str, level: str) -> list[str]:
    return [
        *("uvicorn", APPS[app], "--host", "127.0.0.1", "--port", str(port)),
        *("--log-level", level, "--ws", ws),
    ]


def hypercorn(app: str, port: int) -> list[str]:
    return [
        *("hypercorn", APPS[app], "--bind", f"127.0.0.1:{port}"),
        *("--log-level", "debug", "--access-logfile", "-", "--error-logfile", "-"),
        *("--access-logformat", ACCESS_FORMAT),
    ]


def check(output: str, seen: Seen) -> None:
    assert len(seen.tokens) == len(SOURCES) * 19, len(seen.tokens)
    assert len(set(seen.tokens)) == len(seen.tokens)
    assert seen.leaks(output) == [], output
    assert seen.leaks("\n".join(seen.received)) == [], seen.received
    assert "Logging error" not in output, output
    # The paths did run and were logged by wschat (at DEBUG) and the server.
    assert "the verifier raised" in output, output
    assert "authorize() raised" in output, output
    assert "is_revoked() raised" in output, output
    assert "CrashOnClaim" in output, output
    assert "IntrospectionFailed" in output, output


APP_NAMES = ("asgi", "starlette", "fastapi")
SERVERS = (
    [
        pytest.param(
            "uvicorn", "websockets-sansio", "debug", app, id=f"sansio-debug-{app}"
        )
        for app in APP_NAMES
    ]
    + [
        pytest.param("uvicorn", ws, "trace", "fastapi", id=f"{ws}-trace-fastapi")
        for ws in ("websockets-sansio", "wsproto", "websockets")
    ]
    + [
        pytest.param(
            "uvicorn", "wsproto", "debug", "fastapi", id="wsproto-debug-fastapi"
        ),
    ]
    + [
        pytest.param("hypercorn", "", "debug", app, id=f"hypercorn-{app}")
        for app in APP_NAMES
    ]
)


@pytest.mark.parametrize(("server", "ws", "level", "app"), SERVERS)
async def test_no_token_in_any_log_line(
    server: str, ws: str, level: str, app: str
) -> None:
    port = free_port()
    argv = (
        hypercorn(app, port) if server == "hypercorn" else uvicorn(app, port, ws, level)
    )
    try:
        with Subprocess(argv, port) as running:
            seen = await every_path(port)
    finally:
        print(running.output)
    check(running.output, seen)
    out = running.output
    if server == "hypercorn":
        # The access log printed every token-carrying field, redacted.
        for field in ("auth=", "cookie=", "q=token="):
            assert f"{field}[redacted]" in out, out
        assert "proto=wschat.v1, bearer.[redacted]" in out, out
    elif ws != "wsproto" or level == "trace":
        # The websockets library's header lines, or trace's scopes.
        assert "bearer.[redacted]" in out, out
    if server == "uvicorn" and ws != "wsproto":
        # The websockets library prints each frame's start and end: the auth frame's.
        assert """< TEXT '{"type": "auth", "token": "[redacted]"}'""" in out, out


def test_the_search_finds_a_token_that_reached_the_output() -> None:
    """The control: with the filter taken off uvicorn's loggers (``remove_filter()``),
    ``--log-level debug`` prints the tokens of the header, cookie, query and
    subprotocol sources, and the same search finds each."""
    port = free_port()
    argv = uvicorn("unfiltered", port, "websockets-sansio", "debug")
    with Subprocess(argv, port) as running:
        seen = anyio.run(every_path, port)
    leaked = seen.leaks(running.output)
    for where in ("header", "cookie", "query", "subprotocol"):
        tok = seen.by_user[f"ok-{where}"][0]
        assert tok in leaked, where
    # wschat's own logger keeps its filter: its tracebacks stay redacted.
    assert "introspect?token=[redacted]" in running.output
