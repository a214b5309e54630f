"""No token in what a real server logs, whatever path or parameter name carries it.

Through uvicorn (its three WebSocket implementations) and hypercorn (with an access
log that prints the query and the token-carrying headers), for each adapter: every
request shape that used to put a JWT in a log line is sent with a fresh token, and
the captured log text must not contain it, nor its signature.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, WebSocket
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from websockets.exceptions import InvalidStatus

from tests.support.common import SECRET
from tests.support.e2e import WAIT, Flavor, build_app, client, closed, next_frame, token
from tests.support.log_servers import SERVERS, Server, recorder, running
from wschat import ConnectionManager, TokenVerifier

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> Server:
    value: Server = request.param
    return value


def assert_clean(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text, f"a token reached the log:\n{text}"
        assert secret.rsplit(".", 1)[-1] not in text, f"a signature leaked:\n{text}"


async def refused(url: str, **kwargs: Any) -> int:
    """Open a socket the server refuses: the HTTP status, or the close code."""
    try:
        async with client(url, **kwargs) as ws:
            return (await closed(ws)).code
    except InvalidStatus as exc:
        return exc.response.status_code


async def http_get(url: str, **kwargs: Any) -> int:
    async with httpx.AsyncClient(timeout=WAIT) as http:
        response = await http.get(url, **kwargs)
    return response.status_code


# The query parameter names a token is sent under, and how a log would show them.
NAMES = [
    "token",
    "TOKEN",
    "Token",
    "access_token",
    "ACCESS_TOKEN",
    "id_token",
    "jwt",
    "auth",
    "bearer",
    "access%5Ftoken",
    "%4Awt",
]


async def test_no_token_in_the_log_of_any_request_under_the_mount(
    server: Server, flavor: Flavor
) -> None:
    tokens: list[str] = []

    def fresh(user: str = "alice") -> str:
        tokens.append(token(user))
        return tokens[-1]

    app = build_app(flavor, ConnectionManager())
    with recorder() as logs, running(server, app) as srv:
        ws, http = f"{srv.ws}/ws", f"{srv.http}/ws"
        # A path with a trailing slash, and paths under the mount no route serves.
        for path in ("/chat/room1/", "/elsewhere", "/chat/", "/status/x"):
            assert await refused(f"{ws}{path}?token={fresh()}") in (403, 4400)
        # The chat route with every other name a token goes by: refused as
        # token_missing (4401) but logged by the server, [accepted] first.
        for name in NAMES[1:]:
            code = await refused(f"{ws}/chat/room1?{name}={fresh()}")
            assert code == 4401, name
        # Percent-encoded, the name is ``token`` (parse_qs decodes it): accepted.
        async with client(f"{ws}/chat/room1?%74oken={fresh('dave')}") as sock:
            await next_frame(sock, "ready")
        # Around other parameters, and twice.
        tok = fresh()
        assert await refused(f"{ws}/chat/room1?a=1&token={tok}&token={tok}") == 4401
        # A JWT under a harmless name, and as a bare query.
        assert await refused(f"{ws}/chat/room1?x={fresh()}") == 4401
        assert await refused(f"{ws}/chat/room1?{fresh()}") == 4401
        # A valid token: accepted, in the query and in a subprotocol.
        async with client(f"{ws}/chat/room1?token={fresh('bob')}") as sock:
            await next_frame(sock, "ready")
        async with client(
            f"{ws}/chat/room1", subprotocols=["wschat.v1", f"bearer.{fresh('carol')}"]
        ) as sock:
            await next_frame(sock, "ready")
        # Refused before accept (origin): a 403 logged with the query.
        code = await refused(
            f"{ws}/chat/room1?token={fresh()}", origin="http://evil.example"
        )
        assert code == 403
        # Plain HTTP: the chat route, the status route, unknown paths under /ws.
        statuses = [
            await http_get(f"{http}/chat/room1?token={fresh()}"),
            await http_get(f"{http}/status?token={fresh()}"),
            await http_get(f"{http}/status?ACCESS_TOKEN={fresh()}"),
            await http_get(f"{http}/status/?token={fresh()}"),
            await http_get(f"{http}/nothing?jwt={fresh()}"),
        ]
        async with httpx.AsyncClient(timeout=WAIT) as client_:
            post = await client_.post(f"{http}/status?token={fresh()}")
    text = logs.text()
    assert_clean(text, tokens)
    # The server did log these requests (so the check above means something).
    assert text.count("[redacted]") >= 15, text
    # A trailing slash with a token is not redirected (the token would be logged
    # again, and sent back in a Location header): 404, like any unknown path.
    assert statuses == [404, 200, 200, 404, 404]
    # Only GET is served there: 405 from chat_app, 404 from the fallback route.
    assert post.status_code in (404, 405)


async def test_header_tokens_in_hypercorns_access_log(flavor: Flavor) -> None:
    """hypercorn can log any request header: the chat route redacts those too."""
    secret, cookie, key = token("alice"), "session-" + "s" * 20, token("bob")
    # The header's token is another user's: only the subprotocol is read here (two
    # sources that are on with different tokens would be token_ambiguous).
    app = build_app(flavor, ConnectionManager(), token_sources=["subprotocol"])
    with recorder() as logs, running("hypercorn", app) as srv:
        async with client(
            f"{srv.ws}/ws/chat/room1",
            subprotocols=["wschat.v1", f"bearer.{secret}"],
            additional_headers={
                "Authorization": f"Bearer {key}",
                "Cookie": f"sid={cookie}",
                "X-Auth-Token": key,
            },
        ) as sock:
            await next_frame(sock, "ready")
    text = logs.text()
    assert_clean(text, [secret, key])
    assert cookie not in text
    access = [r.getMessage() for r in logs.of("hypercorn.access")]
    assert len(access) == 1, text
    assert "proto=wschat.v1, bearer.[redacted]" in access[0]
    assert "auth=[redacted]" in access[0]
    assert "cookie=[redacted]" in access[0]


def user_app() -> Any:
    """An app with its own routes that read tokens, beside the chat router."""
    app = FastAPI()
    from wschat.fastapi import chat_router

    verifier = TokenVerifier(SECRET, algorithms=["HS256"])
    app.include_router(chat_router(ConnectionManager(), verifier), prefix="/ws")

    @app.get("/api/me")
    async def me(request: Request) -> dict[str, Any]:
        return {
            "token": request.query_params.get("access_token"),
            "authorization": request.headers.get("authorization"),
        }

    @app.websocket("/ws/notify")
    async def notify(sock: WebSocket) -> None:
        await sock.accept()
        await sock.send_text(json.dumps(dict(sock.query_params)))
        await sock.close()

    return app


async def test_user_routes_under_the_prefix_are_not_shadowed(server: Server) -> None:
    """The fallback route yields to any route that matches: the user's get tokens."""
    secret = token("alice")
    with running(server, user_app()) as srv:
        async with client(f"{srv.ws}/ws/notify?token={secret}") as sock:
            assert json.loads(await sock.recv()) == {"token": secret}
        async with client(f"{srv.ws}/ws/notify?access_token=x") as sock:
            assert json.loads(await sock.recv()) == {"access_token": "x"}


