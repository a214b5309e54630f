"""JWKS: verify tokens with the signing keys an identity provider publishes at a URL.

Imports: anyio, PyJWT and the standard library (core layer). The key set is fetched
with :mod:`urllib.request` in a worker thread (:func:`anyio.to_thread.run_sync`), so
nothing here blocks the event loop, on asyncio and trio alike.

The seam with the endpoint, in two steps::

    await verifier.prepare(token)        # I/O: fetch the key set if the token needs it
    principal = verifier.verify(token)   # synchronous, pure over the cached keys

``prepare`` never refuses a token and never raises for one: a bad token costs no
fetch and is reported by ``verify``. ``verify`` never does I/O; each key of the set is
a :class:`~wschat.auth.TokenVerifier`, so a token signed by a JWKS key passes exactly
the checks a token signed by a configured key does (explicit algorithms of one
family, ``exp`` and ``sub`` required, lifetime cap, leeway, size limit,
:func:`~wschat.auth.check_subject`, RSA of 2048 bits or more).

The key cache:

- Keys are found by the token header's ``kid``; the ``jku``, ``x5u``, ``jwk`` and
  ``x5c`` headers are never read, so a token can never make the server fetch a URL
  or trust a key it carries.
- The set is fresh for the response's ``Cache-Control: max-age`` (less its ``Age``),
  held within ``cache_min`` and ``cache_max`` (60 s and 24 h); ``cache_default``
  (300 s) without one, ``cache_min`` for ``no-cache`` or ``no-store``. A stale set is
  fetched again by the next ``prepare``.
- A ``kid`` that is not in the set makes ``prepare`` fetch it again, at most once per
  ``refetch_cooldown`` (30 s) whatever the tokens say; concurrent handshakes wait for
  the one fetch under way.
- While the JWKS URL fails, the last set still verifies, up to ``max_stale`` (24 h)
  past its freshness; the outage is logged as one WARNING, and its end as one INFO.

The refusals, each an :class:`~wschat.errors.AuthenticationError` (4401) but the
last::

    TokenInvalid      4401  'unknown key id (kid)': a fetch made after the token
                            was first seen does not have its kid
    TokenInvalid      4401  'the token has no key id (kid)'
    KeysUnavailable   1013  try_again_later: no usable key set (never fetched, the
                            URL fails, or past max_stale), or the kid is new and
                            the cooldown has not let a fetch run yet

A key that is not available is not a verdict on the token: the client keeps its
token and reconnects with backoff (1013), instead of being told never to send it
again (4401).
"""

from __future__ import annotations

import logging
import math
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import anyio
import anyio.to_thread
from anyio.lowlevel import checkpoint
from jwt.api_jws import get_algorithm_by_name

from .auth import (
    DEFAULT_MAX_TOKEN_BYTES,
    Principal,
    TokenVerifier,
    check_verifier_options,
    token_header,
)
from .errors import (
    AuthenticationError,
    ConfigurationError,
    KeysUnavailable,
    TokenInvalid,
)
from .jwkset import (
    KTY_ALGORITHMS,
    JwksError,
    KeySet,
    check_jwks_url,
    fetch_jwks,
    read_jwks,
    shown_url,
)
from .validation import check_number

__all__ = [
    "DEFAULT_CACHE_SECONDS",
    "MAX_CACHE_SECONDS",
    "MIN_CACHE_SECONDS",
    "JwksStats",
    "JwksVerifier",
    "KeysUnavailable",
]

log = logging.getLogger("wschat")

#: The bounds on how long a fetched key set is fresh, and the lifetime without a
#: ``max-age``.
MIN_CACHE_SECONDS: Final = 60.0
MAX_CACHE_SECONDS: Final = 24 * 3600.0
DEFAULT_CACHE_SECONDS: Final = 300.0
#: Kids waiting for their first fetch that are remembered (see ``verify``).
_MAX_WANTED: Final = 256
_MAX_KID_CHARS: Final = 256


