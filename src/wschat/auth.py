"""Authentication: verify a JWT and turn it into a :class:`Principal`.

Imports: PyJWT and the standard library (core layer; no framework, no I/O).

The verifier is strict by default: algorithms are explicit, ``none``, a mix of HMAC
with public-key families and weak keys are refused when it is built, ``exp`` and
``sub`` are required, lifetimes are capped, leeway is small, and oversized tokens are
refused before any decoding. PyJWT checks the signature and the claims it knows;
the time claims (``exp``, ``nbf``, ``iat``) are checked here, so that a claim of the
wrong type (``"exp": true``, which PyJWT reads as 1) is refused as what it is. A
``sub`` becomes the user id every other member sees and a key in the backplane, so it
is held to :func:`check_subject`. Every refusal is one
:class:`~wschat.errors.AuthenticationError` whose reason a browser can read. Tokens
never appear in a message, a log or a repr.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from time import time as _now
from typing import Any, Final, Protocol, runtime_checkable

import jwt
from jwt.api_jws import get_algorithm_by_name

from .errors import (
    AuthenticationError,
    ConfigurationError,
    TokenExpired,
    TokenInvalid,
    TokenMalformed,
    TokenMissing,
    TokenNotYetValid,
    TokenTooLarge,
)
from .ids import UserId
from .validation import check_number

__all__ = [
    "DEFAULT_MAX_TOKEN_BYTES",
    "MAX_SUB_BYTES",
    "MAX_SUB_CHARS",
    "MIN_RSA_BITS",
    "PreparingVerifier",
    "Principal",
    "TokenVerifier",
    "Verifier",
    "check_subject",
    "check_verifier_options",
    "token_fingerprint",
    "token_header",
]

DEFAULT_MAX_TOKEN_BYTES: Final = 8 * 1024
#: The longest ``sub`` accepted, in characters and in bytes of UTF-8.
MAX_SUB_CHARS: Final = 256
MAX_SUB_BYTES: Final = 512
#: The smallest RSA key accepted (NIST SP 800-131A).
MIN_RSA_BITS: Final = 2048

_HMAC: Final = frozenset({"HS256", "HS384", "HS512"})
#: The public-key algorithms PyJWT implements (with ``cryptography``).
_PUBLIC: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
    | {"ES256", "ES256K", "ES384", "ES512", "ES521", "EdDSA"}
)
_RSA: Final = frozenset(a for a in _PUBLIC if a[:2] in ("RS", "PS"))
#: RFC 7518 section 3.2: an HMAC key at least as long as the hash output.
_HMAC_MIN_BYTES: Final = {"HS256": 32, "HS384": 48, "HS512": 64}
#: Unicode categories a ``sub`` may not hold, and how to name them.
_SUB_FORBIDDEN: Final = {
    "Cc": "a control character",
    "Cf": "an invisible format character",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}


def token_fingerprint(token: str) -> str:
    """A short, non-reversible tag for a token, safe to log.

    Args:
        token: The raw token.

    Returns:
        ``"sha256:"`` and the first 12 hex digits of the token's SHA-256.
    """
    return "sha256:" + hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:12]


def check_subject(sub: object) -> UserId:
    """Check a token's ``sub`` before it becomes a user id; the reason never shows it.

    A ``sub`` is what every member sees as ``user``, and a key in the backplane: it
    must be a string of 1 to :data:`MAX_SUB_CHARS` characters and at most
    :data:`MAX_SUB_BYTES` bytes of UTF-8, valid UTF-8 (no lone surrogate such as
    ``"\\ud800"``, which JSON and PyJWT let through), with no control character
    (C0, DEL, C1), no invisible format character (zero-width characters, bidi
    controls, the BOM, soft hyphen, tag characters) and no line or paragraph
    separator. A verifier of your own can call it the same way.

    Args:
        sub: The ``sub`` claim as decoded.

    Returns:
        The same text as a :data:`~wschat.ids.UserId`.

    Raises:
        TokenInvalid: What is wrong, naming a code point and position at most.
    """
    if not isinstance(sub, str):
        raise TokenInvalid("sub must be a string")
    if not sub:
        raise TokenInvalid("sub must not be empty")
    if len(sub) > MAX_SUB_CHARS:
        raise TokenInvalid(
            f"sub is {len(sub)} characters long; the limit is {MAX_SUB_CHARS}"
        )
    if not sub.isascii():
        try:
            size = len(sub.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise TokenInvalid(
                f"sub is not valid UTF-8: a lone surrogate "
                f"(U+{ord(sub[exc.start]):04X} at position {exc.start})"
            ) from None
        if size > MAX_SUB_BYTES:
            raise TokenInvalid(
                f"sub is {size} bytes of UTF-8; the limit is {MAX_SUB_BYTES}"
            )
    # Every forbidden character is unprintable: most subs are done here.
    if not sub.isprintable():
        for position, char in enumerate(sub):
            kind = _SUB_FORBIDDEN.get(unicodedata.category(char))
            if kind is not None:
                raise TokenInvalid(
                    f"sub holds {kind} (U+{ord(char):04X} at position {position})"
                )
    return UserId(sub)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is on a connection, as proved by the token.

    Attributes:
        user_id: The token's ``sub``: the ``user`` of every message sent.
        claims: All verified claims (kept out of the repr).
        expires_at: The token's ``exp`` in Unix seconds, if any.
        fingerprint: :func:`token_fingerprint` of the token, for logs.
    """

    user_id: UserId
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    expires_at: int | None = None
    fingerprint: str = ""


