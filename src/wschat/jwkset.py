"""A JSON Web Key Set: fetched over HTTPS, read into one verifier per ``kid``.

Imports: PyJWT and the standard library (core layer). :func:`fetch_jwks` blocks: the
caller runs it in a worker thread (:class:`~wschat.jwks.JwksVerifier` does, with
``anyio.to_thread.run_sync``), never on the event loop.

:func:`read_jwks` turns each usable JWK into a :class:`~wschat.auth.TokenVerifier`
with the algorithms the key fits, so that a JWKS key gets every check a configured
key gets. A key is left out, with the reason kept for the log, when its ``kty`` fits
none of the algorithms, its ``use`` is not ``sig``, its ``key_ops`` lack ``verify``,
its ``alg`` is not accepted, it holds private key material, it is symmetric (``oct``)
and symmetric keys are not allowed, or ``TokenVerifier`` refuses it (an RSA key under
2048 bits, an EC key on another curve, a short secret).
"""

from __future__ import annotations

import binascii
import ipaddress
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from typing import Any, Final
from urllib.parse import urlsplit

import jwt
from jwt.api_jws import get_algorithm_by_name

from .auth import TokenVerifier
from .errors import ConfigurationError

__all__ = [
    "KTY_ALGORITHMS",
    "MAX_JWKS_KEYS",
    "JwksError",
    "JwksResponse",
    "KeySet",
    "check_jwks_url",
    "fetch_jwks",
    "freshness",
    "read_jwks",
    "shown_url",
]

#: Keys past this many in one JWKS are left out (identity providers publish 1 to 10).
MAX_JWKS_KEYS: Final = 100
#: The algorithms each JWK key type can verify.
KTY_ALGORITHMS: Final[Mapping[str, frozenset[str]]] = {
    "RSA": frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
    "EC": frozenset({"ES256", "ES256K", "ES384", "ES512", "ES521"}),
    "OKP": frozenset({"EdDSA"}),
    "oct": frozenset({"HS256", "HS384", "HS512"}),
}
#: JWK members that only a private key has (RFC 7518 section 6).
_PRIVATE_MEMBERS: Final = ("d", "p", "q", "dp", "dq", "qi", "oth")


class JwksError(Exception):
    """A JWKS could not be fetched or read; the message says why, for the log.

    Never reaches a client: the verifier turns it into an outage it logs once.
    """


@dataclass(frozen=True, slots=True)
class JwksResponse:
    """A fetched JWKS document.

    Attributes:
        body: The response body, at most ``max_bytes``.
        fresh: Seconds the response is fresh by its headers (:func:`freshness`),
            or None when they say nothing.
    """

    body: bytes
    fresh: float | None


@dataclass(frozen=True, slots=True)
class KeySet:
    """The usable keys of a JWKS.

    Attributes:
        keys: One verifier per ``kid``.
        skipped: Why each key left out was left out (``"kid 'x': use is 'enc'"``).
        private: Whether a key held private key material (a dangerous leak).
    """

    keys: Mapping[str, TokenVerifier]
    skipped: tuple[str, ...] = ()
    private: bool = False


