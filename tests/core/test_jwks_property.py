"""Property test of the JWKS key cache, against a real JWKS server and a fake clock.

However the provider publishes, rotates, withdraws and fails, and however tokens and
time come:

- a token verifies only with a key the last successful fetch got, and never past
  that set's freshness plus ``max_stale``;
- two fetches are never closer than ``refetch_cooldown``;
- a token is never called "unknown key id" when the last set has its key;
- a token verifies whenever the provider is up, publishes its key, and the cache may
  fetch (its set is fresh, or the cooldown has passed): rotation needs no restart.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.support.jwks import FakeClock, JwksServer, ec_key, jwk_of, sign
from wschat.errors import TokenInvalid, TryAgainLater
from wschat.jwks import JwksVerifier
from wschat.jwkset import read_jwks

pytestmark = pytest.mark.anyio

KIDS = ("a", "b", "c", "d")
COOLDOWN = 30.0
MAX_STALE = 3600.0
CACHE_MIN, CACHE_MAX = 60.0, 86400.0

advance = st.tuples(
    st.just("advance"),
    st.one_of(
        st.floats(0, 40),
        st.sampled_from([COOLDOWN, CACHE_MIN, 300.0, MAX_STALE, 3900.0, CACHE_MAX]),
        st.floats(0, 100_000),
    ),
)
publish = st.tuples(
    st.just("publish"),
    st.frozensets(st.sampled_from(KIDS)),
    st.sampled_from([None, 0, 30, 120, 1000, 10**6]),
)
status = st.tuples(st.just("status"), st.sampled_from([200, 503]))
token = st.tuples(st.just("token"), st.sampled_from(KIDS))
steps = st.lists(
    st.one_of(advance, publish, status, token, token), min_size=4, max_size=30
)


@dataclass
class Model:
    """What the test knows: the last successful fetch, and when fetches happened."""

    published: frozenset[str] = frozenset({"a"})
    max_age: int | None = None
    status: int = 200
    last_set: frozenset[str] | None = None
    fresh_until: float = 0.0
    last_request: float | None = None
    requests: int = 0
    verified: list[str] = field(default_factory=list)


def lifetime(max_age: int | None) -> float:
    return min(CACHE_MAX, max(CACHE_MIN, 300.0 if max_age is None else max_age))


@pytest.fixture
def server() -> Iterator[JwksServer]:
    with JwksServer() as srv:
        yield srv


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
# The provider fails for longer than max_stale past the set's freshness.
@example(steps=[("token", "a"), ("status", 503), ("advance", 5000.0), ("token", "a")])
# The provider withdraws a key.
@example(
    steps=[("token", "a"), ("publish", {"b"}, None), ("advance", 300.0), ("token", "a")]
)
@given(steps=steps)
async def test_the_cache_never_serves_past_its_bounds_and_never_blocks_rotation(
    server: JwksServer, steps: list[tuple[Any, ...]]
) -> None:
    server.keys = [jwk_of(ec_key(kid), kid) for kid in ("a",)]
    server.headers, server.status = {}, 200
    start = server.requests
    clock = FakeClock()
    verifier = JwksVerifier(
        server.url,
        algorithms=["ES256"],
        refetch_cooldown=COOLDOWN,
        max_stale=MAX_STALE,
        clock=clock,
    )
    model = Model()
    for step in steps:
        if step[0] == "advance":
            clock.advance(float(step[1]))
        elif step[0] == "publish":
            kids, max_age = step[1], step[2]
            model.published = frozenset(kids)
            model.max_age = max_age
            server.keys = [jwk_of(ec_key(kid), kid) for kid in sorted(model.published)]
            server.headers = (
                {} if max_age is None else {"Cache-Control": f"max-age={max_age}"}
            )
        elif step[0] == "status":
            model.status = server.status = int(step[1])
        else:
            kid = str(step[1])
            now = clock.now
            could_fetch = (
                model.last_request is None or now - model.last_request >= COOLDOWN
            )
            tok = sign(ec_key(kid), kid, alg="ES256")
            await verifier.prepare(tok)
            requests = server.requests - start
            if requests > model.requests:
                assert requests == model.requests + 1
                # Never two fetches within the cooldown.
                assert could_fetch, (now, model.last_request)
                model.last_request = now
                model.requests = requests
                if model.status == 200:
                    model.last_set = model.published
                    model.fresh_until = now + lifetime(model.max_age)
            outcome: str
            try:
                verifier.verify(tok)
            except TokenInvalid as refused:
                outcome = refused.reason
            except TryAgainLater:
                outcome = "try again later"
            else:
                outcome = "ok"
            ok = outcome == "ok"
            if outcome.startswith("token_invalid"):
                # "unknown" only for a kid the last set does not have.
                assert outcome == "token_invalid: unknown key id (kid)"
                assert model.last_set is not None
                assert kid not in model.last_set
            if ok:
                # Only a key of the last set, within its bounds.
                assert model.last_set is not None
                assert kid in model.last_set
                assert now < model.fresh_until + MAX_STALE
                model.verified.append(kid)
            fresh = model.last_set is not None and now < model.fresh_until
            in_last = model.last_set is not None and kid in model.last_set
            if (
                model.status == 200
                and kid in model.published
                and ((fresh and in_last) or could_fetch)
            ):
                assert ok, (kid, now, model)
            if fresh and in_last:
                assert ok, (kid, now, model)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
member_values = st.one_of(
    json_values,
    st.sampled_from(["RSA", "EC", "OKP", "oct", "sig", "enc", "RS256", "ES256"]),
    st.sampled_from(["P-256", "P-384", "Ed25519", "AQAB", "", "!!", "AAAA"]),
)
jwks_members = st.dictionaries(
    st.sampled_from(
        ["kty", "kid", "use", "alg", "key_ops", "n", "e", "crv", "x", "y", "d", "k"]
    ),
    member_values,
)


@settings(max_examples=300, deadline=None)
@given(keys=st.lists(st.one_of(jwks_members, json_values), max_size=4))
def test_any_jwks_document_is_read_or_refused_with_a_reason(keys: list[Any]) -> None:
    """Whatever a JWKS holds, reading it never raises past JwksError, and a key is
    used only with a kid and algorithms of the configured ones."""
    body = json.dumps({"keys": keys}).encode()
    for algorithms in (["RS256", "ES256"], ["HS256"]):
        keyset = read_jwks(
            body,
            algorithms=algorithms,
            token_options={},
            allow_symmetric_keys=True,
        )
        assert len(keyset.keys) + len(keyset.skipped) == len(keys)
        for kid, verifier in keyset.keys.items():
            assert isinstance(kid, str)
            assert kid
            assert set(verifier.algorithms) <= set(algorithms)


def test_a_valid_key_among_odd_ones_is_still_used() -> None:
    good = jwk_of(ec_key("a"), "good")
    keyset = read_jwks(
        json.dumps({"keys": [{"kty": "EC", "kid": "odd", "x": [1]}, good]}).encode(),
        algorithms=["ES256"],
        token_options={},
    )
    assert list(keyset.keys) == ["good"]
    assert keyset.skipped[0].startswith("kid 'odd': ")