@runtime_checkable
class Verifier(Protocol):
    """What the endpoint needs from a verifier; implement it to plug in other auth.

    ``verify`` must raise an :class:`~wschat.errors.AuthenticationError` subclass for
    every refusal, and must not put the token in the error. A verifier that cannot
    decide now (its keys are not available) raises
    :class:`~wschat.errors.TryAgainLater` instead: the token was not judged, and the
    client may retry it later. A verifier that needs I/O before it can decide also
    implements :class:`PreparingVerifier`.
    """

    def verify(self, token: str) -> Principal:
        """Verify ``token`` and return its principal."""
        ...


@runtime_checkable
class PreparingVerifier(Verifier, Protocol):
    """A verifier whose decision needs I/O first, such as fetching a signing key.

    The endpoint awaits ``prepare(token)``, when the verifier has it, before it
    calls ``verify(token)``; ``verify`` stays synchronous and decides from what
    ``prepare`` left ready. ``prepare`` never raises for a bad token (``verify``
    reports it) and never blocks the event loop.
    :class:`~wschat.jwks.JwksVerifier` is one.
    """

    async def prepare(self, token: str) -> None:
        """Get ready to verify ``token`` (fetch what it needs); never refuse it."""
        ...


#: base64url, padded or not (PyJWT takes both); the stdlib decoder silently skips
#: other characters.
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def _b64_segment_ok(segment: str) -> bool:
    return _B64URL.fullmatch(segment) is not None


def _b64_json(segment: str) -> Any:
    try:
        segment = segment.rstrip("=")
        return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        return None


