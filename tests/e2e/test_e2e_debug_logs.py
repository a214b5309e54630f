"""What only a logging filter can keep clean: debug and trace logging.

uvicorn at ``--log-level debug`` has the ``websockets`` library log every request
header before the app runs (``Sec-WebSocket-Protocol: ..., bearer.<JWT>``,
``Authorization``, ``Cookie``) and at ``trace`` logs each request's whole scope;
hypercorn can print any header in its access log. The app cannot redact those: the
adapters put :class:`wschat.logfilter.RedactingFilter` on the server's loggers when
they are built. The servers here run in a subprocess: as started with nothing done
(the adapters' filter), configured the way the docs say (``--log-config`` with the
file ``python -m wschat.logfilter`` writes, or ``install_filter()`` in the app
module), or opted out (``remove_filter()``); the whole output is searched for every
token sent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from tests.support.common import free_port
from tests.support.e2e import token
from tests.support.log_servers import ROOT, Subprocess

pytestmark = pytest.mark.e2e

#: hypercorn's access log, naming the fields that can hold a token.
ACCESS_FORMAT = '%(h)s "%(R)s" %(s)s auth=%({authorization}i)s cookie=%({cookie}i)s'


def write_config(server: str, path: Path) -> Path:
    """The config file, written by the documented command."""
    run = subprocess.run(
        [sys.executable, "-m", "wschat.logfilter", server],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "src")},
    )
    path.write_text(run.stdout)
    json.loads(run.stdout)
    return path


class Secrets:
    """The secrets one round of requests sends."""

    def __init__(self) -> None:
        self.protocol = token("alice")
        self.header = token("bob")
        self.query = token("carol")
        self.api = token("dave")
        self.status = token("erin")
        self.cookie = "cookie-secret-" + "c" * 16

    def all(self) -> list[str]:
        return [self.protocol, self.header, self.query, self.api, self.status]

    def leaked(self, text: str) -> list[str]:
        found = [s for s in self.all() if s in text or s.rsplit(".", 1)[1] in text]
        return found + ([self.cookie] if self.cookie in text else [])


def send_requests(port: int, secrets: Secrets) -> None:
    """Sockets and HTTP requests carrying tokens in every place a client puts them."""
    base = f"ws://127.0.0.1:{port}/ws/chat/room1"
    with connect(
        base,
        subprotocols=[
            Subprotocol("wschat.v1"),
            Subprotocol(f"bearer.{secrets.protocol}"),
        ],
        additional_headers={"Cookie": f"sid={secrets.cookie}"},
        open_timeout=5,
    ) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "ready"
        ws.send(json.dumps({"type": "message", "body": "hi"}))
        ws.recv(timeout=5)
    # The Authorization header on a socket of its own: with the subprotocol's
    # (another user's) token it would be token_ambiguous.
    with connect(
        base,
        additional_headers={
            "Authorization": f"Bearer {secrets.header}",
            "Cookie": f"sid={secrets.cookie}",
        },
        open_timeout=5,
    ) as ws:
        assert json.loads(ws.recv(timeout=5))["user"] == "bob"
    with connect(f"{base}?token={secrets.query}", open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "ready"
    with httpx.Client(timeout=5) as http:
        me = http.get(
            f"http://127.0.0.1:{port}/api/me?access_token={secrets.api}",
            headers={"Authorization": f"Bearer {secrets.header}"},
        )
        assert me.json() == {"has_token": True}
        status = http.get(f"http://127.0.0.1:{port}/ws/status?token={secrets.status}")
        assert status.status_code == 200


def uvicorn(app: str, port: int, level: str, ws: str, *extra: str) -> list[str]:
    return [
        *("uvicorn", app, "--host", "127.0.0.1", "--port", str(port)),
        *("--log-level", level, "--ws", ws, *extra),
    ]


@pytest.mark.parametrize("ws", ["websockets", "websockets-sansio", "wsproto"])
@pytest.mark.parametrize("level", ["debug", "trace"])
def test_uvicorn_with_the_shipped_log_config(
    tmp_path: Path, ws: str, level: str
) -> None:
    config = write_config("uvicorn", tmp_path / "log.json")
    port = free_port()
    secrets = Secrets()
    argv = uvicorn("tests.support.redact_apps:mixed_app", port, level, ws)
    with Subprocess([*argv, "--log-config", str(config)], port) as server:
        send_requests(port, secrets)
    assert secrets.leaked(server.output) == [], server.output
    assert "[redacted]]" not in server.output  # redacted once, not twice
    # Every record still formats (uvicorn's access formatter reads its arguments).
    assert "Logging error" not in server.output, server.output
    assert "Traceback" not in server.output, server.output
    # The server did log these requests, redacted.
    assert "/api/me?access_token=[redacted]" in server.output
    if ws != "wsproto" or level == "trace":
        # The websockets library's header lines, or trace's scopes.
        assert "bearer.[redacted]" in server.output, server.output


@pytest.mark.parametrize("ws", ["websockets-sansio", "wsproto", "websockets"])
@pytest.mark.parametrize("level", ["debug", "trace"])
def test_uvicorn_logs_no_token_with_nothing_configured(ws: str, level: str) -> None:
    """``uvicorn app:app --log-level debug``: the router installed the filter."""
    port = free_port()
    secrets = Secrets()
    argv = uvicorn("tests.support.redact_apps:mixed_app", port, level, ws)
    with Subprocess(argv, port) as server:
        send_requests(port, secrets)
    assert secrets.leaked(server.output) == [], server.output
    assert "[redacted]]" not in server.output
    assert "Logging error" not in server.output, server.output
    assert "Traceback" not in server.output, server.output
    # The requests were logged, redacted: the app's own route too.
    assert "/api/me?access_token=[redacted]" in server.output
    if ws != "wsproto" or level == "trace":
        assert "bearer.[redacted]" in server.output, server.output


def test_uvicorn_debug_without_it_logs_the_token() -> None:
    """The premise: at debug, uvicorn prints the headers the app never sees first,
    and only the filter keeps them out (``remove_filter()`` takes it off)."""
    port = free_port()
    secrets = Secrets()
    argv = uvicorn(
        "tests.support.unfiltered_app:mixed", port, "debug", "websockets-sansio"
    )
    with Subprocess(argv, port) as server:
        send_requests(port, secrets)
    leaked = secrets.leaked(server.output)
    assert secrets.protocol in leaked  # < Sec-WebSocket-Protocol: ..., bearer.<JWT>
    assert secrets.header in leaked  # < Authorization: Bearer <JWT>
    assert secrets.api in leaked  # the app's own route, not redacted by wschat


@pytest.mark.parametrize("level", ["debug", "trace"])
def test_install_filter_in_the_app_module(level: str) -> None:
    port = free_port()
    secrets = Secrets()
    argv = uvicorn("tests.support.filtered_app:mixed", port, level, "websockets-sansio")
    with Subprocess(argv, port) as server:
        send_requests(port, secrets)
    assert secrets.leaked(server.output) == [], server.output
    assert "bearer.[redacted]" in server.output
    assert "Logging error" not in server.output, server.output
    assert "/api/me?access_token=[redacted]" in server.output


def hypercorn(port: int, *extra: str) -> list[str]:
    return [
        *("hypercorn", "tests.support.redact_apps:mixed_app"),
        *("--bind", f"127.0.0.1:{port}", "--log-level", "debug"),
        *("--access-logfile", "-", "--error-logfile", "-"),
        *("--access-logformat", ACCESS_FORMAT, *extra),
    ]


def test_hypercorn_with_the_shipped_log_config(tmp_path: Path) -> None:
    config = write_config("hypercorn", tmp_path / "log.json")
    port = free_port()
    secrets = Secrets()
    with Subprocess(hypercorn(port, "--log-config", f"json:{config}"), port) as server:
        send_requests(port, secrets)
    assert secrets.leaked(server.output) == [], server.output
    assert "Logging error" not in server.output, server.output
    assert "/api/me?access_token=[redacted]" in server.output
    assert "auth=[redacted]" in server.output


def test_hypercorn_debug_logs_no_token_with_nothing_configured() -> None:
    port = free_port()
    secrets = Secrets()
    with Subprocess(hypercorn(port), port) as server:
        send_requests(port, secrets)
    assert secrets.leaked(server.output) == [], server.output
    assert "Logging error" not in server.output, server.output
    assert "/api/me?access_token=[redacted]" in server.output
    assert "auth=[redacted]" in server.output


def test_hypercorn_opted_out_logs_the_apps_own_route() -> None:
    """The premise: wschat redacts its own routes' scopes; the app's own route
    needs the filter."""
    port = free_port()
    secrets = Secrets()
    argv = hypercorn(port)
    argv[1] = "tests.support.unfiltered_app:mixed"
    with Subprocess(argv, port) as server:
        send_requests(port, secrets)
    leaked = secrets.leaked(server.output)
    assert leaked == [secrets.header, secrets.api], server.output