@dataclass(frozen=True, slots=True)
class JwksStats:
    """A snapshot of a :class:`JwksVerifier`'s key cache.

    Attributes:
        status: ``idle`` (nothing fetched yet), ``ok`` (the last fetch worked),
            ``stale`` (the last fetch failed; cached keys still verify) or
            ``unavailable`` (no usable keys: every fetch failed, or the set is past
            ``max_stale``).
        keys: Usable keys now.
        last_fetch: ``never``, ``ok`` or ``failed``.
        last_error: Why the last fetch failed, for the operator (may name hosts).
        age: Seconds since the cached set was fetched, or None.
        fresh_for: Seconds the set stays fresh (negative once stale), or None.
        fetches: Requests made to the JWKS URL.
        failures: Requests that failed.
        skipped: Why each key of the last set that is not used was left out.
    """

    status: Literal["idle", "ok", "stale", "unavailable"]
    keys: int
    last_fetch: Literal["never", "ok", "failed"]
    last_error: str | None
    age: float | None
    fresh_for: float | None
    fetches: int
    failures: int
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Fetch:
    """The fetch under way: set when it ends; who waited goes on one at a time."""

    done: anyio.Event
    resume: anyio.Lock
    start: float


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What a fetch brought: a key set and how long it is fresh, or an error."""

    keyset: KeySet | None = None
    fresh: float | None = None
    error: str | None = None


class JwksVerifier:
    """Verify JWTs with the keys published at a JWKS URL, fetched off the event loop.

    Nothing is fetched until the first token (or :meth:`refresh`). It is its own
    class rather than a ``TokenVerifier.from_jwks`` constructor: :mod:`wschat.auth`
    sits below this module and imports nothing above it.

    Example::

        verifier = JwksVerifier(
            "https://example.eu.auth0.com/.well-known/jwks.json",
            algorithms=["RS256"],
            audience="https://chat.example.com",
            issuer="https://example.eu.auth0.com/",
        )
        await verifier.prepare(token)        # fetches the keys if needed
        principal = verifier.verify(token)   # raises an AuthenticationError subclass
    """

    def __init__(
        self,
        url: str,
        *,
        algorithms: Sequence[str],
        audience: str | Sequence[str] | None = None,
        issuer: str | Sequence[str] | None = None,
        leeway: float = 5.0,
        max_lifetime: float | None = 24 * 3600.0,
        require: Sequence[str] = ("exp", "sub"),
        max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES,
        cache_min: float = MIN_CACHE_SECONDS,
        cache_max: float = MAX_CACHE_SECONDS,
        cache_default: float = DEFAULT_CACHE_SECONDS,
        refetch_cooldown: float = 30.0,
        max_stale: float | None = 24 * 3600.0,
        fetch_timeout: float = 5.0,
        max_jwks_bytes: int = 256 * 1024,
        allow_symmetric_keys: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Build a verifier; every mistake in the options is refused here.

        Args:
            url: The JWKS URL: ``https``, or ``http`` on a loopback host (tests).
            algorithms: The algorithms to accept: explicit, of one family.
            audience: Expected ``aud``; without it, tokens with an ``aud`` are
                refused. Set it: a JWKS usually signs tokens for many APIs.
            issuer: Expected ``iss``.
            leeway: Seconds of clock skew for ``exp``, ``nbf``, ``iat``: 0 to 300.
            max_lifetime: Longest accepted token lifetime in seconds; None lifts it.
            require: Claims that must be present.
            max_token_bytes: Longer tokens are refused before anything else.
            cache_min: Shortest time a fetched set is fresh, in seconds (at least 1).
            cache_max: Longest time a fetched set is fresh, in seconds.
            cache_default: Freshness when the response has no ``max-age``.
            refetch_cooldown: Least time between two fetches, in seconds (1 to
                3600): the most a flood of unknown ``kid`` values can cost.
            max_stale: How long past its freshness a set still verifies while the
                URL fails, in seconds; None for as long as it fails.
            fetch_timeout: Seconds a fetch may take in all (above 0, at most 60).
            max_jwks_bytes: A larger response is refused (at least 1024).
            allow_symmetric_keys: Use ``kty: oct`` (HMAC) keys from the set. Off:
                a JWKS is usually public, and a secret anyone can read signs
                anything.
            ssl_context: TLS settings for the fetch (a private CA); default: the
                system's trust store, certificates and host names verified.
            clock: Monotonic seconds, for the cache; tests pass a fake clock.

        Raises:
            ConfigurationError: The URL or an option is refused; the message says
                what to change.
        """
        self.url = check_jwks_url(url)
        self.algorithms = check_verifier_options(
            algorithms,
            leeway=leeway,
            max_lifetime=max_lifetime,
            require=require,
            max_token_bytes=max_token_bytes,
        )
        hmac = self.algorithms[0] in KTY_ALGORITHMS["oct"]
        if hmac and allow_symmetric_keys is not True:
            raise ConfigurationError(
                "HS* algorithms take symmetric (kty: oct) keys, and a JWKS is "
                "usually public: anyone who can read it could sign tokens. Use the "
                "provider's RS256/ES256 keys, a TokenVerifier with the shared "
                "secret, or allow_symmetric_keys=True for a private JWKS"
            )
        for name in self.algorithms:
            try:
                get_algorithm_by_name(name)
            except NotImplementedError:
                raise ConfigurationError(
                    f"{name} needs the cryptography package: "
                    "pip install 'wschat[crypto]'"
                ) from None
        check_number("cache_min", cache_min, minimum=1, unit="seconds")
        check_number("cache_max", cache_max, minimum=cache_min, unit="seconds")
        check_number(
            "cache_default",
            cache_default,
            minimum=cache_min,
            maximum=cache_max,
            unit="seconds",
        )
        check_number(
            "refetch_cooldown",
            refetch_cooldown,
            minimum=1,
            maximum=3600,
            unit="seconds",
        )
        check_number(
            "max_stale",
            max_stale,
            minimum=0,
            unit="seconds",
            none="to keep old keys for as long as the URL fails",
        )
        check_number(
            "fetch_timeout",
            fetch_timeout,
            minimum=0,
            maximum=60,
            above=True,
            unit="seconds",
        )
        check_number(
            "max_jwks_bytes", max_jwks_bytes, minimum=1024, integer=True, unit="bytes"
        )
        if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
            raise ConfigurationError("ssl_context must be an ssl.SSLContext or None")
        self.max_token_bytes = max_token_bytes
        self.cache_min = cache_min
        self.cache_max = cache_max
        self.cache_default = cache_default
        self.refetch_cooldown = refetch_cooldown
        self.max_stale = max_stale
        self.fetch_timeout = fetch_timeout
        self.max_jwks_bytes = max_jwks_bytes
        self.allow_symmetric_keys = allow_symmetric_keys
        # Made at the first fetch, in the worker thread: loading the trust store
        # takes a tenth of a second.
        self._ssl_context = ssl_context
        self._clock = clock
        self._shown_url = shown_url(self.url)
        # What each key's TokenVerifier is built with: the same checks for all.
        self._token_options: dict[str, Any] = {
            "audience": audience,
            "issuer": issuer,
            "leeway": leeway,
            "max_lifetime": max_lifetime,
            "require": require,
            "max_token_bytes": max_token_bytes,
        }
        self._keyset: KeySet | None = None
        self._fetched_at = 0.0
        self._fresh_until = 0.0
        self._last_attempt: float | None = None
        self._last_fetch: Literal["never", "ok", "failed"] = "never"
        self._last_error: str | None = None
        self._failing = False
        self._outage_failures = 0
        self._inflight: _Fetch | None = None
        # kid -> when a token first wanted it and no fetch had been made since.
        self._wanted: dict[str, float] = {}
        self._fetches = 0
        self._failures = 0

    def __repr__(self) -> str:
        keys = 0 if self._keyset is None else len(self._keyset.keys)
        return (
            f"JwksVerifier(url={self._shown_url!r}, "
            f"algorithms={list(self.algorithms)!r}, keys={keys})"
        )

    # -- the pure decision ---------------------------------------------------------

    def verify(self, token: str) -> Principal:
        """Verify a token with the cached key its ``kid`` names; never does I/O.

        Args:
            token: The raw JWT.

        Returns:
            The principal; ``user_id`` is the ``sub`` claim.

        Raises:
            AuthenticationError: A subclass naming the reason, as
                :meth:`TokenVerifier.verify <wschat.TokenVerifier.verify>` does,
                or ``token_invalid`` for a token without a ``kid`` or with one the
                JWKS does not have.
            KeysUnavailable: No usable key set, or a new ``kid`` not fetched yet
                (1013 ``try_again_later``).
        """
        header = token_header(
            token, algorithms=self.algorithms, max_token_bytes=self.max_token_bytes
        )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenInvalid(
                "the token has no key id (kid); a JWKS verifier picks its key by kid"
            )
        now = self._clock()
        keys = self._usable(now)
        if keys is None:
            raise KeysUnavailable()
        key = keys.get(kid)
        if key is not None:
            return key.verify(token)
        if self._failing:
            raise KeysUnavailable(
                "signing keys could not be refreshed; reconnect later"
            )
        if kid in self._wanted:
            wait = self.refetch_cooldown
            if self._last_attempt is not None:
                wait += self._last_attempt - now
            raise KeysUnavailable(
                "key id (kid) not fetched yet; "
                f"reconnect in {max(1, math.ceil(wait))} s"
            )
        raise TokenInvalid("unknown key id (kid)")

    def _usable(self, now: float) -> Mapping[str, TokenVerifier] | None:
        """The keys that may verify now: None if none were fetched or past max_stale."""
        keyset = self._keyset
        if keyset is None:
            return None
        if self.max_stale is not None and now >= self._fresh_until + self.max_stale:
            return None
        return keyset.keys

    # -- the I/O ahead of it -------------------------------------------------------

    async def prepare(self, token: str) -> None:
        """Make sure the key ``token`` names is fetched, if it can be; never refuses.

        Returns at once when the token is refused without a key (malformed, over the
        size limit, an algorithm not accepted, no ``kid``) or its key is cached and
        fresh. Otherwise fetches the set, at most once per ``refetch_cooldown``, or
        waits for the fetch under way; a stale set with the token's key in it is
        used without waiting for a fetch under way.

        Args:
            token: The raw JWT the next :meth:`verify` will get.
        """
        try:
            header = token_header(
                token, algorithms=self.algorithms, max_token_bytes=self.max_token_bytes
            )
        except AuthenticationError:  # refused without a key: verify() says why
            return
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            return
        now = self._clock()
        keys = self._usable(now)
        known = keys is not None and kid in keys
        if known and now < self._fresh_until:
            return
        inflight = self._inflight
        if not known:
            self._want(kid, inflight.start if inflight is not None else now)
        if inflight is not None:
            if not known:
                await inflight.done.wait()
                # The end of the fetch wakes every handshake that waited for it at
                # once; they go on one per pass of the event loop (a lock handed
                # from one to the next), not hundreds in one pass, which would be a
                # stall for every connection already open.
                async with inflight.resume:
                    await checkpoint()
            return
        if (
            self._last_attempt is not None
            and now - self._last_attempt < self.refetch_cooldown
        ):
            return
        await self._fetch()

    def _want(self, kid: str, since: float) -> None:
        if kid in self._wanted:
            return
        if len(self._wanted) < _MAX_WANTED and len(kid) <= _MAX_KID_CHARS:
            self._wanted[kid] = since

    async def refresh(self) -> JwksStats:
        """Fetch the key set now, whatever the cooldown (or join the fetch under way).

        Call it at startup to fail fast on a wrong URL, and to warm the cache.

        Returns:
            The cache's stats after the fetch.

        Raises:
            KeysUnavailable: The fetch failed; the detail says why (for the
                operator: it may name hosts).
        """
        inflight = self._inflight
        if inflight is not None:
            await inflight.done.wait()
        else:
            await self._fetch()
        if self._last_fetch == "failed":
            raise KeysUnavailable(
                f"JWKS fetch from {self._shown_url} failed: {self._last_error}"
            )
        return self.stats()

    async def _fetch(self) -> None:
        start = self._clock()
        fetch = self._inflight = _Fetch(anyio.Event(), anyio.Lock(), start)
        self._last_attempt = start
        self._fetches += 1
        try:
            # Shielded: the handshake that started the fetch may be cancelled (its
            # client left), but others wait for the result. It ends within
            # fetch_timeout, and the cancellation is delivered after it.
            with anyio.CancelScope(shield=True):
                try:
                    outcome = await anyio.to_thread.run_sync(self._load)
                except Exception as exc:
                    outcome = _Outcome(error=f"the fetch could not run ({exc!r:.200})")
                self._apply(outcome, start)
        finally:
            self._inflight = None
            fetch.done.set()

    def _apply(self, outcome: _Outcome, start: float) -> None:
        """Take a fetch's outcome: the new set, or the outage (on the event loop)."""
        now = self._clock()
        if outcome.keyset is None:
            self._failed(outcome.error or "unknown error", now)
            return
        keyset = outcome.keyset
        if self._failing:
            log.info(
                "wschat: JWKS at %s fetched again after %d failed attempts",
                self._shown_url,
                self._outage_failures,
            )
        previous = self._keyset
        self._failing = False
        self._outage_failures = 0
        self._keyset = keyset
        self._fetched_at = now
        fresh = self.cache_default if outcome.fresh is None else outcome.fresh
        self._fresh_until = now + min(self.cache_max, max(self.cache_min, fresh))
        self._last_fetch = "ok"
        self._last_error = None
        # A kid wanted before this fetch began is now known, or unknown for good.
        self._wanted = {k: t for k, t in self._wanted.items() if t > start}
        changed = previous is None or previous.skipped != keyset.skipped
        if keyset.private and changed:
            log.warning(
                "wschat: the JWKS at %s publishes private key material (d, p, q...); "
                "those keys are not used. Rotate them now and publish public keys only",
                self._shown_url,
            )
        if not keyset.keys and (changed or (previous is not None and previous.keys)):
            log.warning(
                "wschat: the JWKS at %s has no key usable with algorithms %s: %s",
                self._shown_url,
                "/".join(self.algorithms),
                "; ".join(keyset.skipped[:5]) or "it is empty",
            )
        elif keyset.skipped and changed:
            log.debug(
                "wschat: JWKS at %s: %d keys used, %d left out: %s",
                self._shown_url,
                len(keyset.keys),
                len(keyset.skipped),
                "; ".join(keyset.skipped[:5]),
            )

    def _failed(self, error: str, now: float) -> None:
        self._failures += 1
        self._outage_failures += 1
        self._last_fetch = "failed"
        self._last_error = error
        if self._failing:
            log.debug(
                "wschat: JWKS fetch from %s failed again: %s", self._shown_url, error
            )
            return
        # One WARNING per outage; the attempts after it are DEBUG lines.
        self._failing = True
        keys = self._usable(now)
        if keys:
            kept = (
                "for as long as it fails"
                if self.max_stale is None
                else f"for up to {self._fresh_until + self.max_stale - now:.0f} s"
            )
            served = (
                f"the {len(keys)} cached keys (fetched {now - self._fetched_at:.0f} s "
                f"ago) still verify {kept}; tokens with a new kid are"
            )
        else:
            served = "no keys are cached: every token is"
        log.warning(
            "wschat: JWKS fetch from %s failed: %s; %s refused with 1013 "
            "try_again_later until a fetch works (retried at most every %g s)",
            self._shown_url,
            error,
            served,
            self.refetch_cooldown,
        )

    # -- in the worker thread ------------------------------------------------------

    def _load(self) -> _Outcome:
        """Fetch and read the set (in a worker thread); never raises."""
        try:
            if self._ssl_context is None and self.url.startswith("https:"):
                # Fetches never overlap (one at a time): no race on the attribute.
                self._ssl_context = ssl.create_default_context()
            response = fetch_jwks(
                self.url,
                timeout=self.fetch_timeout,
                max_bytes=self.max_jwks_bytes,
                ssl_context=self._ssl_context,
            )
            keyset = read_jwks(
                response.body,
                algorithms=self.algorithms,
                token_options=self._token_options,
                allow_symmetric_keys=self.allow_symmetric_keys,
            )
        except JwksError as exc:
            return _Outcome(error=str(exc))
        except Exception as exc:  # a bug here must not end the handshake
            return _Outcome(error=f"unexpected error ({exc!r:.200})")
        return _Outcome(keyset, response.fresh)

    # -- introspection -------------------------------------------------------------

    def stats(self) -> JwksStats:
        """A snapshot of the key cache.

        Returns:
            The cache's :class:`JwksStats`.
        """
        now = self._clock()
        keys = self._usable(now)
        count = 0 if keys is None else len(keys)
        status: Literal["idle", "ok", "stale", "unavailable"]
        if self._last_fetch == "never":
            status = "idle"
        elif keys is None or (self._last_fetch == "failed" and not keys):
            status = "unavailable"
        elif self._last_fetch == "failed":
            status = "stale"
        else:
            status = "ok"
        fetched = self._keyset is not None
        return JwksStats(
            status=status,
            keys=count,
            last_fetch=self._last_fetch,
            last_error=self._last_error,
            age=round(now - self._fetched_at, 3) if fetched else None,
            fresh_for=round(self._fresh_until - now, 3) if fetched else None,
            fetches=self._fetches,
            failures=self._failures,
            skipped=() if self._keyset is None else self._keyset.skipped,
        )

    def health(self) -> dict[str, Any]:
        """The verifier's part of ``/ws/status``: no URL, no key, no error text.

        Returns:
            ``kind``, ``status`` (see :class:`JwksStats`), ``healthy`` (false once
            a fetch failed, until one works), ``keys``, ``last_fetch``,
            ``age_s``, ``fresh_for_s``, ``fetches`` and ``failures``.
        """
        stats = self.stats()
        return {
            "kind": "jwks",
            "status": stats.status,
            "healthy": stats.status in ("idle", "ok"),
            "keys": stats.keys,
            "last_fetch": stats.last_fetch,
            "age_s": None if stats.age is None else round(stats.age, 1),
            "fresh_for_s": None
            if stats.fresh_for is None
            else round(stats.fresh_for, 1),
            "fetches": stats.fetches,
            "failures": stats.failures,
        }
