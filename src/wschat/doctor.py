"""``wschat doctor`` and ``wschat connect``: diagnose a chat socket, or chat by hand.

Imports: the standard library, :mod:`wschat.schema`, :mod:`wschat.redact`,
:mod:`wschat.auth` (a token's fingerprint), :mod:`wschat.errors` and, for the
WebSocket handshake, the ``websockets`` package (``pip install websockets``),
imported when a command runs.

:func:`diagnose` runs the checks in order, one line each, and prints the fix for the
first one that fails: the host resolves and accepts TCP; ``/ws/status`` answers (and
which wschat); the WebSocket upgrade works; the token is a JWT (decoded without
verification: its algorithm, ``sub``, ``exp``; only its fingerprint is printed);
the handshake, and the close code and reason with the fix from the close-code policy;
``ready`` reached. :func:`chat` is a terminal chat: lines in, events out.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import queue
import socket
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .auth import token_fingerprint
from .errors import CloseCode
from .redact import redact_query
from .schema import close_policy, policy_for

__all__ = ["DoctorError", "Target", "chat", "diagnose", "parse_target"]

#: Seconds each network step may take.
TIMEOUT = 5.0
_SUBPROTOCOL = "wschat.v1"
#: How much of an HTTP refusal's body the upgrade check reads.
_BODY_BYTES = 4096
#: The header wschat puts on the 404 that answers a WebSocket handshake which
#: reached the app as plain HTTP (see :data:`wschat.asgi.NO_WEBSOCKET_HEADER`).
_NO_WEBSOCKET = "x-wschat-websocket"
_PROXY_FIX = (
    "forward Upgrade and Connection in the proxy (nginx: proxy_http_version 1.1; "
    'proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection "upgrade";)'
)


class DoctorError(Exception):
    """The command line cannot be used as given (a URL that is not a chat socket)."""


@dataclass(frozen=True)
class Target:
    """Where the chat socket is, read from ``WS_URL``.

    Attributes:
        url: The socket URL as given (it may hold ``?token=``).
        secure: ``wss``.
        host: The host name or address.
        port: The TCP port.
        path: The socket's path, without the query.
        query: The query string (may hold a token: never print it).
        prefix: The path before ``/chat/``; the status route is ``{prefix}/status``.
    """

    url: str
    secure: bool
    host: str
    port: int
    path: str
    query: str
    prefix: str

    @property
    def shown(self) -> str:
        """The URL with any token in the query redacted, safe to print."""
        query = redact_query(self.query.encode()).decode() if self.query else ""
        scheme = "wss" if self.secure else "ws"
        netloc = f"[{self.host}]" if ":" in self.host else self.host
        return urlunsplit((scheme, f"{netloc}:{self.port}", self.path, query, ""))

    @property
    def http_base(self) -> str:
        scheme = "https" if self.secure else "http"
        netloc = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{netloc}:{self.port}"

    @property
    def chat_id(self) -> str:
        return self.path.rsplit("/chat/", 1)[1]


def parse_target(url: str) -> Target:
    """Read ``ws[s]://HOST[:PORT]/PREFIX/chat/ROOM[?token=...]``.

    Raises:
        DoctorError: Not a ``ws``/``wss`` URL of a chat socket.
    """
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.hostname:
        raise DoctorError(
            f"expected a ws:// or wss:// URL such as ws://127.0.0.1:8000/ws/chat/lobby,"
            f" got {parts.scheme or 'no'} scheme"
        )
    if "/chat/" not in parts.path or parts.path.endswith("/chat/"):
        raise DoctorError(
            "the URL must be a chat socket, {prefix}/chat/{chat_id}: "
            "e.g. ws://127.0.0.1:8000/ws/chat/lobby"
        )
    try:
        port = parts.port or (443 if scheme == "wss" else 80)
    except ValueError:
        raise DoctorError("the URL's port is not a number from 0 to 65535") from None
    return Target(
        url=url,
        secure=scheme == "wss",
        host=parts.hostname,
        port=port,
        path=parts.path,
        query=parts.query,
        prefix=parts.path.rsplit("/chat/", 1)[0],
    )


class _Report:
    """Prints one line per check, and the fix under the first failure."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.failed = False

    def line(self, status: str, name: str, text: str) -> None:
        print(f"{status:<5} {name}: {text}", file=self.out, flush=True)

    def ok(self, name: str, text: str) -> None:
        self.line("ok", name, text)

    def warn(self, name: str, text: str) -> None:
        self.line("warn", name, text)

    def fail(self, name: str, text: str, fix: str) -> None:
        self.line("FAIL", name, text)
        if not self.failed:
            print(f"      fix: {fix}", file=self.out, flush=True)
        self.failed = True

    def skip(self, name: str, why: str) -> None:
        self.line("skip", name, why)