def _check_structure(token: str) -> str:
    """Explain, in words a person understands, why ``token`` is not a JWT at all.

    Returns:
        The header's ``alg``, not yet checked against anything.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenMalformed(
            "not a JWT: expected three base64url parts joined by dots, "
            f"got {len(parts)} part{'s' if len(parts) != 1 else ''}"
        )
    header, payload, _signature = parts
    if not header or not payload:
        raise TokenMalformed("not a JWT: the header or payload part is empty")
    if not all(_b64_segment_ok(p) for p in parts):
        raise TokenMalformed("not a JWT: a part is not valid base64url")
    if any(
        len(p.rstrip("=")) % 4 == 1  # no base64 text has this length
        or (p.endswith("=") and len(p) % 4)  # padded, but not to a multiple of 4
        for p in parts
    ):
        raise TokenMalformed("not a JWT: a part cannot be decoded")
    decoded = _b64_json(header)
    if not isinstance(decoded, dict):
        raise TokenMalformed("not a JWT: the header is not a JSON object")
    alg = decoded.get("alg")
    if not isinstance(alg, str):
        raise TokenMalformed('not a JWT: the header has no "alg"')
    if not isinstance(_b64_json(payload), dict):
        raise TokenMalformed("not a JWT: the payload is not a JSON object")
    return alg


def _check_size(token: str, max_token_bytes: int) -> None:
    if not token:
        raise TokenMissing("the token is empty")
    # A JWT is ASCII: only a token that is not one is encoded to count its bytes
    # (once, and at most as long as the server let the URL or frame be).
    size = len(token)
    if not token.isascii():
        size = len(token.encode("utf-8", "surrogatepass"))
    if size > max_token_bytes:
        raise TokenTooLarge(f"token is {size} bytes; the limit is {max_token_bytes}")


def _alg_refusal(alg: str, algorithms: Sequence[str]) -> TokenInvalid | None:
    """The refusal of a token whose header names ``alg``, or None if it is accepted."""
    if alg.lower() == "none":
        return TokenInvalid('algorithm "none" is never accepted')
    if alg not in algorithms:
        return TokenInvalid(
            f"algorithm {alg[:16]} not accepted; expected {'/'.join(algorithms)}"
        )
    return None


def token_header(
    token: str, *, algorithms: Sequence[str], max_token_bytes: int
) -> dict[str, Any]:
    """The token's JOSE header, not yet verified, after the checks that need no key.

    The size limit, the JWT structure and the algorithm are checked the way
    :meth:`TokenVerifier.verify` checks them, with the same reasons. A verifier that
    picks its key by the header's ``kid`` (:class:`~wschat.jwks.JwksVerifier`)
    reads it here; nothing in the header is trusted beyond choosing a key.

    Args:
        token: The raw JWT.
        algorithms: The algorithms the verifier accepts.
        max_token_bytes: Tokens longer than this are refused before decoding.

    Returns:
        The header as decoded; its ``alg`` is one of ``algorithms``.

    Raises:
        AuthenticationError: ``token_missing``, ``token_too_large``,
            ``token_malformed`` or ``token_invalid`` (algorithm refused).
    """
    _check_size(token, max_token_bytes)
    refused = _alg_refusal(_check_structure(token), algorithms)
    if refused is not None:
        raise refused
    header: dict[str, Any] = _b64_json(token.partition(".")[0])
    return header


def _refusal(exc: Exception) -> AuthenticationError:
    """The refusal to report for an error PyJWT raised on a well-formed token."""
    if isinstance(exc, jwt.InvalidSignatureError):
        return TokenInvalid("signature does not match the key")
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return TokenInvalid(f"the {exc.claim[:16]} claim is required")
    if isinstance(exc, jwt.InvalidAudienceError):
        return TokenInvalid("audience (aud) does not match")
    if isinstance(exc, jwt.InvalidIssuerError):
        return TokenInvalid("issuer (iss) does not match")
    if isinstance(exc, jwt.exceptions.InvalidSubjectError):
        return TokenInvalid("sub must be a string")
    if isinstance(exc, jwt.exceptions.InvalidJTIError):
        return TokenInvalid("jti must be a string")
    if isinstance(exc, jwt.InvalidTokenError):
        return TokenInvalid("header or claims rejected")
    return TokenInvalid("token could not be verified")


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    """A time claim as a number, None if absent; refused if it is not a number.

    PyJWT reads these claims with ``int()``: ``true`` would be 1 (long expired) and
    ``"99999999999"`` a date far away, past the lifetime cap.
    """
    if name not in claims:
        return None
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TokenInvalid(f"{name} must be a number of seconds (NumericDate)")
    if isinstance(value, float) and not math.isfinite(value):
        raise TokenInvalid(f"{name} must be a finite number of seconds")
    return value


def _prepare_once(decoder: jwt.PyJWT, key: Any, algorithms: Sequence[str]) -> bool:
    """Let ``decoder`` prepare ``key`` once, not once per token.

    PyJWT prepares the key on every decode; for an HMAC secret that means two failed
    attempts to load it as a DER key with ``cryptography``, a third of a decode's
    time. ``decoder`` holds its own algorithm objects (not PyJWT's global ones), so
    each of them learns the prepared form of this one key object; any other key is
    prepared as before. If a PyJWT release hides its signer differently, decoding
    works unchanged, only slower.

    Returns:
        Whether the prepared key is in use.
    """
    jws = getattr(decoder, "_jws", None)
    if not isinstance(jws, jwt.PyJWS):
        return False
    for name in algorithms:
        try:
            algorithm = jws.get_algorithm_by_name(name)
        except NotImplementedError:
            return False
        prepare = algorithm.prepare_key
        prepared = prepare(key)

        def prepare_key(
            given: Any, _prepare: Any = prepare, _prepared: Any = prepared
        ) -> Any:
            return _prepared if given is key else _prepare(given)

        # An instance attribute: it shadows the method for this object only.
        setattr(algorithm, "prepare_key", prepare_key)  # noqa: B010
    return True


def check_verifier_options(
    algorithms: Sequence[str],
    *,
    leeway: float,
    max_lifetime: float | None,
    require: Sequence[str],
    max_token_bytes: int,
) -> tuple[str, ...]:
    """Refuse the verifier options that are unsafe or inconsistent, whatever the key.

    :class:`TokenVerifier` and :class:`~wschat.jwks.JwksVerifier` check their
    options here, so that both refuse the same mistakes with the same words.

    Args:
        algorithms: The algorithms to accept: explicit, known, of one family.
        leeway: Seconds of clock skew: 0 to 300.
        max_lifetime: Longest accepted lifetime in seconds, above 0, or None.
        require: Claim names that must be present.
        max_token_bytes: The size limit, at least 64.

    Returns:
        The algorithms, as a tuple.

    Raises:
        ConfigurationError: What is wrong and what to change.
    """
    if isinstance(algorithms, str):
        raise ConfigurationError(
            f'algorithms must be a list, e.g. algorithms=["{algorithms}"]'
        )
    algs = list(algorithms)
    if not algs:
        raise ConfigurationError('algorithms must name at least one, e.g. ["HS256"]')
    if not all(isinstance(a, str) for a in algs):
        raise ConfigurationError('algorithms must be strings, e.g. ["HS256"]')
    if any(a.lower() == "none" for a in algs):
        raise ConfigurationError(
            'algorithm "none" is never accepted (it takes unsigned tokens); name the '
            'one your issuer signs with, e.g. algorithms=["HS256"] or ["RS256"]'
        )
    unknown = [a for a in algs if a not in _HMAC | _PUBLIC]
    if unknown:
        raise ConfigurationError(
            f"unknown algorithm {unknown[0][:16]!r}; use one of "
            + ", ".join(sorted(_HMAC | _PUBLIC))
        )
    families = {a in _HMAC for a in algs}
    if len(families) > 1:
        raise ConfigurationError(
            "algorithms mix HMAC (HS*) with public-key families; that lets a token "
            "signed with the public key as an HMAC secret pass. Use one family: "
            'the one your issuer signs with, e.g. algorithms=["RS256"]'
        )
    check_number("leeway", leeway, minimum=0, maximum=300, unit="seconds")
    check_number(
        "max_lifetime",
        max_lifetime,
        minimum=0,
        above=True,
        unit="seconds",
        none="to lift the cap",
    )
    check_number(
        "max_token_bytes", max_token_bytes, minimum=64, integer=True, unit="bytes"
    )
    if isinstance(require, str) or not all(isinstance(c, str) for c in require):
        raise ConfigurationError(
            'require must be a list of claim names, e.g. require=["exp", "sub"]'
        )
    return tuple(algs)


class TokenVerifier:
    """Verify JWTs with PyJWT under safe defaults.

    Example::

        verifier = TokenVerifier(SECRET, algorithms=["HS256"])
        principal = verifier.verify(token)   # raises an AuthenticationError subclass
    """

    def __init__(
        self,
        key: str | bytes,
        *,
        algorithms: Sequence[str],
        audience: str | Iterable[str] | None = None,
        issuer: str | Sequence[str] | None = None,
        leeway: float = 5.0,
        max_lifetime: float | None = 24 * 3600.0,
        require: Sequence[str] = ("exp", "sub"),
        max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES,
    ) -> None:
        """Build a verifier; every mistake in the options is refused here, not later.

        Args:
            key: An HMAC secret (``HS*``, at least as long as the hash: 32, 48 or
                64 bytes) or a PEM public key (``RS*`` and ``PS*``: RSA of at
                least 2048 bits; ``ES*``: the curve the algorithm names;
                ``EdDSA``: Ed25519 or Ed448). A public key object of the
                ``cryptography`` package is taken too, and checked the same way
                (:mod:`wschat.jwkset` builds them from JWKs).
            algorithms: The algorithms to accept. Must be explicit and of one family.
            audience: Expected ``aud``; without it, tokens with an ``aud`` are refused.
            issuer: Expected ``iss``.
            leeway: Seconds of clock skew tolerated for ``exp``, ``nbf`` and
                ``iat``: 0 to 300.
            max_lifetime: Longest accepted ``exp - iat`` (or ``exp - now``) in
                seconds, above 0; ``None`` lifts the cap.
            require: Claims that must be present.
            max_token_bytes: Tokens longer than this (at least 64) are refused
                before decoding.

        Raises:
            ConfigurationError: The options are unsafe or inconsistent; the message
                says what to change.
        """
        algs = list(
            check_verifier_options(
                algorithms,
                leeway=leeway,
                max_lifetime=max_lifetime,
                require=require,
                max_token_bytes=max_token_bytes,
            )
        )
        self._hmac = algs[0] in _HMAC
        if self._hmac:
            raw = key.encode("utf-8") if isinstance(key, str) else key
            if isinstance(raw, bytes) and raw.lstrip().startswith(
                (b"-----BEGIN", b"ssh-", b"ecdsa-")
            ):
                raise ConfigurationError(
                    f"key for {'/'.join(algs)} is a PEM or SSH key, not an HMAC "
                    "secret: list the key's own algorithm (e.g. algorithms="
                    '["RS256"] for RSA, ["ES256"] for EC P-256), never an HS* one'
                )
            need = max(_HMAC_MIN_BYTES[a] for a in algs)
            if len(raw) < need:
                raise ConfigurationError(
                    f"HMAC secret is {len(raw)} bytes; {'/'.join(algs)} needs at least "
                    f"{need} (RFC 7518). Make one with: "
                    "python -c 'import secrets; print(secrets.token_urlsafe(64))'"
                )
        for name in algs:
            try:
                prepared = get_algorithm_by_name(name).prepare_key(key)
            except NotImplementedError as exc:
                # Only the public-key algorithms need it; unknown names are
                # refused above.
                raise ConfigurationError(
                    f"{name} needs the cryptography package: "
                    "pip install 'wschat[crypto]'"
                ) from exc
            except (jwt.InvalidKeyError, ValueError, TypeError) as exc:
                raise ConfigurationError(
                    f"key does not fit {name}: expected "
                    + ("a secret" if self._hmac else "a PEM public key")
                ) from exc
            # A private key loads, then fails every verification with a vague error.
            if hasattr(prepared, "private_bytes"):
                raise ConfigurationError(
                    f"key for {name} is a private key; give the verifier the PEM "
                    "public key (keep the private key on the token issuer)"
                )
            if name in _RSA and prepared.key_size < MIN_RSA_BITS:
                raise ConfigurationError(
                    f"RSA key is {prepared.key_size} bits; {name} needs at least "
                    f"{MIN_RSA_BITS} (NIST SP 800-131A). Issue tokens with a new key "
                    "of 2048 bits or more"
                )
        self._key = key
        self.algorithms: tuple[str, ...] = tuple(algs)
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway
        self.max_lifetime = max_lifetime
        self.require: tuple[str, ...] = tuple(require)
        self.max_token_bytes = max_token_bytes
        # The key was checked above; PyJWT checks it again on every decode.
        self._jwt = jwt.PyJWT(options={"enforce_minimum_key_length": True})
        self._options: Any = {
            "require": list(self.require),
            # The time claims are checked in _principal, with their types.
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
        }
        self._key_prepared_once = _prepare_once(self._jwt, key, self.algorithms)

    def __repr__(self) -> str:
        return f"TokenVerifier(algorithms={list(self.algorithms)!r}, key=<redacted>)"

    def verify(self, token: str) -> Principal:
        """Verify a token.

        Args:
            token: The raw JWT.

        Returns:
            The principal; ``user_id`` is the ``sub`` claim.

        Raises:
            AuthenticationError: A subclass naming the reason (``token_malformed``,
                ``token_expired``, ...). The token is never part of the message.
        """
        _check_size(token, self.max_token_bytes)
        return self._principal(token, self._decode(token))

    def _decode(self, token: str) -> dict[str, Any]:
        # The well-formed token is the common case: PyJWT alone checks it. Only a
        # refused token is taken apart again, to say why in words.
        try:
            claims: dict[str, Any] = self._jwt.decode(
                token,
                self._key,
                algorithms=list(self.algorithms),
                audience=self.audience,
                issuer=self.issuer,
                options=self._options,
            )
        except Exception as exc:
            alg = _check_structure(token)  # raises TokenMalformed: not a JWT at all
            raise (_alg_refusal(alg, self.algorithms) or _refusal(exc)) from exc
        return claims

    def _principal(self, token: str, claims: dict[str, Any]) -> Principal:
        exp = _numeric_date(claims, "exp")
        nbf = _numeric_date(claims, "nbf")
        iat = _numeric_date(claims, "iat")
        now = _now()
        # The same bounds as PyJWT's: expired at exp <= now - leeway.
        if exp is not None and exp <= now - self.leeway:
            raise TokenExpired()
        if (nbf is not None and nbf > now + self.leeway) or (
            iat is not None and iat > now + self.leeway
        ):
            raise TokenNotYetValid()
        user_id = check_subject(claims.get("sub"))
        if self.max_lifetime is not None and exp is not None:
            start = now if iat is None else iat
            if exp - start > self.max_lifetime + self.leeway:
                raise TokenInvalid(
                    f"token lifetime is over the {self.max_lifetime:.15g} s cap"
                )
        return Principal(
            user_id=user_id,
            claims=claims,
            expires_at=None if exp is None else int(exp),
            fingerprint=token_fingerprint(token),
        )