def shown_url(url: str) -> str:
    """A URL for a log line: no credentials, no query, at most 200 characters.

    Args:
        url: The URL.

    Returns:
        ``scheme://host[:port]/path``.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port is None else f"{host}:{port}"
    return f"{parts.scheme}://{netloc}{parts.path}"[:200]


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_jwks_url(url: object) -> str:
    """Refuse a JWKS URL the keys could be replaced through.

    Args:
        url: The URL given.

    Returns:
        The URL: ``https``, or ``http`` on a loopback host (``localhost``,
        ``127.0.0.0/8``, ``::1``) for tests and development.

    Raises:
        ConfigurationError: Not a string, no host, credentials in it, or a scheme
            other than those; the message says what to change.
    """
    if not isinstance(url, str):
        raise ConfigurationError(
            "the JWKS URL must be a string, e.g. "
            '"https://example.eu.auth0.com/.well-known/jwks.json"'
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError as exc:
        raise ConfigurationError(f"the JWKS URL is not a URL: {exc}") from None
    host = parts.hostname or ""
    if not host:
        raise ConfigurationError(
            f"the JWKS URL has no host: {url[:200]!r}; give the full https:// URL"
        )
    if parts.username is not None or parts.password is not None:
        raise ConfigurationError(
            "the JWKS URL holds credentials (user:password@); a JWKS is public, "
            "remove them"
        )
    if parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(host)):
        return url
    if parts.scheme == "http":
        raise ConfigurationError(
            f"the JWKS URL {shown_url(url)!r} uses http: keys fetched over plain "
            "HTTP can be replaced on the way. Use https (http is allowed for a "
            "loopback host only, for tests)"
        )
    raise ConfigurationError(
        f"the JWKS URL must be https://..., got scheme {parts.scheme[:16]!r}"
    )


def freshness(cache_control: str | None, age: str | None) -> float | None:
    """How long a response stays fresh, from its ``Cache-Control`` and ``Age``.

    Args:
        cache_control: The ``Cache-Control`` header, if any.
        age: The ``Age`` header (seconds a cache has held the response), if any.

    Returns:
        ``max-age`` less ``Age`` in seconds (at least 0); 0 for ``no-cache`` or
        ``no-store``; None when the header says nothing about freshness.
    """
    if not cache_control:
        return None
    max_age: float | None = None
    for directive in cache_control.split(","):
        name, _, value = directive.strip().partition("=")
        name = name.strip().lower()
        if name in ("no-store", "no-cache"):
            return 0.0
        if name == "max-age":
            value = value.strip().strip('"')
            if value.isdigit():
                max_age = float(value)
    if max_age is None:
        return None
    if age is not None and age.strip().isdigit():
        max_age -= float(age.strip())
    return max(0.0, max_age)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect could lead to plain HTTP or another host: follow none."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> urllib.request.Request | None:
        raise JwksError(
            f"HTTP {code} redirect to {shown_url(newurl)}; configure the final URL"
        )


def fetch_jwks(
    url: str, *, timeout: float, max_bytes: int, ssl_context: ssl.SSLContext | None
) -> JwksResponse:
    """GET a JWKS document. Blocks: run it in a worker thread.

    Redirects are not followed; ``timeout`` bounds the whole fetch (each socket
    operation, and the time spent reading the body); the environment's proxy
    settings apply, as for any ``urllib`` request.

    Args:
        url: A URL :func:`check_jwks_url` accepted.
        timeout: Seconds the fetch may take.
        max_bytes: A longer body is refused.
        ssl_context: Verifies the server's certificate and host name (None:
            the system's trust store, as ``urllib`` does by default).

    Returns:
        The body and how long it is fresh.

    Raises:
        JwksError: Why the fetch failed, in words for the log.
    """
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(
        url, headers={"Accept": "application/json", "User-Agent": "wschat-jwks"}
    )
    opener = urllib.request.build_opener(
        _NoRedirect(), urllib.request.HTTPSHandler(context=ssl_context)
    )
    try:
        with opener.open(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise JwksError(
                    f"the response is {int(length)} bytes; the limit is {max_bytes} "
                    "(max_jwks_bytes)"
                )
            chunks: list[bytes] = []
            size = 0
            while True:
                # A server that trickles its body must not hold the thread forever.
                if time.monotonic() > deadline:
                    raise JwksError(f"timed out after {timeout:g} s")
                chunk = response.read1(65536)
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise JwksError(
                        f"the response is over {max_bytes} bytes (max_jwks_bytes)"
                    )
                chunks.append(chunk)
            headers = response.headers
            fresh = freshness(headers.get("Cache-Control"), headers.get("Age"))
            return JwksResponse(b"".join(chunks), fresh)
    except urllib.error.HTTPError as exc:
        raise JwksError(f"HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise JwksError(f"timed out after {timeout:g} s") from None
        raise JwksError(str(exc.reason)[:200]) from None
    except TimeoutError:
        raise JwksError(f"timed out after {timeout:g} s") from None
    except OSError as exc:
        raise JwksError(str(exc)[:200] or type(exc).__name__) from None


class _Skip(Exception):
    """Internal: a JWK that cannot be used, and why."""


def read_jwks(
    body: bytes,
    *,
    algorithms: Sequence[str],
    token_options: Mapping[str, Any],
    allow_symmetric_keys: bool = False,
) -> KeySet:
    """Read a JWKS document into one :class:`~wschat.auth.TokenVerifier` per ``kid``.

    Args:
        body: The document.
        algorithms: The algorithms accepted (checked, of one family).
        token_options: The other ``TokenVerifier`` arguments (``audience``,
            ``issuer``, ``leeway``, ...), the same for every key.
        allow_symmetric_keys: Use ``kty: oct`` keys.

    Returns:
        The usable keys, and why the others were left out.

    Raises:
        JwksError: The document is not JSON, or not a JWKS.
    """
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise JwksError("the response is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksError('the response is not a JWKS (no "keys" list)')
    keys: dict[str, TokenVerifier] = {}
    skipped: list[str] = []
    private = False
    for index, jwk in enumerate(document["keys"]):
        name = f"key {index}"
        try:
            if not isinstance(jwk, dict):
                raise _Skip("not a JSON object")
            kid = jwk.get("kid")
            if not isinstance(kid, str) or not kid:
                raise _Skip("no kid")
            name = f"kid {kid[:40]!r}"
            if kid in keys:
                raise _Skip("a second key with this kid")
            if len(keys) >= MAX_JWKS_KEYS:
                raise _Skip(f"over {MAX_JWKS_KEYS} keys")
            if jwk.get("kty") != "oct" and any(m in jwk for m in _PRIVATE_MEMBERS):
                private = True
                raise _Skip("holds private key material")
            keys[kid] = _verifier(jwk, algorithms, token_options, allow_symmetric_keys)
        except _Skip as why:
            skipped.append(f"{name}: {why}")
        except Exception as exc:  # one odd key must not cost the whole set
            skipped.append(f"{name}: could not be read ({type(exc).__name__})")
    return KeySet(keys, tuple(skipped), private)


def _verifier(
    jwk: Mapping[str, Any],
    algorithms: Sequence[str],
    token_options: Mapping[str, Any],
    allow_symmetric_keys: bool,
) -> TokenVerifier:
    """One JWK as a TokenVerifier with the algorithms it fits, or _Skip why not."""
    kty = jwk.get("kty")
    if not isinstance(kty, str) or kty not in KTY_ALGORITHMS:
        raise _Skip(f"kty {str(kty)[:16]!r} is not RSA, EC, OKP or oct")
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise _Skip(f"use is {str(use)[:16]!r}, not 'sig'")
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise _Skip("key_ops does not include 'verify'")
    if kty == "oct" and not allow_symmetric_keys:
        raise _Skip("a symmetric (oct) key, not used without allow_symmetric_keys")
    fits = [a for a in algorithms if a in KTY_ALGORITHMS[kty]]
    alg = jwk.get("alg")
    if alg is not None:
        if alg not in algorithms:
            raise _Skip(f"alg {str(alg)[:16]!r} is not in algorithms")
        if alg not in fits:
            raise _Skip(f"alg {alg} does not fit kty {kty}")
        fits = [alg]
    if not fits:
        raise _Skip(f"kty {kty} fits none of {'/'.join(algorithms)}")
    try:
        # A key object, not PEM: TokenVerifier hands it to PyJWT as it is.
        key = get_algorithm_by_name(fits[0]).from_jwk(dict(jwk))
    except (jwt.InvalidKeyError, ValueError, TypeError, KeyError, binascii.Error):
        raise _Skip(f"not a valid {kty} key") from None
    # TokenVerifier's own checks decide which algorithms the key fits: the curve of
    # an EC key, 2048 bits or more for RSA, the length of a secret.
    usable: list[str] = []
    reason = ""
    for name in fits:
        try:
            TokenVerifier(key, algorithms=[name], **token_options)
        except ConfigurationError as exc:
            fit = exc.detail.startswith("key does not fit")
            reason = f"does not fit {name}" if fit else exc.detail
        else:
            usable.append(name)
    if not usable:
        raise _Skip(reason)
    return TokenVerifier(key, algorithms=usable, **token_options)