class _Stop(Exception):
    """A check failed in a way that leaves the later checks nothing to look at."""


def _tls() -> ssl.SSLContext:
    return ssl.create_default_context()


def _check_tcp(target: Target, report: _Report) -> None:
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        report.fail(
            "dns",
            f"cannot resolve {target.host!r}: {exc.strerror}",
            "check the host name in the URL, or your DNS",
        )
        raise _Stop from None
    address = infos[0][4][0]
    try:
        with socket.create_connection((target.host, target.port), timeout=TIMEOUT):
            pass
    except ConnectionRefusedError:
        report.fail(
            "tcp",
            f"{target.host}:{target.port} ({address}) refused the connection: "
            "nothing listens there",
            "start the server, or check the URL's host, port and scheme "
            "(wss:// and port 443 behind TLS)",
        )
        raise _Stop from None
    except OSError as exc:
        report.fail(
            "tcp",
            f"cannot reach {target.host}:{target.port} ({address}): "
            f"{exc.strerror or type(exc).__name__}",
            "check that the server runs and that no firewall drops the port",
        )
        raise _Stop from None
    report.ok("tcp", f"{target.host}:{target.port} reachable ({address})")


def _check_status(target: Target, report: _Report) -> None:
    url = f"{target.http_base}{target.prefix}/status"
    shown = f"GET {target.prefix}/status"
    try:
        with urllib.request.urlopen(
            url,
            timeout=TIMEOUT,
            context=_tls() if target.secure else None,
        ) as response:
            payload = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        report.warn(
            "status",
            f"{shown} answered HTTP {exc.code}: not a wschat status route at this "
            "prefix (a proxy that does not route it, or another server)",
        )
        return
    except (OSError, ValueError) as exc:
        report.warn("status", f"{shown} did not answer JSON ({type(exc).__name__})")
        return
    if not isinstance(payload, dict) or "version" not in payload:
        report.warn("status", f"{shown} answered JSON that is not wschat's status")
        return
    report.ok(
        "status",
        f"{shown} answers: wschat {payload['version']}, status "
        f"{payload.get('status')}, {payload.get('connections')} connections",
    )


def _open_raw(target: Target) -> socket.socket:
    sock = socket.create_connection((target.host, target.port), timeout=TIMEOUT)
    if target.secure:
        return _tls().wrap_socket(sock, server_hostname=target.host)
    return sock


@dataclass(frozen=True)
class _Answer:
    """The server's answer to a WebSocket handshake without a token."""

    status: int
    headers: dict[str, str]
    #: The start of the body (at most 4 KiB), when the answer says how long it is.
    body: str


