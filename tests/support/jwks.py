"""JWKS test kit: signing keys, tokens with a ``kid``, and a real JWKS HTTP server.

:class:`JwksServer` is the standard library's HTTP server in a thread on a free
loopback port; a test sets what it publishes (``keys``, ``headers``), how it fails
(``status``, ``delay``, ``stop()``) and reads how many requests it saw. Keys are
generated once per test session with ``cryptography``.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

__all__ = [
    "FakeClock",
    "JwksServer",
    "ec_key",
    "ed_key",
    "jwk_of",
    "rsa_key",
    "sign",
]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@functools.cache
def rsa_key(name: str, bits: int = 2048) -> rsa.RSAPrivateKey:
    """An RSA private key, the same one for ``name`` all session long."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@functools.cache
def ec_key(name: str, curve: str = "P-256") -> ec.EllipticCurvePrivateKey:
    """An EC private key on ``curve`` (``P-256`` or ``P-384``)."""
    return ec.generate_private_key(
        ec.SECP256R1() if curve == "P-256" else ec.SECP384R1()
    )


@functools.cache
def ed_key(name: str) -> ed25519.Ed25519PrivateKey:
    """An Ed25519 private key."""
    return ed25519.Ed25519PrivateKey.generate()


def jwk_of(key: PrivateKey, kid: str, **members: Any) -> dict[str, Any]:
    """The public JWK of ``key`` with ``kid``, and ``members`` (``alg``, ``use``)."""
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
    return {**jwk, "kid": kid, **members}


def sign(
    key: PrivateKey,
    kid: str | None,
    *,
    sub: str = "alice",
    alg: str = "RS256",
    ttl: float = 3600,
    headers: Mapping[str, Any] | None = None,
    **claims: Any,
) -> str:
    """A token for ``sub`` signed by ``key``, with ``kid`` in its header."""
    now = int(time.time())
    payload = {"sub": sub, "iat": now, "exp": now + int(ttl), **claims}
    header = dict(headers or {})
    if kid is not None:
        header["kid"] = kid
    return jwt.encode(payload, key, algorithm=alg, headers=header)


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class _QuietServer(ThreadingHTTPServer):
    """A client that gave up (a fetch that timed out) is not an error to print."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class JwksServer:
    """A JWKS endpoint on a free loopback port, in a thread; counts its requests.

    Attributes:
        keys: The JWKs it publishes as ``{"keys": [...]}``.
        headers: Extra response headers (``Cache-Control``, ``Age``...).
        status: The HTTP status it answers with (200 by default).
        delay: Seconds it waits before answering.
        body: Raw bytes to answer with instead of the JWKS (a broken endpoint).
        trickle: Seconds between bytes of the body, if set (a stalling endpoint).
        redirect: A URL to answer with a 302 to.
        length: Whether to send ``Content-Length`` (else the body ends at close).
        requests: How many requests it has received.
        served: When each request came and when its answer was sent, on the
            ``time.perf_counter`` clock (CLOCK_MONOTONIC, shared by processes).
    """

    def __init__(self, keys: list[dict[str, Any]] | None = None) -> None:
        self.keys: list[dict[str, Any]] = list(keys or [])
        self.headers: dict[str, str] = {}
        self.status = 200
        self.delay = 0.0
        self.body: bytes | None = None
        self.trickle: float | None = None
        self.redirect: str | None = None
        self.length = True
        self._lock = threading.Lock()
        self._requests = 0
        self.served: list[tuple[float, float]] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def requests(self) -> int:
        with self._lock:
            return self._requests

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                came = time.perf_counter()
                try:
                    self._answer()
                finally:
                    with server._lock:
                        server.served.append((came, time.perf_counter()))

            def _answer(self) -> None:
                with server._lock:
                    server._requests += 1
                if server.delay:
                    time.sleep(server.delay)
                if server.redirect is not None:
                    self.send_response(302)
                    self.send_header("Location", server.redirect)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = server.body
                if body is None:
                    body = json.dumps({"keys": server.keys}).encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                for name, value in server.headers.items():
                    self.send_header(name, value)
                if server.trickle is None and server.length:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.trickle is None:
                    self.wfile.write(body)
                    return
                for i in range(len(body)):
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
                    time.sleep(server.trickle)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def start(self) -> None:
        """Listen (again, on the same port after :meth:`stop`)."""
        self._httpd = _QuietServer(("127.0.0.1", self.port), self._handler())
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        # A short poll: stop() returns in milliseconds, not the default half second.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.02,), daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop listening: fetches now fail with "connection refused"."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> JwksServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
