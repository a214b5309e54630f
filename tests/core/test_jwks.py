"""JwksVerifier against a real JWKS HTTP server (stdlib, in a thread), asyncio and trio.

Every count of fetches is the server's own count of the requests it received; the
cache's time is a fake clock, so freshness, cooldown and staleness are pinned to the
second.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from typing import Any

import anyio
import jwt
import pytest
from anyio.lowlevel import checkpoint

from tests.support.jwks import (
    FakeClock,
    JwksServer,
    ec_key,
    ed_key,
    jwk_of,
    rsa_key,
    sign,
)
from wschat import TokenVerifier
from wschat.auth import PreparingVerifier, Verifier
from wschat.errors import (
    AuthenticationError,
    ConfigurationError,
    TokenInvalid,
    TokenMalformed,
    TokenMissing,
    TokenTooLarge,
    TryAgainLater,
    WSChatError,
)
from wschat.jwks import (
    DEFAULT_CACHE_SECONDS,
    MAX_CACHE_SECONDS,
    MIN_CACHE_SECONDS,
    JwksVerifier,
    KeysUnavailable,
)

pytestmark = pytest.mark.anyio

WAIT = 10.0


@pytest.fixture
def server() -> Iterator[JwksServer]:
    """A JWKS endpoint publishing one RSA key, ``k1``."""
    with JwksServer([jwk_of(rsa_key("one"), "k1", alg="RS256", use="sig")]) as srv:
        yield srv


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(
    server: JwksServer, clock: FakeClock | None = None, **options: Any
) -> JwksVerifier:
    options.setdefault("algorithms", ["RS256"])
    if clock is not None:
        options["clock"] = clock
    return JwksVerifier(server.url, **options)


async def admit(verifier: JwksVerifier, token: str) -> Any:
    """What the endpoint does: await prepare, then the pure verify."""
    with anyio.fail_after(WAIT):
        await verifier.prepare(token)
    return verifier.verify(token)


def refusal(verifier: JwksVerifier, token: str) -> WSChatError:
    with pytest.raises(WSChatError) as refused:
        verifier.verify(token)
    return refused.value


# -- the seam ------------------------------------------------------------------------


async def test_it_is_a_verifier_with_a_prepare_step(server: JwksServer) -> None:
    verifier = make(server)
    assert isinstance(verifier, Verifier)
    assert isinstance(verifier, PreparingVerifier)
    assert not isinstance(
        TokenVerifier("s" * 32, algorithms=["HS256"]), PreparingVerifier
    )
    assert server.requests == 0  # nothing is fetched before a token needs it


async def test_a_token_verifies_after_one_fetch(server: JwksServer) -> None:
    verifier = make(server)
    principal = await admit(verifier, sign(rsa_key("one"), "k1", sub="alice"))
    assert principal.user_id == "alice"
    assert server.requests == 1
    for _ in range(20):
        await admit(verifier, sign(rsa_key("one"), "k1", sub="bob"))
    assert server.requests == 1


async def test_verify_without_prepare_is_try_again_later_until_keys_are_fetched(
    server: JwksServer,
) -> None:
    verifier = make(server)
    token = sign(rsa_key("one"), "k1")
    error = refusal(verifier, token)
    assert isinstance(error, KeysUnavailable)
    assert isinstance(error, TryAgainLater)
    assert not isinstance(error, AuthenticationError)
    assert (error.close_code, error.code) == (1013, "try_again_later")
    assert error.reason == (
        "try_again_later: signing keys are not available; reconnect later"
    )
    assert server.requests == 0  # verify never does I/O
    stats = await verifier.refresh()
    assert (stats.status, stats.keys, server.requests) == ("ok", 1, 1)
    assert verifier.verify(token).user_id == "alice"


# -- rotation -------------------------------------------------------------------------


async def test_key_rotation_verifies_after_one_fetch_without_a_restart(
    server: JwksServer, clock: FakeClock
) -> None:
    verifier = make(server, clock)
    old, new = rsa_key("one"), rsa_key("two")
    assert (await admit(verifier, sign(old, "k1"))).user_id == "alice"
    assert server.requests == 1
    # The provider publishes a second key and signs new tokens with it.
    server.keys = [jwk_of(old, "k1"), jwk_of(new, "k2")]
    clock.advance(31)
    assert (await admit(verifier, sign(new, "k2", sub="bob"))).user_id == "bob"
    assert server.requests == 2
    assert (await admit(verifier, sign(old, "k1"))).user_id == "alice"
    assert server.requests == 2
    # The old key is withdrawn: once the set is refetched, its tokens are refused.
    server.keys = [jwk_of(new, "k2")]
    clock.advance(DEFAULT_CACHE_SECONDS)
    token = sign(old, "k1")
    await verifier.prepare(token)
    assert server.requests == 3
    error = refusal(verifier, token)
    assert isinstance(error, TokenInvalid)
    assert error.reason == "token_invalid: unknown key id (kid)"
    assert (error.close_code, error.code) == (4401, "token_invalid")


async def test_unknown_kid_refetches_at_most_once_per_cooldown(
    server: JwksServer, clock: FakeClock
) -> None:
    verifier = make(server, clock)
    await admit(verifier, sign(rsa_key("one"), "k1"))
    clock.advance(30)
    # A flood of tokens naming kids the provider never published.
    stranger = rsa_key("stranger")
    first = sign(stranger, "nope-0")
    await verifier.prepare(first)
    assert server.requests == 2
    error = refusal(verifier, first)
    assert isinstance(error, TokenInvalid)
    assert error.reason == "token_invalid: unknown key id (kid)"
    fetched_at = clock.now
    for i in range(1, 200):
        # Up to 29.9 s after that fetch: still inside the cooldown.
        clock.now = fetched_at + 29.9 * i / 199
        token = sign(stranger, f"nope-{i}", alg="RS256")
        await verifier.prepare(token)
        again = refusal(verifier, token)
        # Not fetched for it yet: the client may retry; the words say when.
        assert isinstance(again, KeysUnavailable)
        assert again.reason.startswith(
            "try_again_later: key id (kid) not fetched yet; reconnect in "
        )
    assert server.requests == 2
    clock.now = fetched_at + 30
    await verifier.prepare(sign(stranger, "nope-last"))
    assert server.requests == 3


async def test_kid_wanted_during_cooldown_is_told_when_to_retry(
    server: JwksServer, clock: FakeClock
) -> None:
    verifier = make(server, clock)
    await admit(verifier, sign(rsa_key("one"), "k1"))
    # The provider rotates right after the fetch: the new kid waits for the cooldown.
    server.keys.append(jwk_of(rsa_key("two"), "k2"))
    clock.advance(10)
    token = sign(rsa_key("two"), "k2")
    await verifier.prepare(token)
    error = refusal(verifier, token)
    assert error.reason == (
        "try_again_later: key id (kid) not fetched yet; reconnect in 20 s"
    )
    assert server.requests == 1
    clock.advance(20)
    assert (await admit(verifier, token)).user_id == "alice"
    assert server.requests == 2


async def test_concurrent_handshakes_share_one_fetch(server: JwksServer) -> None:
    server.delay = 0.2
    verifier = make(server)
    token = sign(rsa_key("one"), "k1")
    admitted: list[str] = []

    async def handshake(sub: str) -> None:
        principal = await admit(verifier, sign(rsa_key("one"), "k1", sub=sub))
        admitted.append(principal.user_id)

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(handshake, f"user-{i}")
    assert len(admitted) == 200
    assert server.requests == 1
    assert verifier.verify(token).user_id == "alice"


async def test_handshakes_that_waited_for_a_fetch_go_on_one_per_loop_pass(
    server: JwksServer,
) -> None:
    """No herd: hundreds of handshakes going on in one pass would stall the loop."""
    server.delay = 0.2
    verifier = make(server)
    token = sign(rsa_key("one"), "k1")
    passes = 0
    resumed: list[int] = []

    async def count_passes() -> None:
        nonlocal passes
        while True:
            passes += 1
            await checkpoint()

    async def handshake() -> None:
        await verifier.prepare(token)
        resumed.append(passes)

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(count_passes)
            async with anyio.create_task_group() as storm:
                for _ in range(40):
                    storm.start_soon(handshake)
            tg.cancel_scope.cancel()
    assert server.requests == 1
    assert len(resumed) == 40
    # The one that fetched goes on at once; each other one in a pass of its own.
    assert len(set(resumed)) >= 39, resumed


async def test_a_cancelled_handshake_does_not_cancel_the_fetch_others_wait_for(
    server: JwksServer,
) -> None:
    server.delay = 0.3
    verifier = make(server)
    token = sign(rsa_key("one"), "k1")
    results: list[str] = []

    async def waiter() -> None:
        results.append((await admit(verifier, token)).user_id)

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as leader:
                tg.start_soon(waiter)  # starts after the leader: it waits
                leader.cancel()  # the leader's client went away mid-fetch
                await verifier.prepare(token)
    assert results == ["alice"]
    assert server.requests == 1


# -- freshness ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "fresh"),
    [
        ({"Cache-Control": "public, max-age=120"}, 120),
        ({"Cache-Control": "max-age=5"}, MIN_CACHE_SECONDS),
        ({"Cache-Control": "max-age=31536000"}, MAX_CACHE_SECONDS),
        ({}, DEFAULT_CACHE_SECONDS),
        ({"Cache-Control": "no-store"}, MIN_CACHE_SECONDS),
        ({"Cache-Control": "public, max-age=600", "Age": "450"}, 150),
        ({"Cache-Control": "max-age=600", "Age": "599"}, MIN_CACHE_SECONDS),
        ({"Cache-Control": "private"}, DEFAULT_CACHE_SECONDS),
    ],
    ids=[
        "120",
        "below-min",
        "above-max",
        "absent",
        "no-store",
        "age",
        "age-min",
        "none",
    ],
)
async def test_the_set_is_fresh_for_its_max_age_within_the_bounds(
    server: JwksServer, clock: FakeClock, headers: dict[str, str], fresh: float
) -> None:
    assert (MIN_CACHE_SECONDS, MAX_CACHE_SECONDS, DEFAULT_CACHE_SECONDS) == (
        60.0,
        86400.0,
        300.0,
    )
    server.headers = headers
    verifier = make(server, clock)
    token = sign(rsa_key("one"), "k1")
    await admit(verifier, token)
    assert verifier.stats().fresh_for == fresh
    clock.advance(fresh - 0.001)
    await admit(verifier, token)
    assert server.requests == 1
    clock.advance(0.001)
    await admit(verifier, token)
    assert server.requests == 2


async def test_cache_bounds_are_options(server: JwksServer, clock: FakeClock) -> None:
    server.headers = {"Cache-Control": "max-age=5"}
    verifier = make(server, clock, cache_min=10, cache_max=20, cache_default=15)
    await admit(verifier, sign(rsa_key("one"), "k1"))
    assert verifier.stats().fresh_for == 10
    server.headers = {"Cache-Control": "max-age=500"}
    clock.advance(31)
    await admit(verifier, sign(rsa_key("one"), "k1"))
    assert verifier.stats().fresh_for == 20


async def test_a_stale_set_still_verifies_while_its_refresh_is_under_way(
    server: JwksServer, clock: FakeClock
) -> None:
    verifier = make(server, clock)
    token = sign(rsa_key("one"), "k1")
    await admit(verifier, token)
    clock.advance(DEFAULT_CACHE_SECONDS)
    server.delay = 0.3
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(verifier.prepare, token)  # the refresh
            await anyio.sleep(0.05)
            started = time.monotonic()
            await verifier.prepare(token)  # does not wait for it
            assert time.monotonic() - started < 0.2
            assert verifier.verify(token).user_id == "alice"
    assert server.requests == 2


# -- outage ---------------------------------------------------------------------------


@pytest.mark.parametrize("failure", ["refused", "http-503", "timeout"])
async def test_outage_old_keys_verify_and_a_new_kid_is_told_to_retry(
    server: JwksServer,
    clock: FakeClock,
    failure: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    verifier = make(server, clock, fetch_timeout=0.5)
    old = sign(rsa_key("one"), "k1")
    await admit(verifier, old)
    if failure == "refused":
        server.stop()
    elif failure == "http-503":
        server.status = 503
    else:
        server.delay = 2.0
    caplog.set_level(logging.DEBUG, logger="wschat")
    new = sign(rsa_key("two"), "k2")
    # The set goes stale and every refresh fails, for longer than the freshness.
    for _ in range(5):
        clock.advance(DEFAULT_CACHE_SECONDS)
        await admit(verifier, old)  # still verifies
        await verifier.prepare(new)
        error = refusal(verifier, new)
        assert isinstance(error, KeysUnavailable)
        assert error.reason == (
            "try_again_later: signing keys could not be refreshed; reconnect later"
        )
    stats = verifier.stats()
    assert (stats.status, stats.keys, stats.last_fetch) == ("stale", 1, "failed")
    assert stats.failures == 5
    assert verifier.health()["healthy"] is False
    assert verifier.health()["status"] == "stale"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    again = [r for r in caplog.records if "failed again" in r.getMessage()]
    assert len(again) == 4
    assert all(r.levelno == logging.DEBUG for r in again)
    line = warnings[0].getMessage()
    assert "JWKS fetch from http://127.0.0.1:" in line
    assert "/.well-known/jwks.json failed: " in line
    assert "the 1 cached keys" in line
    assert "refused with 1013 try_again_later" in line
    assert old not in caplog.text
    assert new not in caplog.text
    # The endpoint comes back: one INFO line, and the new key verifies.
    caplog.clear()
    server.stop()
    server.status, server.delay = 200, 0.0
    server.keys.append(jwk_of(rsa_key("two"), "k2"))
    server.start()
    clock.advance(30)
    assert (await admit(verifier, new)).user_id == "alice"
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 1
    assert "fetched again after 5 failed attempts" in infos[0]
    assert verifier.health()["status"] == "ok"


async def test_old_keys_stop_verifying_past_max_stale(
    server: JwksServer, clock: FakeClock
) -> None:
    verifier = make(server, clock, max_stale=3600)
    token = sign(rsa_key("one"), "k1")
    await admit(verifier, token)
    server.stop()
    clock.advance(DEFAULT_CACHE_SECONDS + 3600 - 0.001)
    await admit(verifier, token)
    clock.advance(0.001)
    await verifier.prepare(token)
    error = refusal(verifier, token)
    assert isinstance(error, KeysUnavailable)
    assert verifier.stats().status == "unavailable"
    assert verifier.health()["keys"] == 0


async def test_no_keys_and_the_url_down_is_try_again_later_with_one_warning(
    server: JwksServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    server.stop()
    verifier = make(server, clock)
    token = sign(rsa_key("one"), "k1")
    for _ in range(3):
        await verifier.prepare(token)
        error = refusal(verifier, token)
        assert error.reason == (
            "try_again_later: signing keys are not available; reconnect later"
        )
        clock.advance(30)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "no keys are cached: every token is refused with 1013" in warnings[0]
    assert verifier.health() == {
        "kind": "jwks",
        "status": "unavailable",
        "healthy": False,
        "keys": 0,
        "last_fetch": "failed",
        "age_s": None,
        "fresh_for_s": None,
        "fetches": 3,
        "failures": 3,
    }


# -- tokens never choose where keys come from -----------------------------------------


@pytest.mark.parametrize("kid", ["attacker", "k1"], ids=["own-kid", "legit-kid"])
async def test_jku_x5u_jwk_x5c_headers_are_never_used(
    server: JwksServer, clock: FakeClock, kid: str
) -> None:
    attacker_key = rsa_key("attacker")
    with JwksServer([jwk_of(attacker_key, kid)]) as attacker:
        verifier = make(server, clock)
        await admit(verifier, sign(rsa_key("one"), "k1"))
        clock.advance(30)
        forged = sign(
            attacker_key,
            kid,
            sub="admin",
            headers={
                "jku": attacker.url,
                "x5u": attacker.url.replace("jwks.json", "cert.pem"),
                "jwk": jwk_of(attacker_key, kid),
                "x5c": ["MIIB"],
            },
        )
        await verifier.prepare(forged)
        error = refusal(verifier, forged)
        assert isinstance(error, TokenInvalid)
        expected = {
            "attacker": "token_invalid: unknown key id (kid)",
            "k1": "token_invalid: signature does not match the key",
        }[kid]
        assert error.reason == expected
        assert attacker.requests == 0
    assert server.requests <= 2


# -- the same checks as TokenVerifier --------------------------------------------------


def _pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
    )


SAME_REFUSALS: dict[str, dict[str, Any]] = {
    "expired": {"ttl": -100},
    "lifetime": {"ttl": 100_000},
    "aud": {"aud": "someone-else"},
    "iss": {"iss": "https://evil.example/"},
    "sub control": {"sub": "al\nice"},
    "sub number": {"sub": 42},
    "exp string": {"exp": "soon"},
}


@pytest.mark.parametrize("case", list(SAME_REFUSALS))
async def test_a_jwks_key_gets_every_check_a_configured_key_gets(
    server: JwksServer, case: str
) -> None:
    options: dict[str, Any] = {"audience": "chat", "issuer": "https://idp.example/"}
    verifier = make(server, **options)
    plain = TokenVerifier(_pem(rsa_key("one")), algorithms=["RS256"], **options)
    claims: dict[str, Any] = {"aud": "chat", "iss": "https://idp.example/"}
    claims.update(SAME_REFUSALS[case])
    token = sign(rsa_key("one"), "k1", **claims)
    await verifier.prepare(token)
    with pytest.raises(AuthenticationError) as expected:
        plain.verify(token)
    error = refusal(verifier, token)
    assert type(error) is type(expected.value)
    assert str(error) == str(expected.value)
    good = sign(rsa_key("one"), "k1", aud="chat", iss="https://idp.example/")
    assert verifier.verify(good).user_id == "alice"


BAD_TOKENS: dict[str, tuple[str | None, type[WSChatError]]] = {
    "literal test": ("test", TokenMalformed),
    "empty": ("", TokenMissing),
    "too large": ("a" * 9000, TokenTooLarge),
    "alg none": (
        jwt.encode(
            {"sub": "a", "exp": 2**31}, "", algorithm="none", headers={"kid": "k1"}
        ),
        TokenInvalid,
    ),
    "HS256": (
        jwt.encode({"sub": "a"}, "s" * 32, algorithm="HS256", headers={"kid": "k9"}),
        TokenInvalid,
    ),
    "no kid": (None, TokenInvalid),
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
async def test_a_token_refused_without_a_key_costs_no_fetch(
    server: JwksServer, case: str
) -> None:
    token, kind = BAD_TOKENS[case]
    if token is None:
        token = sign(rsa_key("one"), None)
    verifier = make(server)
    await verifier.prepare(token)  # never raises for a bad token
    assert server.requests == 0
    error = refusal(verifier, token)
    assert type(error) is kind
    if token:
        assert token[:40] not in str(error)
    expected = {
        "alg none": 'token_invalid: algorithm "none" is never accepted',
        "HS256": "token_invalid: algorithm HS256 not accepted; expected RS256",
        "no kid": (
            "token_invalid: the token has no key id (kid); a JWKS verifier picks "
            "its key by kid"
        ),
        "too large": "token_too_large: token is 9000 bytes; the limit is 8192",
    }
    if case in expected:
        assert error.reason == expected[case]


# -- which keys of a set are used ----------------------------------------------------

SKIPPED: dict[str, tuple[dict[str, Any], str]] = {
    "use enc": (
        jwk_of(rsa_key("one"), "x", use="enc"),
        "kid 'x': use is 'enc', not 'sig'",
    ),
    "key_ops": (
        jwk_of(rsa_key("one"), "x", key_ops=["encrypt"]),
        "kid 'x': key_ops does not include 'verify'",
    ),
    "alg not accepted": (
        jwk_of(rsa_key("one"), "x", alg="RS512"),
        "kid 'x': alg 'RS512' is not in algorithms",
    ),
    "RSA 1024": (
        jwk_of(rsa_key("weak", 1024), "x"),
        "kid 'x': RSA key is 1024 bits; RS256 needs at least 2048",
    ),
    "private": (
        {**jwk_of(rsa_key("one"), "x"), "d": "AQAB"},
        "kid 'x': holds private key material",
    ),
    "oct": (
        {"kty": "oct", "kid": "x", "k": "c2VjcmV0" * 8},
        "kid 'x': a symmetric (oct) key, not used without allow_symmetric_keys",
    ),
    "EC": (jwk_of(ec_key("one"), "x"), "kid 'x': kty EC fits none of RS256"),
    "no kid": ({**jwk_of(rsa_key("one"), "x"), "kid": None}, "key 0: no kid"),
    "not a key": (
        {"kty": "RSA", "kid": "x", "n": "!!"},
        "kid 'x': not a valid RSA key",
    ),
    "unknown kty": ({"kty": "XYZ", "kid": "x"}, "kid 'x': kty 'XYZ' is not RSA"),
}


@pytest.mark.parametrize("case", list(SKIPPED))
async def test_a_key_that_does_not_fit_is_left_out_with_its_reason(
    server: JwksServer, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    jwk, reason = SKIPPED[case]
    server.keys = [jwk]
    verifier = make(server)
    token = sign(rsa_key("one"), "x")
    await verifier.prepare(token)
    stats = verifier.stats()
    assert stats.keys == 0
    assert len(stats.skipped) == 1
    assert stats.skipped[0].startswith(reason)
    assert isinstance(refusal(verifier, token), TokenInvalid)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("has no key usable with algorithms RS256" in w for w in warnings)
    if case == "private":
        assert any("publishes private key material" in w for w in warnings)
    assert "AQAB" not in caplog.text


async def test_ec_and_eddsa_keys_verify_with_the_algorithm_that_fits(
    server: JwksServer,
) -> None:
    server.keys = [
        jwk_of(ec_key("p256"), "e256"),
        jwk_of(ec_key("p384", "P-384"), "e384"),
        jwk_of(ed_key("ed"), "ed"),
    ]
    verifier = make(server, algorithms=["ES256", "ES384", "EdDSA"])
    assert (await admit(verifier, sign(ec_key("p256"), "e256", alg="ES256"))).user_id
    assert await admit(verifier, sign(ec_key("p384", "P-384"), "e384", alg="ES384"))
    assert (await admit(verifier, sign(ed_key("ed"), "ed", alg="EdDSA"))).user_id
    # A P-256 key never verifies an ES384 token, even one it signed.
    wrong = jwt.encode(
        {"sub": "a", "exp": int(time.time()) + 60},
        ec_key("p384", "P-384"),
        algorithm="ES384",
        headers={"kid": "e256"},
    )
    error = refusal(verifier, wrong)
    assert error.reason == (
        "token_invalid: algorithm ES384 not accepted; expected ES256"
    )
    assert server.requests == 1


async def test_a_key_whose_alg_is_set_verifies_that_alg_only(
    server: JwksServer,
) -> None:
    server.keys = [jwk_of(rsa_key("one"), "k1", alg="RS256")]
    verifier = make(server, algorithms=["RS256", "PS256"])
    token = sign(rsa_key("one"), "k1", alg="PS256")
    await verifier.prepare(token)
    assert refusal(verifier, token).reason == (
        "token_invalid: algorithm PS256 not accepted; expected RS256"
    )
    assert verifier.verify(sign(rsa_key("one"), "k1")).user_id == "alice"


async def test_symmetric_keys_are_used_only_when_allowed(server: JwksServer) -> None:
    secret = b"s" * 32
    server.keys = [
        {"kty": "oct", "kid": "h", "k": jwt.utils.base64url_encode(secret).decode()}
    ]
    with pytest.raises(ConfigurationError, match="allow_symmetric_keys=True"):
        make(server, algorithms=["HS256"])
    verifier = make(server, algorithms=["HS256"], allow_symmetric_keys=True)
    token = jwt.encode(
        {"sub": "a", "exp": int(time.time()) + 60}, secret, headers={"kid": "h"}
    )
    assert (await admit(verifier, token)).user_id == "a"
    # Short secrets are refused as TokenVerifier refuses them.
    server.keys = [
        {"kty": "oct", "kid": "s", "k": jwt.utils.base64url_encode(b"x" * 16).decode()}
    ]
    await verifier.refresh()
    assert (
        verifier.stats()
        .skipped[0]
        .startswith("kid 's': HMAC secret is 16 bytes; HS256 needs at least 32")
    )


async def test_more_than_max_keys_are_left_out(server: JwksServer) -> None:
    key = jwk_of(ec_key("p256"), "x")
    server.keys = [{**key, "kid": f"k{i}"} for i in range(105)]
    verifier = make(server, algorithms=["ES256"])
    stats = await verifier.refresh()
    assert stats.keys == 100
    assert stats.skipped[0] == "kid 'k100': over 100 keys"


# -- the fetch -----------------------------------------------------------------------


async def test_a_redirect_is_not_followed(server: JwksServer) -> None:
    with JwksServer([jwk_of(rsa_key("one"), "k1")]) as elsewhere:
        server.redirect = elsewhere.url
        verifier = make(server)
        with pytest.raises(
            KeysUnavailable, match=r"HTTP 302 redirect to http://127\.0\.0\.1:"
        ):
            await verifier.refresh()
        assert elsewhere.requests == 0


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ({"status": 404}, "failed: HTTP 404"),
        ({"body": b"<html>oops</html>"}, "failed: the response is not JSON"),
        (
            {"body": b'{"keys": {}}'},
            'failed: the response is not a JWKS (no "keys" list)',
        ),
        ({"body": b"[" * 100_000}, "failed: the response is not JSON"),
        (
            {"body": b" " * 300_000},
            "failed: the response is 300000 bytes; the limit is 262144",
        ),
        (
            {"body": b" " * 2000, "length": False},
            "failed: the response is over 1024 bytes (max_jwks_bytes)",
        ),
        ({"delay": 1.0}, "failed: timed out after 0.3 s"),
        ({"body": b"{" + b" " * 100, "trickle": 0.05}, "failed: timed out after 0.3 s"),
    ],
    ids=[
        "404",
        "html",
        "not-jwks",
        "deep",
        "too-big",
        "too-big-chunked",
        "slow",
        "trickle",
    ],
)
async def test_a_failed_fetch_says_why(
    server: JwksServer, setup: dict[str, Any], message: str
) -> None:
    for name, value in setup.items():
        setattr(server, name, value)
    options: dict[str, Any] = {"fetch_timeout": 0.3}
    if "length" in setup:
        options["max_jwks_bytes"] = 1024
    verifier = make(server, **options)
    with anyio.fail_after(WAIT):
        with pytest.raises(KeysUnavailable) as failed:
            await verifier.refresh()
    assert message in str(failed.value)
    assert verifier.stats().last_error is not None


async def test_the_event_loop_keeps_running_during_a_slow_fetch(
    server: JwksServer,
) -> None:
    server.delay = 0.5
    verifier = make(server)
    token = sign(rsa_key("one"), "k1")
    gaps: list[float] = []
    done = anyio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await anyio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            await admit(verifier, token)
            done.set()
    assert len(gaps) >= 20  # the loop ticked all through the 0.5 s fetch
    assert max(gaps) < 0.25, max(gaps)


# -- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://idp.example.com/jwks.json", "uses http: keys fetched over plain HTTP"),
        ("ftp://idp.example.com/jwks.json", "must be https://..., got scheme 'ftp'"),
        ("https:///jwks.json", "has no host"),
        ("https://user:pw@idp.example.com/jwks.json", "holds credentials"),
        ("https://idp.example.com:99999/jwks.json", "is not a URL"),
        (b"https://idp.example.com/", "must be a string"),
    ],
)
def test_a_url_the_keys_could_be_replaced_through_is_refused(
    url: Any, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        JwksVerifier(url, algorithms=["RS256"])


@pytest.mark.parametrize(
    "url",
    [
        "https://idp.example.com/.well-known/jwks.json",
        "http://127.0.0.1:8080/jwks",
        "http://localhost/jwks",
        "http://[::1]:9000/jwks",
        "http://127.8.9.10/jwks",
    ],
)
def test_https_and_loopback_http_are_accepted(url: str) -> None:
    assert JwksVerifier(url, algorithms=["RS256"]).url == url


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"algorithms": "RS256"}, "algorithms must be a list"),
        ({"algorithms": []}, "must name at least one"),
        ({"algorithms": ["none"]}, 'algorithm "none" is never accepted'),
        ({"algorithms": ["RS256", "HS256"]}, "algorithms mix HMAC"),
        ({"algorithms": ["XS256"]}, "unknown algorithm"),
        ({"leeway": 301}, "leeway must be a number of seconds from 0 to 300"),
        ({"max_token_bytes": 10}, "max_token_bytes must be an integer"),
        ({"cache_min": 0}, "cache_min must be a number of seconds of at least 1"),
        ({"cache_max": 30}, "cache_max must be a number of seconds of at least 60"),
        ({"cache_default": 10}, "cache_default must be a number of seconds from 60"),
        (
            {"refetch_cooldown": 0},
            "refetch_cooldown must be a number of seconds from 1",
        ),
        ({"refetch_cooldown": math.nan}, "refetch_cooldown must be"),
        ({"max_stale": -1}, "max_stale must be a number of seconds of at least 0"),
        ({"fetch_timeout": 0}, "fetch_timeout must be a number of seconds from 0"),
        ({"max_jwks_bytes": 100}, "max_jwks_bytes must be an integer of bytes"),
        ({"ssl_context": "yes"}, "ssl_context must be an ssl.SSLContext"),
    ],
)
def test_options_are_checked_when_built(options: dict[str, Any], message: str) -> None:
    options.setdefault("algorithms", ["RS256"])
    with pytest.raises(ConfigurationError, match=message):
        JwksVerifier("https://idp.example.com/jwks.json", **options)


def test_repr_and_errors_hold_no_key_and_no_token(server: JwksServer) -> None:
    verifier = JwksVerifier(server.url + "?secret=1", algorithms=["RS256"])
    assert repr(verifier) == (
        f"JwksVerifier(url='http://127.0.0.1:{server.port}/.well-known/jwks.json', "
        "algorithms=['RS256'], keys=0)"
    )
    token = sign(rsa_key("one"), "k1")
    assert token not in str(refusal(verifier, token))