def _probe(target: Target, origin: str | None) -> _Answer:
    """Send a WebSocket handshake without a token; return the answer, and close."""
    key = base64.b64encode(os.urandom(16)).decode()
    host = f"{target.host}:{target.port}"
    lines = [
        f"GET {target.path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        f"Sec-WebSocket-Protocol: {_SUBPROTOCOL}",
        "User-Agent: wschat-doctor",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    with _open_raw(target) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("the server closed the connection without answer")
            data += chunk
        raw_head, _, body = data.partition(b"\r\n\r\n")
        head = raw_head.decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = headers.get("content-length", "0")
        wanted = min(int(length), _BODY_BYTES) if length.isdigit() else 0
        while status != 101 and len(body) < wanted:
            chunk = sock.recv(4096)
            if not chunk:
                break
            body += chunk
        if status == 101:
            # A masked close frame, 1000: the server sees a client that left.
            mask = os.urandom(4)
            payload = (1000).to_bytes(2, "big")
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            sock.sendall(bytes([0x88, 0x80 | len(payload)]) + mask + masked)
    return _Answer(status, headers, body[:wanted].decode("utf-8", "replace").strip())


def _denial_reason(answer: _Answer) -> str | None:
    """The wschat reason code of an HTTP refusal of the handshake (``http_denials``
    on: ``401 token_missing: ...``), or None when the answer is not wschat's."""
    code = answer.body.split(":", 1)[0]
    known = {policy.reason for policy in close_policy() if policy.reason}
    return code if 400 <= answer.status < 600 and code in known else None


def _check_upgrade(target: Target, origin: str | None, report: _Report) -> None:
    try:
        answer = _probe(target, origin)
    except (OSError, ValueError, IndexError) as exc:
        report.fail(
            "upgrade",
            f"no HTTP answer to the handshake ({type(exc).__name__}: {exc})",
            "check the URL's scheme (ws:// or wss://) and that an HTTP server answers",
        )
        raise _Stop from None
    status, headers = answer.status, answer.headers
    if status == 101:
        report.ok("upgrade", "the server speaks WebSocket (101 Switching Protocols)")
        return
    denied = _denial_reason(answer)
    if denied is not None:
        report.ok(
            "upgrade",
            f"the server speaks WebSocket and refuses with HTTP statuses "
            f"(http_denials): without a token, HTTP {status} {denied}",
        )
        return
    if headers.get(_NO_WEBSOCKET):
        report.fail(
            "upgrade",
            f"HTTP {status}: the server cannot speak WebSocket (the handshake "
            "reached the app as a plain HTTP request)",
            "install uvicorn[standard]: pip install 'uvicorn[standard]' (or "
            "'wschat[server]'), and do not run uvicorn with --ws none",
        )
        raise _Stop
    if status == 403:
        if origin is not None and _speaks_websocket(target):
            report.fail(
                "upgrade",
                f"HTTP 403: the server refuses the Origin {origin!r}",
                f"add {origin!r} to allowed_origins=[...] if this site should "
                "connect; behind a TLS proxy see docs/origin.md",
            )
        else:
            report.fail(
                "upgrade",
                "HTTP 403 before accept: the path is not a chat route, or the "
                "Origin is refused",
                f"check the URL: {target.prefix}/chat/{{chat_id}} must be a chat "
                "route (the prefix= of include_router or Mount); pass the page's "
                "--origin if browsers connect",
            )
        raise _Stop
    report.fail(
        "upgrade",
        f"HTTP {status} instead of 101: a proxy dropped Upgrade (the request "
        "reached a server as plain HTTP), or the path serves no WebSocket",
        _PROXY_FIX,
    )
    raise _Stop


def _speaks_websocket(target: Target) -> bool:
    """Whether a handshake without an Origin is upgraded, or refused by wschat."""
    try:
        answer = _probe(target, None)
    except (OSError, ValueError, IndexError):
        return False
    return answer.status == 101 or _denial_reason(answer) is not None


def _b64json(part: str) -> Any:
    padded = part + "=" * (-len(part) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _check_token(token: str | None, report: _Report) -> None:
    if token is None:
        report.warn(
            "token",
            "none given (--token): the server will close with 4401 token_missing",
        )
        return
    tag = f"fingerprint {token_fingerprint(token)}"
    parts = token.split(".")
    if len(parts) != 3:
        report.fail(
            "token",
            f"not a JWT: {len(parts)} part{'s' if len(parts) != 1 else ''} where a "
            f"JWT has three base64url parts joined by dots ({tag})",
            policy_for(4401, "token_malformed").fix,
        )
        return
    try:
        header = _b64json(parts[0])
        claims = _b64json(parts[1])
    except (ValueError, UnicodeError, binascii.Error):
        header = claims = None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        report.fail(
            "token",
            f"not a JWT: its header or payload is not base64url JSON ({tag})",
            policy_for(4401, "token_malformed").fix,
        )
        return
    alg = str(header.get("alg", ""))
    now = time.time()
    exp, nbf, sub = claims.get("exp"), claims.get("nbf"), claims.get("sub")
    problem, reason = "", "token_invalid"
    if alg.lower() in ("", "none"):
        problem = f"algorithm {alg or 'missing'}: an unsigned token is always refused"
    elif not isinstance(sub, str) or not sub:
        problem = f"no sub claim (algorithm {alg}): wschat takes the user id from sub"
    elif not isinstance(exp, (int, float)):
        problem = f"no exp claim (algorithm {alg}): wschat requires exp"
    elif exp <= now:
        problem, reason = (
            f"expired at {_when(exp)} ({int(now - exp)} s ago)",
            "token_expired",
        )
    elif isinstance(nbf, (int, float)) and nbf > now:
        problem, reason = (
            f"not valid before {_when(nbf)} (in {int(nbf - now)} s)",
            "token_not_yet_valid",
        )
    if problem:
        report.fail("token", f"{problem} ({tag})", policy_for(4401, reason).fix)
        return
    assert isinstance(exp, (int, float))
    report.ok(
        "token",
        f"a JWT, algorithm {alg}, sub {sub!r}, expires at {_when(exp)} "
        f"(in {int(exp - now)} s); {tag} (not verified: only the server has the key)",
    )


def _websockets() -> Any:
    try:
        from websockets.sync import client
    except ImportError:
        raise DoctorError(
            "needs the websockets package: pip install websockets"
        ) from None
    return client


def _token_in_subprotocol(token: str) -> bool:
    allowed = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                  "ABCDEFGHIJKLMNOPQRSTUVWXYZ")  # fmt: skip
    return bool(token) and set(token) <= allowed


def _open(target: Target, token: str | None, origin: str | None) -> Any:
    """Open the socket with the token as a subprotocol (or in the query)."""
    client = _websockets()
    url = target.url
    protocols = [_SUBPROTOCOL]
    if token is not None:
        if _token_in_subprotocol(token):
            protocols.append(f"bearer.{token}")
        else:
            query = [*parse_qsl(target.query, keep_blank_values=True), ("token", token)]
            parts = urlsplit(url)
            url = urlunsplit(
                (parts.scheme, parts.netloc, parts.path, urlencode(query), "")
            )
    return client.connect(
        url,
        subprotocols=protocols,
        origin=origin,
        open_timeout=TIMEOUT,
        close_timeout=2,
        ssl=_tls() if target.secure else None,
        user_agent_header="wschat-doctor",
    )


def _frames(text: str) -> Iterator[dict[str, Any]]:
    data = json.loads(text)
    if isinstance(data, dict) and data.get("type") == "batch":
        yield from data.get("frames", [])
    elif isinstance(data, dict):
        yield data


def _explain_close(code: int, reason: str) -> tuple[str, str]:
    policy = policy_for(code, reason)
    words = f"{code} {reason}" if reason else f"{code} (no reason)"
    return words, f"{policy.fix} (a client should: {policy.client_should})"


def _refused_status(exc: Any) -> tuple[int, str]:
    response = getattr(exc, "response", None)
    status = int(getattr(response, "status_code", 0))
    body = getattr(response, "body", b"") or b""
    return status, body.decode("utf-8", "replace").strip()


def _check_handshake(
    target: Target, token: str | None, origin: str | None, report: _Report
) -> bool:
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

    try:
        ws = _open(target, token, origin)
    except InvalidStatus as exc:
        status, body = _refused_status(exc)
        code = body.split(":", 1)[0]
        if status in (400, 401, 403) and body and code.isidentifier():
            closing = {400: 4400, 401: 4401, 403: 4403}[status]
            words, fix = _explain_close(closing, body)
            report.fail("handshake", f"refused with HTTP {status}: {body[:200]}", fix)
        else:
            report.fail(
                "handshake",
                f"refused with HTTP {status} before accept",
                "the Origin is refused (pass the page's --origin, and add it to "
                "allowed_origins) or the path is not a chat route",
            )
        report.skip("ready", "not reached")
        return False
    except (InvalidHandshake, OSError, TimeoutError) as exc:
        report.fail(
            "handshake",
            f"failed: {type(exc).__name__}: {exc}",
            "run the checks above again; a proxy may cut the connection",
        )
        report.skip("ready", "not reached")
        return False
    with ws:
        chosen = ws.subprotocol or "none"
        report.ok("handshake", f"accepted (subprotocol {chosen})")
        deadline = time.monotonic() + TIMEOUT
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                for frame in _frames(ws.recv(timeout=left)):
                    if frame.get("type") == "ready":
                        members = frame.get("members") or []
                        report.ok(
                            "ready",
                            f"user {frame.get('user')!r} in {frame.get('chat_id')!r}, "
                            f"protocol {frame.get('protocol')}, "
                            f"{len(members)} member{'s' if len(members) != 1 else ''}",
                        )
                        return True
        except ConnectionClosed as exc:
            received = exc.rcvd
            closed = received.code if received is not None else 1006
            reason = received.reason if received is not None else ""
            words, fix = _explain_close(closed, reason)
            report.fail("close", f"the server closed with {words}", fix)
        except TimeoutError:
            report.fail(
                "ready",
                f"no ready frame within {TIMEOUT:g} s",
                "first-message auth may be on: the server waits for an auth frame; "
                "or the server is overloaded",
            )
            return False
    report.skip("ready", "not reached")
    return False


def diagnose(
    url: str,
    *,
    token: str | None = None,
    origin: str | None = None,
    out: IO[str] | None = None,
) -> int:
    """Run every check on the chat socket at ``url``; print one line each.

    Args:
        url: The socket URL, ``ws[s]://host[:port]/prefix/chat/room``.
        token: The token to try (never printed; only its fingerprint).
        origin: The ``Origin`` a browser page would send, if any.
        out: Where to print (default: stdout).

    Returns:
        0 when ``ready`` was reached, else 1.

    Raises:
        DoctorError: The URL is not a chat socket URL, or ``websockets`` is missing.
    """
    target = parse_target(url)
    report = _Report(out or sys.stdout)
    _websockets()
    print(f"wschat doctor {target.shown}", file=report.out)
    try:
        _check_tcp(target, report)
        _check_status(target, report)
        _check_upgrade(target, origin, report)
    except _Stop:
        report.skip("ready", "not reached")
        return 1
    _check_token(token, report)
    return 0 if _check_handshake(target, token, origin, report) else 1


# -- wschat connect -------------------------------------------------------------------


def _describe(frame: dict[str, Any]) -> str:
    kind = frame.get("type")
    if kind == "message":
        body = frame.get("body")
        text = body.get("text") if isinstance(body, dict) else None
        shown = text if isinstance(text, str) else json.dumps(body)
        return f"<{frame.get('user')}> {shown}"
    if kind == "presence":
        count = frame.get("count")
        if "event" in frame:
            verb = "joined" if frame["event"] == "join" else "left"
            return f"* {frame.get('user')} {verb} ({count} here)"
        parts = [
            f"{', '.join(users)} {verb}"
            for users, verb in (
                (frame.get("joins"), "joined"),
                (frame.get("leaves"), "left"),
            )
            if users
        ]
        return f"* {'; '.join(parts) or 'members changed'} ({count} here)"
    if kind == "error":
        return f"! error {frame.get('code')}: {frame.get('message')}"
    if kind == "resync":
        return f"! resync: {frame.get('message')}"
    if kind == "token_expiring":
        return f"! the token expires at {_when(float(frame.get('exp', 0)))}"
    if kind == "ready":
        members = ", ".join(frame.get("members") or [])
        return (
            f"connected to {frame.get('chat_id')} as {frame.get('user')} "
            f"(here: {members})"
        )
    return f"[{kind}] {json.dumps(frame)}"


def chat(
    url: str,
    *,
    token: str | None,
    origin: str | None = None,
    stdin: IO[str] | None = None,
    out: IO[str] | None = None,
) -> int:
    """A terminal chat: each line of ``stdin`` is sent as a message, events printed.

    At the end of ``stdin`` it waits (up to 5 s) for the server to echo the messages
    it sent, then closes with 1000.

    Returns:
        0 after a clean end; 1 if the connection failed or the server closed it.

    Raises:
        DoctorError: The URL is not a chat socket URL, or ``websockets`` is missing.
    """
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

    target = parse_target(url)
    lines_in = stdin or sys.stdin
    printed = out or sys.stdout

    def say(text: str) -> None:
        print(text, file=printed, flush=True)

    try:
        ws = _open(target, token, origin)
    except InvalidStatus as exc:
        status, body = _refused_status(exc)
        say(f"refused with HTTP {status}{': ' + body[:200] if body else ''}")
        say(f"run: wschat doctor {target.shown} to see why")
        return 1
    except (InvalidHandshake, OSError, TimeoutError) as exc:
        say(f"cannot connect: {type(exc).__name__}: {exc}")
        return 1
    outgoing: queue.Queue[str | None] = queue.Queue()

    def read_stdin() -> None:
        for line in lines_in:
            text = line.rstrip("\n")
            if text:
                outgoing.put(text)
        outgoing.put(None)

    threading.Thread(target=read_stdin, daemon=True).start()
    pending: set[str] = set()
    sent = 0
    ended_at: float | None = None
    ready = False
    with ws:
        try:
            while True:
                while ready and ended_at is None:
                    try:
                        item = outgoing.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        ended_at = time.monotonic()
                        break
                    sent += 1
                    client_id = f"cli-{sent}"
                    pending.add(client_id)
                    frame = {"type": "message", "body": {"text": item}}
                    ws.send(json.dumps({**frame, "client_id": client_id}))
                if ended_at is not None and (
                    not pending or time.monotonic() - ended_at > TIMEOUT
                ):
                    ws.close(CloseCode.NORMAL_CLOSURE, "bye")
                    return 0
                try:
                    text = ws.recv(timeout=0.05)
                except TimeoutError:
                    continue
                for frame in _frames(str(text)):
                    ready = ready or frame.get("type") == "ready"
                    if frame.get("type") == "message":
                        pending.discard(str(frame.get("client_id")))
                    say(_describe(frame))
        except ConnectionClosed as exc:
            received = exc.rcvd
            code = received.code if received is not None else 1006
            reason = received.reason if received is not None else ""
            words, fix = _explain_close(code, reason)
            say(f"closed: {words}")
            if code != 1000:
                say(f"fix: {fix}")
            return 1