async def test_redact_tokens_covers_the_rest_of_the_app(server: Server) -> None:
    """Wrapped in RedactTokens, the app's own routes read their tokens as sent and
    the server logs them redacted."""
    from wschat.asgi import RedactTokens

    secret, bearer, other = token("alice"), token("bob"), token("carol")
    with recorder() as logs, running(server, RedactTokens(user_app())) as srv:
        async with httpx.AsyncClient(timeout=WAIT) as http:
            response = await http.get(
                f"{srv.http}/api/me?access_token={secret}&page=2",
                headers={"Authorization": f"Bearer {bearer}"},
            )
            missing = await http.get(f"{srv.http}/elsewhere?token={other}")
        assert response.json() == {
            "token": secret,
            "authorization": f"Bearer {bearer}",
        }
        assert missing.status_code == 404
        async with client(f"{srv.ws}/ws/notify?token={other}") as sock:
            assert json.loads(await sock.recv()) == {"token": other}
    text = logs.text()
    assert_clean(text, [secret, bearer, other])
    if server != "hypercorn":
        accesses = [r.getMessage() for r in logs.of("uvicorn.access")]
        assert any("access_token=[redacted]&page=2" in a for a in accesses), text


async def test_starlette_app_wrapped_in_redact_tokens(server: Server) -> None:
    from wschat.asgi import RedactTokens

    secret = token("alice")

    async def echo(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.query_params["token"])

    app = RedactTokens(Starlette(routes=[Mount("/api", routes=[Route("/x", echo)])]))
    with recorder() as logs, running(server, app) as srv:
        async with httpx.AsyncClient(timeout=WAIT) as http:
            response = await http.get(f"{srv.http}/api/x?token={secret}")
    assert response.text == secret
    assert_clean(logs.text(), [secret])
