"""TokenVerifier against a catalogue of good, bad and hostile tokens."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import math
import os
import re
import subprocess
import sys
import time
import traceback
import unicodedata
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

import wschat
import wschat.auth
from tests.support.common import SECRET
from wschat import TokenVerifier
from wschat.admission import find_token, missing_detail
from wschat.auth import Principal, token_fingerprint
from wschat.errors import (
    AuthenticationError,
    ConfigurationError,
    TokenExpired,
    TokenInvalid,
    TokenMalformed,
    TokenMissing,
    TokenNotYetValid,
    TokenTooLarge,
)
from wschat.options import DEFAULT_TOKEN_SOURCES, ChatOptions, TokenSourceName
from wschat.testing import mint_token

# -- helpers ---------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(obj: Any) -> str:
    return b64(json.dumps(obj).encode())


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": "alice", "iat": now, "exp": now + 600}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP: Any = object()


def hs256(payload: dict[str, Any], key: str | bytes = SECRET) -> str:
    return jwt.encode(payload, key, algorithm="HS256")


def hand_signed(header: dict[str, Any], payload: dict[str, Any], key: bytes) -> str:
    """Build an HMAC-SHA256 JWT by hand (PyJWT refuses to HMAC with a PEM key)."""
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    sig = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


def unsigned(alg: str, payload: dict[str, Any]) -> str:
    return f"{b64json({'alg': alg, 'typ': 'JWT'})}.{b64json(payload)}."


def refusal(verifier: TokenVerifier, token: str) -> AuthenticationError:
    with pytest.raises(AuthenticationError) as info:
        verifier.verify(token)
    err = info.value
    assert_no_token(err, token)
    return err


def assert_no_token(err: BaseException, token: str) -> None:
    """The token is in no message, str, repr, reason or chained traceback."""
    if len(token) < 6:  # too short to tell a leak from a coincidence
        return
    texts = [str(err), repr(err), "".join(traceback.format_exception(err))]
    texts += [getattr(err, "reason", ""), getattr(err, "detail", "")]
    for text in texts:
        assert token not in text
    # A long token must not leak in part either.
    if len(token) > 40:
        for text in texts:
            assert token[:40] not in text
            assert token[-40:] not in text


@pytest.fixture(scope="module")
def rsa_pair() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def _pair(
    key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey,
) -> tuple[bytes, bytes]:
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


# -- good tokens -----------------------------------------------------------------------


def test_valid_hs256_token_gives_principal(verifier: TokenVerifier) -> None:
    token = mint_token(SECRET, "alice", ttl=600)
    principal = verifier.verify(token)
    assert principal.user_id == "alice"
    assert principal.claims["sub"] == "alice"
    assert principal.expires_at is not None
    assert abs(principal.expires_at - (time.time() + 600)) < 5
    assert principal.fingerprint == token_fingerprint(token)
    assert token not in repr(principal)
    assert token not in repr(verifier)
    assert SECRET not in repr(verifier)


def test_padded_base64url_token_is_accepted_as_pyjwt_accepts_it(
    verifier: TokenVerifier,
) -> None:
    # Some issuers (AWS ALB) pad each part with "=" and sign the padded text;
    # PyJWT accepts that, and so does wschat's own structure check, which only
    # runs once PyJWT has refused a token.
    def padded(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode("ascii")

    raw_header = next(
        text
        for n in range(3)
        if len(text := json.dumps({"alg": "HS256", "kid": "k" * n})) % 3
    )
    header = padded(raw_header.encode())
    payload = padded(json.dumps(claims()).encode())
    assert header.endswith("=")
    signing_input = f"{header}.{payload}"
    sig = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    assert verifier.verify(f"{signing_input}.{padded(sig)}").user_id == "alice"
    # Padded with a bad signature: refused for the signature, not for the form.
    err = refusal(verifier, f"{signing_input}.c2ln")
    assert err.reason == "token_invalid: signature does not match the key"
    # Padding that does not fill a part to a multiple of 4 is not base64url.
    err = refusal(verifier, f"{header.rstrip('=')}=.{payload}.c2ln")
    assert isinstance(err, TokenMalformed)
    assert err.detail == "not a JWT: a part cannot be decoded"


def test_key_is_prepared_once_for_this_verifier_only(
    verifier: TokenVerifier, rsa_pair: tuple[bytes, bytes]
) -> None:
    # On the PyJWT this project pins, the verifier's key is prepared at
    # construction, not per token (a third of a decode's time for HMAC).
    assert verifier._key_prepared_once
    token = mint_token(SECRET, "alice", ttl=600)
    assert verifier.verify(token).user_id == "alice"
    assert verifier.verify(token).user_id == "alice"
    # Its algorithm objects still prepare any other key as PyJWT does.
    algorithm = verifier._jwt._jws.get_algorithm_by_name("HS256")
    assert algorithm.prepare_key("another-secret") == b"another-secret"
    with pytest.raises(jwt.InvalidKeyError):
        algorithm.prepare_key(rsa_pair[1])
    # PyJWT's global algorithms are untouched: module-level jwt.decode still
    # prepares each key it is given, and a wrong key still fails.
    other = "z" * 64
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, other, algorithms=["HS256"])
    assert jwt.decode(token, SECRET, algorithms=["HS256"])["sub"] == "alice"
    # A second verifier with another key does not see the first one's key.
    second = TokenVerifier(other, algorithms=["HS256"])
    assert isinstance(refusal(second, token), TokenInvalid)
    assert second.verify(mint_token(other, "bob", ttl=600)).user_id == "bob"


def test_rs256_key_prepared_once(rsa_pair: tuple[bytes, bytes]) -> None:
    private, public = rsa_pair
    verifier = TokenVerifier(public, algorithms=["RS256", "RS512"])
    assert verifier._key_prepared_once
    for alg in ("RS256", "RS512"):
        token = jwt.encode(claims(), private, algorithm=alg)
        assert verifier.verify(token).user_id == "alice"


def test_fingerprint_is_short_and_not_the_token() -> None:
    token = mint_token(SECRET, "alice")
    tag = token_fingerprint(token)
    assert tag.startswith("sha256:")
    assert len(tag) == len("sha256:") + 12
    assert tag == token_fingerprint(token)
    assert tag != token_fingerprint(mint_token(SECRET, "bob"))


def test_rs256_verifier(rsa_pair: tuple[bytes, bytes]) -> None:
    private, public = rsa_pair
    verifier = TokenVerifier(public, algorithms=["RS256"])
    assert verifier.verify(mint_token(private, "carol", algorithm="RS256")).user_id == (
        "carol"
    )


def test_es256_verifier() -> None:
    private, public = _pair(ec.generate_private_key(ec.SECP256R1()))
    verifier = TokenVerifier(public, algorithms=["ES256"])
    token = mint_token(private, "dave", algorithm="ES256")
    assert verifier.verify(token).user_id == "dave"
    other, _ = _pair(ec.generate_private_key(ec.SECP256R1()))
    assert refusal(verifier, mint_token(other, "dave", algorithm="ES256")).code == (
        "token_invalid"
    )


def test_eddsa_verifier() -> None:
    private, public = _pair(ed25519.Ed25519PrivateKey.generate())
    verifier = TokenVerifier(public, algorithms=["EdDSA"])
    token = mint_token(private, "erin", algorithm="EdDSA")
    assert verifier.verify(token).user_id == "erin"
    other, _ = _pair(ed25519.Ed25519PrivateKey.generate())
    err = refusal(verifier, mint_token(other, "erin", algorithm="EdDSA"))
    assert isinstance(err, TokenInvalid)


def test_audience_and_issuer_accepted_when_they_match() -> None:
    verifier = TokenVerifier(
        SECRET, algorithms=["HS256"], audience="chat", issuer="https://id.example"
    )
    token = hs256(claims(aud="chat", iss="https://id.example"))
    assert verifier.verify(token).user_id == "alice"


# -- the catalogue of refusals ------------------------------------------------------


def test_literal_test_is_not_a_jwt_in_plain_words(verifier: TokenVerifier) -> None:
    err = refusal(verifier, "test")
    assert isinstance(err, TokenMalformed)
    assert (err.code, err.close_code) == ("token_malformed", 4401)
    assert err.reason.startswith("token_malformed: not a JWT")
    assert "three" in err.detail
    assert "got 1 part" in err.detail


def test_empty_token_is_missing(verifier: TokenVerifier) -> None:
    err = refusal(verifier, "")
    assert isinstance(err, TokenMissing)
    assert err.code == "token_missing"


@pytest.mark.parametrize(
    "token",
    [
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0",  # 2 segments
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln.ZXh0cmE",  # 4 segments
        "Bearer abcdefghijklmn",
        "....",
    ],
)
def test_wrong_segment_count_is_malformed(verifier: TokenVerifier, token: str) -> None:
    err = refusal(verifier, token)
    assert isinstance(err, TokenMalformed)
    assert "not a JWT" in err.detail
    parts = token.count(".") + 1
    assert f"got {parts} part{'s' if parts != 1 else ''}" in err.detail


@pytest.mark.parametrize(
    "token",
    [
        "!!!!!!.@@@@@@.######",
        "a.b.c",  # one character is never valid base64
        "ey$$hbGc.eyJzdWIi.c2ln",
        # valid header, garbage payload and signature
        b64json({"alg": "HS256", "typ": "JWT"}) + ".%%%%~~~~.c2ln",
        b64json({"alg": "HS256", "typ": "JWT"}) + "." + b64json({"sub": "x"}) + ".!!",
        # base64 fine, but the header is not JSON
        b64(b"hello world") + "." + b64json({"sub": "x"}) + ".c2ln",
        # header JSON without a string alg
        b64json({"typ": "JWT"}) + "." + b64json({"sub": "x"}) + ".c2ln",
        b64json({"alg": 256}) + "." + b64json({"sub": "x"}) + ".c2ln",
        b64json(["HS256"]) + "." + b64json({"sub": "x"}) + ".c2ln",
        # payload is not a JSON object
        b64json({"alg": "HS256"}) + "." + b64(b"not json") + ".c2ln",
        b64json({"alg": "HS256"}) + "." + b64json([1, 2]) + ".c2ln",
        # empty header or payload
        "." + b64json({"sub": "x"}) + ".c2ln",
        b64json({"alg": "HS256"}) + "..c2ln",
        # deeply nested header (a RecursionError inside json) is still just garbage
        b64(b"[" * 5000) + "." + b64json({"sub": "x"}) + ".c2ln",
    ],
)
def test_garbage_is_malformed(verifier: TokenVerifier, token: str) -> None:
    err = refusal(verifier, token)
    assert isinstance(err, TokenMalformed), err
    assert err.reason.startswith("token_malformed: not a JWT")


def test_token_cut_short_cannot_be_decoded(verifier: TokenVerifier) -> None:
    token = hs256(claims())
    cut = next(
        token[:n]
        for n in range(len(token), 0, -1)
        if len(token[:n].split(".")[2]) % 4 == 1
    )
    err = refusal(verifier, cut)
    assert isinstance(err, TokenMalformed)
    assert err.detail == "not a JWT: a part cannot be decoded"


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_refused_in_any_case(verifier: TokenVerifier, alg: str) -> None:
    token = unsigned(alg, claims())
    err = refusal(verifier, token)
    assert isinstance(err, TokenInvalid)
    assert "none" in err.detail.lower()
    # Also with a signature part that is not empty.
    err = refusal(verifier, token + "c2lnbmF0dXJl")
    assert isinstance(err, TokenInvalid)


def test_alg_none_refused_even_if_verifier_is_public_key(
    rsa_pair: tuple[bytes, bytes],
) -> None:
    verifier = TokenVerifier(rsa_pair[1], algorithms=["RS256"])
    assert isinstance(refusal(verifier, unsigned("none", claims())), TokenInvalid)


def test_hs256_forged_with_rsa_public_key_is_refused(
    rsa_pair: tuple[bytes, bytes],
) -> None:
    _private, public = rsa_pair
    verifier = TokenVerifier(public, algorithms=["RS256"])
    forged = hand_signed({"alg": "HS256", "typ": "JWT"}, claims(), public)
    err = refusal(verifier, forged)
    assert isinstance(err, TokenInvalid)
    assert "HS256" in err.detail
    assert "RS256" in err.detail
    # With the PEM text stripped of its trailing newline, too.
    forged2 = hand_signed({"alg": "HS256"}, claims(), public.strip())
    assert isinstance(refusal(verifier, forged2), TokenInvalid)


def test_wrong_algorithm_is_refused(verifier: TokenVerifier) -> None:
    token = jwt.encode(claims(), SECRET + "y" * 30, algorithm="HS512")
    err = refusal(verifier, token)
    assert isinstance(err, TokenInvalid)
    assert "HS512" in err.detail


def test_wrong_signature_is_refused(verifier: TokenVerifier) -> None:
    token = hs256(claims(), "another-secret-" + "z" * 40)
    err = refusal(verifier, token)
    assert isinstance(err, TokenInvalid)
    assert "signature" in err.detail
    # A tampered payload with the original signature.
    good = hs256(claims())
    header, _payload, sig = good.split(".")
    tampered = f"{header}.{b64json(claims(sub='mallory'))}.{sig}"
    assert isinstance(refusal(verifier, tampered), TokenInvalid)


@pytest.mark.parametrize("claim", ["exp", "sub"])
def test_required_claims(verifier: TokenVerifier, claim: str) -> None:
    err = refusal(verifier, hs256(claims(**{claim: _DROP})))
    assert isinstance(err, TokenInvalid)
    assert claim in err.detail


def test_exp_null_is_refused(verifier: TokenVerifier) -> None:
    err = refusal(verifier, hs256(claims(exp=None)))
    assert isinstance(err, TokenInvalid)
    assert "exp" in err.detail


@pytest.mark.parametrize("exp", ["99999999999", "soon", [1], {"t": 1}, True, False])
def test_exp_must_be_a_number(verifier: TokenVerifier, exp: Any) -> None:
    # A numeric string passes PyJWT's int() but must not dodge the lifetime cap;
    # PyJWT reads true as 1 (expired): it is refused as what it is.
    err = refusal(verifier, hs256(claims(exp=exp)))
    assert isinstance(err, TokenInvalid)
    assert err.reason == "token_invalid: exp must be a number of seconds (NumericDate)"


def test_numeric_string_exp_cannot_bypass_lifetime_cap() -> None:
    verifier = TokenVerifier(SECRET, algorithms=["HS256"], max_lifetime=3600)
    far = str(int(time.time()) + 10 * 365 * 86400)
    with pytest.raises(TokenInvalid):
        verifier.verify(hs256(claims(exp=far, iat=_DROP)))


def test_expired_token(verifier: TokenVerifier) -> None:
    err = refusal(verifier, hs256(claims(iat=int(time.time()) - 7200, exp=1000)))
    assert isinstance(err, TokenExpired)
    assert (err.code, err.close_code) == ("token_expired", 4401)


def test_expiry_leeway_boundary() -> None:
    verifier = TokenVerifier(SECRET, algorithms=["HS256"], leeway=30)
    now = int(time.time())
    # Inside the leeway: expired 27 s ago still passes (3 s of margin for slow CI).
    inside = hs256(claims(iat=now - 100, exp=now - 27))
    assert verifier.verify(inside).user_id == "alice"
    # Just outside it: expired 31 s ago is refused.
    outside = hs256(claims(iat=now - 100, exp=now - 31))
    assert isinstance(refusal(verifier, outside), TokenExpired)
    # With no leeway, a token that expired a second ago is refused.
    strict = TokenVerifier(SECRET, algorithms=["HS256"], leeway=0)
    assert isinstance(refusal(strict, hs256(claims(exp=now - 1))), TokenExpired)
    assert strict.verify(hs256(claims(exp=now + 3))).user_id == "alice"


@pytest.fixture
def frozen_now(monkeypatch: pytest.MonkeyPatch) -> int:
    """Freeze the clock the verifier reads, so boundaries are tested to the second.

    The time claims are checked by wschat (not PyJWT), with ``wschat.auth._now``.
    The frozen time is a year before the real one: a verifier that read any other
    clock would refuse every token these tests mint as expired.
    """
    now = int(time.time()) - 365 * 86400
    monkeypatch.setattr(wschat.auth, "_now", lambda: float(now))
    return now


@pytest.mark.parametrize("leeway", [0, 5, 30])
def test_expiry_leeway_boundary_exact(frozen_now: int, leeway: int) -> None:
    verifier = TokenVerifier(SECRET, algorithms=["HS256"], leeway=leeway)
    now = frozen_now
    # PyJWT refuses exp <= now - leeway: exactly at the boundary is expired.
    at = hs256(claims(iat=now - 100, exp=now - leeway))
    assert isinstance(refusal(verifier, at), TokenExpired)
    after = hs256(claims(iat=now - 100, exp=now - leeway + 1))
    assert verifier.verify(after).user_id == "alice"


@pytest.mark.parametrize("leeway", [0, 5])
def test_nbf_leeway_boundary_exact(frozen_now: int, leeway: int) -> None:
    verifier = TokenVerifier(SECRET, algorithms=["HS256"], leeway=leeway)
    now = frozen_now
    ok = hs256(claims(iat=now, nbf=now + leeway, exp=now + 600))
    assert verifier.verify(ok).user_id == "alice"
    early = hs256(claims(iat=now, nbf=now + leeway + 1, exp=now + 600))
    assert isinstance(refusal(verifier, early), TokenNotYetValid)


def test_nbf_in_the_future(verifier: TokenVerifier) -> None:
    err = refusal(verifier, hs256(claims(nbf=int(time.time()) + 3600)))
    assert isinstance(err, TokenNotYetValid)
    assert err.code == "token_not_yet_valid"
    # nbf inside the leeway passes.
    assert verifier.verify(hs256(claims(nbf=int(time.time()) + 1))).user_id == "alice"


def test_iat_in_the_future(verifier: TokenVerifier) -> None:
    now = int(time.time())
    err = refusal(verifier, hs256(claims(iat=now + 3600, exp=now + 4000)))
    assert isinstance(err, TokenNotYetValid)


def test_wrong_audience() -> None:
    verifier = TokenVerifier(SECRET, algorithms=["HS256"], audience="chat")
    err = refusal(verifier, hs256(claims(aud="billing")))
    assert isinstance(err, TokenInvalid)
    assert "aud" in err.detail
    assert isinstance(refusal(verifier, hs256(claims())), TokenInvalid)


def test_token_with_audience_refused_by_verifier_without_one(
    verifier: TokenVerifier,
) -> None:
    assert isinstance(refusal(verifier, hs256(claims(aud="chat"))), TokenInvalid)


def test_wrong_issuer() -> None:
    verifier = TokenVerifier(SECRET, algorithms=["HS256"], issuer="https://id.example")
    err = refusal(verifier, hs256(claims(iss="https://evil.example")))
    assert isinstance(err, TokenInvalid)
    assert "iss" in err.detail


@pytest.mark.parametrize("sub", ["", 42, None, "x" * 257])
def test_bad_subject(verifier: TokenVerifier, sub: Any) -> None:
    assert isinstance(refusal(verifier, hs256(claims(sub=sub))), TokenInvalid)


def test_one_mib_token_refused_before_decoding(
    verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("decoded an oversized token")

    monkeypatch.setattr(jwt, "get_unverified_header", boom)
    monkeypatch.setattr(jwt.PyJWT, "decode", boom)
    monkeypatch.setattr(base64, "urlsafe_b64decode", boom)
    big = hs256(claims(pad="A" * (1024 * 1024)))
    err = refusal(verifier, big)
    assert isinstance(err, TokenTooLarge)
    assert err.code == "token_too_large"
    assert str(verifier.max_token_bytes) in err.detail


def test_size_limit_counts_bytes_not_characters() -> None:
    verifier = TokenVerifier(SECRET, algorithms=["HS256"], max_token_bytes=1000)
    token = "€" * 500  # 500 characters, 1500 bytes of UTF-8
    assert isinstance(refusal(verifier, token), TokenTooLarge)


def test_token_just_under_the_limit_is_decoded() -> None:
    token = hs256(claims(pad="A" * 200))
    verifier = TokenVerifier(SECRET, algorithms=["HS256"], max_token_bytes=len(token))
    assert verifier.verify(token).user_id == "alice"
    smaller = TokenVerifier(
        SECRET, algorithms=["HS256"], max_token_bytes=len(token) - 1
    )
    assert isinstance(refusal(smaller, token), TokenTooLarge)


def test_lifetime_cap() -> None:
    verifier = TokenVerifier(SECRET, algorithms=["HS256"], max_lifetime=3600)
    now = int(time.time())
    assert verifier.verify(hs256(claims(iat=now, exp=now + 3600))).user_id == "alice"
    err = refusal(verifier, hs256(claims(iat=now, exp=now + 7200)))
    assert isinstance(err, TokenInvalid)
    assert "lifetime" in err.detail
    # Without iat the cap counts from now.
    assert isinstance(
        refusal(verifier, hs256(claims(iat=_DROP, exp=now + 7200))), TokenInvalid
    )
    # An old iat makes the lifetime long even if exp is close.
    old = hs256(claims(iat=now - 86400, exp=now + 60))
    assert isinstance(refusal(verifier, old), TokenInvalid)
    # None lifts the cap.
    free = TokenVerifier(SECRET, algorithms=["HS256"], max_lifetime=None)
    assert free.verify(hs256(claims(iat=now, exp=now + 10**8))).user_id == "alice"


def test_every_refusal_is_an_authentication_error_with_4401(
    verifier: TokenVerifier, rsa_pair: tuple[bytes, bytes]
) -> None:
    catalogue = [
        "test",
        "",
        "a.b",
        unsigned("none", claims()),
        hs256(claims(exp=1000, iat=900)),
        hs256(claims(nbf=int(time.time()) + 999)),
        "x" * 10_000,
        hand_signed({"alg": "HS256"}, claims(), rsa_pair[1]) + "x",
    ]
    for token in catalogue:
        err = refusal(verifier, token)
        assert err.close_code == 4401
        assert err.http_status == 401
        assert err.code.startswith("token_")
        assert len(err.reason.encode()) <= 123


def test_principal_repr_hides_claims() -> None:
    principal = Principal(user_id="u", claims={"secret": "s3cr3t-value"})  # type: ignore[arg-type]
    assert "s3cr3t-value" not in repr(principal)


# -- construction refusals ----------------------------------------------------------


@pytest.mark.parametrize("algs", [["none"], ["None"], ["HS256", "none"], ["NONE"]])
def test_construction_refuses_none(algs: list[str]) -> None:
    with pytest.raises(ConfigurationError, match="none"):
        TokenVerifier(SECRET, algorithms=algs)


def test_construction_refuses_mixed_families(rsa_pair: tuple[bytes, bytes]) -> None:
    with pytest.raises(ConfigurationError, match="mix"):
        TokenVerifier(SECRET, algorithms=["HS256", "RS256"])
    with pytest.raises(ConfigurationError, match="mix"):
        TokenVerifier(rsa_pair[1], algorithms=["RS256", "HS256"])


def test_construction_refuses_string_algorithms() -> None:
    with pytest.raises(ConfigurationError, match=r'algorithms=\["HS256"\]'):
        TokenVerifier(SECRET, algorithms="HS256")


def test_construction_refuses_empty_and_unknown_algorithms() -> None:
    with pytest.raises(ConfigurationError):
        TokenVerifier(SECRET, algorithms=[])
    with pytest.raises(ConfigurationError, match="HS999"):
        TokenVerifier(SECRET, algorithms=["HS999"])


@pytest.mark.parametrize(
    ("secret", "algs"),
    [("short", ["HS256"]), ("x" * 31, ["HS256"]), ("x" * 40, ["HS384"])],
)
def test_construction_refuses_short_hmac_secret(secret: str, algs: list[str]) -> None:
    with pytest.raises(ConfigurationError, match="secret") as info:
        TokenVerifier(secret, algorithms=algs)
    assert secret not in str(info.value)


def test_hmac_secret_at_the_minimum_is_accepted() -> None:
    TokenVerifier("x" * 32, algorithms=["HS256"])
    TokenVerifier(b"x" * 64, algorithms=["HS512"])


def test_construction_refuses_wrong_key_type(rsa_pair: tuple[bytes, bytes]) -> None:
    _private, public = rsa_pair
    with pytest.raises(ConfigurationError, match="key"):
        TokenVerifier(SECRET, algorithms=["RS256"])  # a secret for RS256
    with pytest.raises(ConfigurationError):
        TokenVerifier(public, algorithms=["HS256"])  # a PEM key as HMAC secret
    _ec_private, ec_public = _pair(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(ConfigurationError):
        TokenVerifier(ec_public, algorithms=["RS256"])  # EC key for RSA
    with pytest.raises(ConfigurationError):
        TokenVerifier(public, algorithms=["ES256"])  # RSA key for EC


def test_construction_refuses_private_key(rsa_pair: tuple[bytes, bytes]) -> None:
    # A verifier holding a private key would refuse every token with a vague error.
    with pytest.raises(ConfigurationError, match="public"):
        TokenVerifier(rsa_pair[0], algorithms=["RS256"])
    ed_private, _ = _pair(ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(ConfigurationError, match="public"):
        TokenVerifier(ed_private, algorithms=["EdDSA"])


def test_construction_refuses_bad_limits() -> None:
    with pytest.raises(ConfigurationError):
        TokenVerifier(SECRET, algorithms=["HS256"], leeway=-1)
    with pytest.raises(ConfigurationError):
        TokenVerifier(SECRET, algorithms=["HS256"], leeway=3600)
    with pytest.raises(ConfigurationError):
        TokenVerifier(SECRET, algorithms=["HS256"], max_token_bytes=10)


def test_configuration_errors_never_show_the_key(
    rsa_pair: tuple[bytes, bytes],
) -> None:
    for key, algs in [(SECRET, ["RS256"]), (rsa_pair[0].decode(), ["HS256"])]:
        with pytest.raises(ConfigurationError) as info:
            TokenVerifier(key, algorithms=algs)
        text = "".join(traceback.format_exception(info.value))
        assert key[:30] not in str(info.value)
        assert key not in text


# -- defaults, pinned with literal values and a frozen clock --------------------------


def frozen_claims(now: int, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": "alice", "iat": now, "exp": now + 600}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not _DROP}


def test_default_settings_are_the_documented_ones(verifier: TokenVerifier) -> None:
    assert wschat.auth.DEFAULT_MAX_TOKEN_BYTES == 8192
    assert verifier.leeway == 5.0
    assert verifier.max_lifetime == 86400.0
    assert verifier.max_token_bytes == 8192
    assert verifier.require == ("exp", "sub")
    assert verifier.algorithms == ("HS256",)
    assert (verifier.audience, verifier.issuer) == (None, None)


def test_default_leeway_is_five_seconds(
    verifier: TokenVerifier, frozen_now: int
) -> None:
    now = frozen_now
    # Expired at exp <= now - leeway.
    assert verifier.verify(hs256(frozen_claims(now, exp=now - 4))).user_id == "alice"
    assert isinstance(
        refusal(verifier, hs256(frozen_claims(now, exp=now - 5))), TokenExpired
    )
    # Not yet valid past now + leeway, for nbf and for iat.
    assert verifier.verify(hs256(frozen_claims(now, nbf=now + 5))).user_id == "alice"
    early = refusal(verifier, hs256(frozen_claims(now, nbf=now + 6)))
    assert (
        early.reason == "token_not_yet_valid: token is not valid yet; check the clocks"
    )
    late_iat = frozen_claims(now, iat=now + 5, exp=now + 900)
    assert verifier.verify(hs256(late_iat)).user_id == "alice"
    future = frozen_claims(now, iat=now + 6, exp=now + 900)
    assert isinstance(refusal(verifier, hs256(future)), TokenNotYetValid)


def test_default_lifetime_cap_is_24_hours_plus_leeway(
    verifier: TokenVerifier, frozen_now: int
) -> None:
    now = frozen_now
    longest = hs256(frozen_claims(now, exp=now + 86400 + 5))
    assert verifier.verify(longest).expires_at == now + 86405
    err = refusal(verifier, hs256(frozen_claims(now, exp=now + 86400 + 6)))
    assert err.reason == "token_invalid: token lifetime is over the 86400 s cap"
    # Without iat the lifetime counts from now.
    from_now = frozen_claims(now, iat=_DROP, exp=now + 86405)
    assert verifier.verify(hs256(from_now)).user_id == "alice"
    too_long = frozen_claims(now, iat=_DROP, exp=now + 86406)
    assert isinstance(refusal(verifier, hs256(too_long)), TokenInvalid)
    # An iat in the past makes the lifetime longer than what is left of it.
    issued_long_ago = frozen_claims(now, iat=now - 86400, exp=now + 6)
    assert isinstance(refusal(verifier, hs256(issued_long_ago)), TokenInvalid)


def test_lifetime_cap_of_a_fraction_of_a_second(frozen_now: int) -> None:
    verifier = TokenVerifier(SECRET, algorithms=["HS256"], leeway=0, max_lifetime=0.5)
    now = frozen_now
    err = refusal(verifier, hs256(frozen_claims(now, exp=now + 1)))
    assert err.reason == "token_invalid: token lifetime is over the 0.5 s cap"
    month = TokenVerifier(SECRET, algorithms=["HS256"], max_lifetime=30 * 86400.0)
    err = refusal(month, hs256(frozen_claims(now, exp=now + 31 * 86400)))
    assert err.reason == "token_invalid: token lifetime is over the 2592000 s cap"


def test_float_time_claims_are_compared_as_given(frozen_now: int) -> None:
    verifier = TokenVerifier(SECRET, algorithms=["HS256"], leeway=0)
    now = frozen_now
    principal = verifier.verify(hs256(frozen_claims(now, exp=now + 600.75)))
    assert principal.expires_at == now + 600
    assert verifier.verify(hs256(frozen_claims(now, exp=now + 0.25))).user_id == (
        "alice"
    )
    assert isinstance(
        refusal(verifier, hs256(frozen_claims(now, exp=now - 0.25))), TokenExpired
    )
    assert isinstance(
        refusal(verifier, hs256(frozen_claims(now, nbf=now + 0.5))), TokenNotYetValid
    )


def test_default_token_cap_is_8_kib() -> None:
    verifier = TokenVerifier(SECRET, algorithms=["HS256"])
    # 8192 bytes are decoded (and refused for not being a JWT), 8193 are not.
    assert isinstance(refusal(verifier, "x" * 8192), TokenMalformed)
    err = refusal(verifier, "x" * 8193)
    assert err.reason == "token_too_large: token is 8193 bytes; the limit is 8192"


def test_non_ascii_token_of_exactly_the_cap_in_characters_is_counted_in_bytes() -> None:
    verifier = TokenVerifier(SECRET, algorithms=["HS256"])
    err = refusal(verifier, "é" * 8192)  # 8192 characters, 16384 bytes
    assert err.reason == "token_too_large: token is 16384 bytes; the limit is 8192"
    small = TokenVerifier(SECRET, algorithms=["HS256"], max_token_bytes=100)
    assert isinstance(refusal(small, "é" * 50), TokenMalformed)  # 100 bytes
    err = refusal(small, "é" * 51)
    assert err.reason == "token_too_large: token is 102 bytes; the limit is 100"
    assert isinstance(refusal(small, "😀" * 25), TokenMalformed)  # 100 bytes
    assert isinstance(refusal(small, "😀" * 26), TokenTooLarge)  # 104 bytes
    # A lone surrogate (from a percent-decoded query) is counted, not a crash.
    assert isinstance(refusal(small, "\ud800" * 34), TokenTooLarge)  # 102 bytes


def test_verifier_without_exp_requirement(frozen_now: int) -> None:
    verifier = TokenVerifier(SECRET, algorithms=["HS256"], require=["sub"])
    now = frozen_now
    principal = verifier.verify(hs256({"sub": "alice"}))
    assert (principal.user_id, principal.expires_at) == ("alice", None)
    assert verifier.verify(hs256({"sub": "alice", "iat": now})).expires_at is None
    # Present, exp is still checked.
    err = refusal(verifier, hs256({"sub": "alice", "exp": None}))
    assert err.reason == "token_invalid: exp must be a number of seconds (NumericDate)"
    assert isinstance(
        refusal(verifier, hs256({"sub": "a", "exp": now - 60})), TokenExpired
    )
    # sub is checked whether required or not.
    no_sub = TokenVerifier(SECRET, algorithms=["HS256"], require=["exp"])
    err = refusal(no_sub, hs256({"exp": now + 60}))
    assert err.reason == "token_invalid: sub must be a string"


def test_numeric_string_exp_refused_without_lifetime_cap(frozen_now: int) -> None:
    verifier = TokenVerifier(SECRET, algorithms=["HS256"], max_lifetime=None)
    err = refusal(verifier, hs256(frozen_claims(frozen_now, exp="99999999999")))
    assert err.reason == "token_invalid: exp must be a number of seconds (NumericDate)"
    # A real number that far away is accepted: the cap was lifted.
    far = verifier.verify(hs256(frozen_claims(frozen_now, exp=99999999999)))
    assert far.expires_at == 99999999999


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", [True, False, "1", "soon", None, [1], {"t": 1}])
def test_time_claims_must_be_numbers(
    verifier: TokenVerifier, frozen_now: int, claim: str, value: Any
) -> None:
    token = hs256(frozen_claims(frozen_now, **{claim: value}))
    err = refusal(verifier, token)
    if claim == "exp" and value is None:  # a required claim that is null is missing
        assert err.reason == "token_invalid: the exp claim is required"
    else:
        assert err.reason == (
            f"token_invalid: {claim} must be a number of seconds (NumericDate)"
        )


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("literal", ["1e400", "-1e400", "NaN", "Infinity"])
def test_time_claims_must_be_finite(
    verifier: TokenVerifier, frozen_now: int, claim: str, literal: str
) -> None:
    # JSON that PyJWT's json.loads reads as infinity or NaN.
    payload = json.dumps(frozen_claims(frozen_now, **{claim: 0})).replace(
        f'"{claim}": 0', f'"{claim}": {literal}'
    )
    header = b64json({"alg": "HS256", "typ": "JWT"})
    signing_input = f"{header}.{b64(payload.encode())}"
    sig = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    err = refusal(verifier, f"{signing_input}.{b64(sig)}")
    assert err.reason == f"token_invalid: {claim} must be a finite number of seconds"


def test_time_claims_are_checked_with_wschats_clock_not_pyjwts(
    verifier: TokenVerifier, frozen_now: int
) -> None:
    # By the real clock this token expired a year ago; by the verifier's, it is fine.
    assert verifier.verify(hs256(frozen_claims(frozen_now))).user_id == "alice"


# -- what a sub may contain ----------------------------------------------------------


@pytest.mark.parametrize(
    "sub",
    [
        "a",
        "x" * 256,
        "é" * 256,  # 512 bytes
        "中" * 170,  # 510 bytes
        "😀" * 128,  # 512 bytes
        "alice@example.com",
        "auth0|5f7c8ec7c33c6c004bbafe82",
        "user name",
        "a\u00a0b",  # no-break space: a space separator, visible as a space
        "\ue000",  # private use
        "Ωμέγα-Ж-ح-ไทย",
        "x" * 255 + "é",
    ],
)
def test_subs_that_are_accepted(sub: str) -> None:
    assert wschat.auth.check_subject(sub) == sub
    verifier = TokenVerifier(SECRET, algorithms=["HS256"])
    assert verifier.verify(mint_token(SECRET, sub)).user_id == sub


@pytest.mark.parametrize(
    ("sub", "reason"),
    [
        (42, "sub must be a string"),
        (None, "sub must be a string"),
        (["alice"], "sub must be a string"),
        ("", "sub must not be empty"),
        ("x" * 257, "sub is 257 characters long; the limit is 256"),
        ("é" * 257, "sub is 257 characters long; the limit is 256"),
        ("中" * 171, "sub is 513 bytes of UTF-8; the limit is 512"),
        ("😀" * 129, "sub is 516 bytes of UTF-8; the limit is 512"),
        ("x" * 511 + "é", "sub is 512 characters long; the limit is 256"),
        ("€" * 171, "sub is 513 bytes of UTF-8; the limit is 512"),
        ("xx" + "😀" * 128, "sub is 514 bytes of UTF-8; the limit is 512"),
        ("\ud800", "sub is not valid UTF-8: a lone surrogate (U+D800 at position 0)"),
        ("ab\udfff", "sub is not valid UTF-8: a lone surrogate (U+DFFF at position 2)"),
        ("é\udc80", "sub is not valid UTF-8: a lone surrogate (U+DC80 at position 1)"),
        ("a\x00", "sub holds a control character (U+0000 at position 1)"),
        ("\x1f", "sub holds a control character (U+001F at position 0)"),
        ("a\tb", "sub holds a control character (U+0009 at position 1)"),
        ("alice\n", "sub holds a control character (U+000A at position 5)"),
        ("del\x7f", "sub holds a control character (U+007F at position 3)"),
        ("c1\x80", "sub holds a control character (U+0080 at position 2)"),
        ("nel\x85", "sub holds a control character (U+0085 at position 3)"),
        ("c1\x9f", "sub holds a control character (U+009F at position 2)"),
        (
            "al\u200bice",
            "sub holds an invisible format character (U+200B at position 2)",
        ),
        (
            "\u202ealice",
            "sub holds an invisible format character (U+202E at position 0)",
        ),
        ("a\u2066b", "sub holds an invisible format character (U+2066 at position 1)"),
        ("\ufeffa", "sub holds an invisible format character (U+FEFF at position 0)"),
        (
            "so\u00adft",
            "sub holds an invisible format character (U+00AD at position 2)",
        ),
        (
            "👨\u200d👩",
            "sub holds an invisible format character (U+200D at position 1)",
        ),
        (
            "t\U000e0041",
            "sub holds an invisible format character (U+E0041 at position 1)",
        ),
        ("line\u2028", "sub holds a line separator (U+2028 at position 4)"),
        ("para\u2029", "sub holds a paragraph separator (U+2029 at position 4)"),
        ("x" * 255 + "\x00", "sub holds a control character (U+0000 at position 255)"),
    ],
)
def test_subs_that_are_refused(verifier: TokenVerifier, sub: Any, reason: str) -> None:
    with pytest.raises(TokenInvalid) as checked:
        wschat.auth.check_subject(sub)
    assert checked.value.detail == reason
    err = refusal(verifier, mint_token(SECRET, "x", claims={"sub": sub}))
    if sub is None:  # a required claim that is null is missing
        reason = "the sub claim is required"
    assert err.reason == f"token_invalid: {reason}"
    assert (err.close_code, err.code) == (4401, "token_invalid")
    assert len(err.reason.encode()) <= 123


def test_sub_reason_never_shows_the_sub() -> None:
    for sub in ["secret-user-name\u202e", "secret-user-name\x00", "secret-user\ud800"]:
        with pytest.raises(TokenInvalid) as checked:
            wschat.auth.check_subject(sub)
        assert "secret" not in checked.value.reason
        assert "secret" not in repr(checked.value)


# -- construction: numbers, keys and algorithms --------------------------------------

NOT_FINITE_OR_WRONG_TYPE: list[Any] = [
    math.nan,
    math.inf,
    -math.inf,
    True,
    False,
    "5",
    None,
    [5],
]


@pytest.mark.parametrize("value", [*NOT_FINITE_OR_WRONG_TYPE, -1, -0.001, 300.5, 301])
def test_leeway_must_be_a_finite_number_from_0_to_300(value: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        TokenVerifier(SECRET, algorithms=["HS256"], leeway=value)
    assert str(info.value).startswith(
        "configuration_error: leeway must be a number of seconds from 0 to 300; got "
    )


@pytest.mark.parametrize("value", [0, 0.0, 0.5, 300, 300.0])
def test_leeway_bounds_are_accepted(value: float) -> None:
    assert TokenVerifier(SECRET, algorithms=["HS256"], leeway=value).leeway == value


def test_nan_leeway_no_longer_accepts_a_token_expired_a_year_ago() -> None:
    with pytest.raises(ConfigurationError, match="leeway"):
        TokenVerifier(SECRET, algorithms=["HS256"], leeway=math.nan)


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, True, "3600", [1], 0, 0.0, -1, -0.5]
)
def test_max_lifetime_must_be_a_finite_number_above_0_or_none(value: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        TokenVerifier(SECRET, algorithms=["HS256"], max_lifetime=value)
    assert str(info.value) == (
        "configuration_error: max_lifetime must be a number of seconds above 0, "
        f"or None to lift the cap; got {value!r}"
    )


@pytest.mark.parametrize("value", [0.001, 1, 3600, 10**12, None])
def test_max_lifetime_accepted(value: float | None) -> None:
    verifier = TokenVerifier(SECRET, algorithms=["HS256"], max_lifetime=value)
    assert verifier.max_lifetime == value


@pytest.mark.parametrize("value", [63, 0, -1, 64.0, 8192.0, True, math.nan, "8192"])
def test_max_token_bytes_must_be_an_integer_of_at_least_64(value: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        TokenVerifier(SECRET, algorithms=["HS256"], max_token_bytes=value)
    assert str(info.value) == (
        "configuration_error: max_token_bytes must be an integer of bytes of at "
        f"least 64; got {value!r}"
    )


def test_max_token_bytes_of_64_is_accepted() -> None:
    verifier = TokenVerifier(SECRET, algorithms=["HS256"], max_token_bytes=64)
    assert isinstance(refusal(verifier, "x" * 64), TokenMalformed)
    assert isinstance(refusal(verifier, "x" * 65), TokenTooLarge)


@pytest.mark.parametrize("require", ["exp", ["exp", 1], [None]])
def test_require_must_be_a_list_of_claim_names(require: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        TokenVerifier(SECRET, algorithms=["HS256"], require=require)
    assert str(info.value) == (
        "configuration_error: require must be a list of claim names, "
        'e.g. require=["exp", "sub"]'
    )


@pytest.mark.parametrize(
    ("algs", "needed"),
    [(["HS256"], 32), (["HS384"], 48), (["HS512"], 64), (["HS256", "HS512"], 64)],
)
def test_hmac_secret_minimum_per_algorithm(algs: list[str], needed: int) -> None:
    TokenVerifier("k" * needed, algorithms=algs)
    TokenVerifier(b"k" * needed, algorithms=algs)
    with pytest.raises(ConfigurationError) as info:
        TokenVerifier("k" * (needed - 1), algorithms=algs)
    assert str(info.value) == (
        f"configuration_error: HMAC secret is {needed - 1} bytes; {'/'.join(algs)} "
        f"needs at least {needed} (RFC 7518). Make one with: "
        "python -c 'import secrets; print(secrets.token_urlsafe(64))'"
    )


def test_hmac_secret_length_is_counted_in_bytes() -> None:
    TokenVerifier("é" * 16, algorithms=["HS256"])  # 16 characters, 32 bytes
    with pytest.raises(ConfigurationError, match="31 bytes"):
        TokenVerifier("é" * 15 + "x", algorithms=["HS256"])


@functools.cache
def _rsa_public(bits: int) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize("alg", ["RS256", "PS512"])
@pytest.mark.parametrize("bits", [1024, 2040])
def test_weak_rsa_key_is_refused_at_construction(alg: str, bits: int) -> None:
    assert wschat.auth.MIN_RSA_BITS == 2048
    with pytest.raises(ConfigurationError) as info:
        TokenVerifier(_rsa_public(bits), algorithms=[alg])
    assert str(info.value) == (
        f"configuration_error: RSA key is {bits} bits; {alg} needs at least 2048 "
        "(NIST SP 800-131A). Issue tokens with a new key of 2048 bits or more"
    )


def test_rsa_key_of_2048_bits_is_accepted(rsa_pair: tuple[bytes, bytes]) -> None:
    private, public = rsa_pair
    verifier = TokenVerifier(public, algorithms=["RS256", "PS256"])
    for alg in ("RS256", "PS256"):
        token = jwt.encode(claims(), private, algorithm=alg)
        assert verifier.verify(token).user_id == "alice"


@pytest.mark.parametrize(
    ("alg", "curve"),
    [
        ("ES256", ec.SECP256R1()),
        ("ES384", ec.SECP384R1()),
        ("ES512", ec.SECP521R1()),
        ("ES521", ec.SECP521R1()),
        ("ES256K", ec.SECP256K1()),
    ],
)
def test_ec_curves_pyjwt_accepts(alg: str, curve: ec.EllipticCurve) -> None:
    private, public = _pair(ec.generate_private_key(curve))
    verifier = TokenVerifier(public, algorithms=[alg])
    token = jwt.encode(claims(), private, algorithm=alg)
    assert verifier.verify(token).user_id == "alice"


def test_ec_key_on_another_curve_does_not_fit() -> None:
    _private, public = _pair(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(ConfigurationError) as info:
        TokenVerifier(public, algorithms=["ES256"])
    assert str(info.value) == (
        "configuration_error: key does not fit ES256: expected a PEM public key"
    )


def test_key_that_does_not_fit_names_what_was_expected(
    rsa_pair: tuple[bytes, bytes],
) -> None:
    with pytest.raises(ConfigurationError) as info:
        TokenVerifier(SECRET, algorithms=["RS256"])
    assert str(info.value) == (
        "configuration_error: key does not fit RS256: expected a PEM public key"
    )
    with pytest.raises(ConfigurationError) as info:
        TokenVerifier(rsa_pair[1] + b"x" * 64, algorithms=["HS256"])
    assert str(info.value) == (
        "configuration_error: key for HS256 is a PEM or SSH key, not an HMAC secret: "
        'list the key\'s own algorithm (e.g. algorithms=["RS256"] for RSA, ["ES256"] '
        "for EC P-256), never an HS* one"
    )


def test_private_key_is_refused_with_the_fix(rsa_pair: tuple[bytes, bytes]) -> None:
    with pytest.raises(ConfigurationError) as info:
        TokenVerifier(rsa_pair[0], algorithms=["RS256"])
    assert str(info.value) == (
        "configuration_error: key for RS256 is a private key; give the verifier the "
        "PEM public key (keep the private key on the token issuer)"
    )


SUPPORTED = (
    "ES256, ES256K, ES384, ES512, ES521, EdDSA, HS256, HS384, HS512, PS256, PS384, "
    "PS512, RS256, RS384, RS512"
)


@pytest.mark.parametrize("name", ["HS999", "Ed25519", "hs256", "RS1"])
def test_unknown_algorithm_is_named_with_the_supported_ones(name: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        TokenVerifier(SECRET, algorithms=[name])
    assert str(info.value) == (
        f"configuration_error: unknown algorithm {name!r}; use one of {SUPPORTED}"
    )
    assert "cryptography" not in str(info.value)


def test_public_algorithms_are_the_ones_pyjwt_implements_with_cryptography() -> None:
    assert frozenset(jwt.algorithms.requires_cryptography) == wschat.auth._PUBLIC
    assert set(jwt.algorithms.get_default_algorithms()) == (
        wschat.auth._PUBLIC | wschat.auth._HMAC | {"none"}
    )


@pytest.mark.parametrize("algs", [[None], [b"HS256"], ["HS256", 256]])
def test_algorithms_must_be_strings(algs: list[Any]) -> None:
    with pytest.raises(ConfigurationError) as info:
        TokenVerifier(SECRET, algorithms=algs)
    assert str(info.value) == (
        'configuration_error: algorithms must be strings, e.g. ["HS256"]'
    )


def test_algorithm_messages_say_the_fix() -> None:
    with pytest.raises(ConfigurationError) as info:
        TokenVerifier(SECRET, algorithms=[])
    assert str(info.value) == (
        'configuration_error: algorithms must name at least one, e.g. ["HS256"]'
    )
    with pytest.raises(ConfigurationError) as info:
        TokenVerifier(SECRET, algorithms=["HS256", "nOnE"])
    assert str(info.value) == (
        'configuration_error: algorithm "none" is never accepted (it takes unsigned '
        'tokens); name the one your issuer signs with, e.g. algorithms=["HS256"] or '
        '["RS256"]'
    )
    with pytest.raises(ConfigurationError) as info:
        TokenVerifier(SECRET, algorithms=["RS256", "HS256"])
    assert str(info.value) == (
        "configuration_error: algorithms mix HMAC (HS*) with public-key families; "
        "that lets a token signed with the public key as an HMAC secret pass. "
        'Use one family: the one your issuer signs with, e.g. algorithms=["RS256"]'
    )


def test_public_key_algorithm_without_cryptography_says_to_install_it(
    rsa_pair: tuple[bytes, bytes], tmp_path: Path
) -> None:
    # With cryptography (here), the key is fine.
    assert TokenVerifier(rsa_pair[1], algorithms=["RS256"]).algorithms == ("RS256",)
    # A real PyJWT without cryptography: the import is blocked in a fresh process,
    # which imports this same wschat (also under mutation testing).
    (tmp_path / "key.pem").write_bytes(rsa_pair[1])
    script = (
        "import sys; sys.modules['cryptography'] = None\n"
        "from wschat import TokenVerifier\n"
        "from wschat.errors import ConfigurationError\n"
        "try:\n"
        "    TokenVerifier(open(sys.argv[1], 'rb').read(), algorithms=['RS256'])\n"
        "except ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    src = str(Path(wschat.__file__).resolve().parent.parent)
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "key.pem")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": src},
        check=False,
    )
    assert done.stdout == (
        "configuration_error: RS256 needs the cryptography package: "
        "pip install 'wschat[crypto]'\n"
    ), done.stderr


def test_weak_key_is_also_refused_by_pyjwt_at_decode() -> None:
    # The defense in depth the verifier keeps: PyJWT's own minimum on every decode.
    verifier = TokenVerifier(SECRET, algorithms=["HS256"])
    assert verifier._jwt.options["enforce_minimum_key_length"] is True


# -- every reason in docs/auth.md, exactly as the verifier says it ---------------------

DOCS = Path(__file__).resolve().parents[2] / "docs"

#: Rows said by the endpoint, not by the verifier or find_token (tested end to end),
#: and the verifier's last resort, which no token known to PyJWT 2.x reaches.
NOT_FROM_THE_VERIFIER = {
    'token_missing: the first frame must be {"type": "auth", ...}',
    "token_invalid: a refreshed token must have the same sub",
    "token_expired: token expired; reconnect or send an auth frame",
    "token_expired: token expired; send an auth frame before exp",
    "token_revoked: this token or session was revoked; sign in again",
    "token_invalid: token could not be verified",
}


def signed_payload(payload: str, header: dict[str, Any] | None = None) -> str:
    head = b64json(header or {"alg": "HS256", "typ": "JWT"})
    signing_input = f"{head}.{b64(payload.encode())}"
    sig = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


def documented_reasons() -> list[str]:
    text = (DOCS / "auth.md").read_text()
    table = text[text.index("## Why is my token refused") :]
    return re.findall(r"^\| `([a-z_]+: [^`]*)`", table, re.M)


def said_reasons(frozen: int) -> list[str]:
    """What the verifier and find_token say for one token of each kind."""
    verifier = TokenVerifier(SECRET, algorithms=["HS256"])
    now = frozen
    good = hs256(frozen_claims(now))
    header, payload, _sig = good.split(".")
    tokens: list[str | tuple[str, TokenVerifier]] = [
        "test",
        "a.b",
        "Bearer " + good,
        good[:-5] if len(good.split(".")[2][:-5]) % 4 == 1 else good[:-6],
        f"{b64(b'hello')}.{payload}.c2ln",
        f"{b64json({'typ': 'JWT'})}.{payload}.c2ln",
        f"{header}.{b64(b'[1]')}.c2ln",
        f".{payload}.c2ln",
        "",
        hs256(frozen_claims(now), "another-secret-" + "y" * 40),
        jwt.encode(frozen_claims(now), "k" * 64, algorithm="HS512"),
        unsigned("none", frozen_claims(now)),
        hs256(frozen_claims(now, aud="billing")),
        (
            hs256(frozen_claims(now, iss="https://evil.example")),
            TokenVerifier(SECRET, algorithms=["HS256"], issuer="https://id.example"),
        ),
        hs256(frozen_claims(now, exp=_DROP)),
        hs256(frozen_claims(now, exp="soon")),
        signed_payload(
            json.dumps(frozen_claims(now, exp=0)).replace('"exp": 0', '"exp": 1e400')
        ),
        hs256(frozen_claims(now, sub=42)),
        hs256(frozen_claims(now, sub="")),
        hs256(frozen_claims(now, sub="x" * 300)),
        hs256(frozen_claims(now, sub="中" * 200)),
        hs256(frozen_claims(now, sub="\ud800")),
        hs256(frozen_claims(now, sub="alice\n")),
        hs256(frozen_claims(now, sub="al\u200bice")),
        hs256(frozen_claims(now, sub="alice\u2028")),
        hs256(frozen_claims(now, jti=7)),
        signed_payload(json.dumps(frozen_claims(now)), {"alg": "HS256", "kid": 5}),
        hs256(frozen_claims(now, exp=now + 100_000)),
        hs256(frozen_claims(now, iat=now - 7200, exp=now - 3600)),
        hs256(frozen_claims(now, nbf=now + 120)),
        "a" * 9000,
    ]
    reasons = []
    for number, case in enumerate(tokens):
        token, by = case if isinstance(case, tuple) else (case, verifier)
        try:
            by.verify(token)
        except AuthenticationError as exc:
            reasons.append(exc.reason)
        else:
            pytest.fail(f"token {number} was accepted")
    cookie: list[TokenSourceName] = ["cookie", "query"]
    for query, protocols, headers, sources in [
        (b"token=a&token=b", [], {}, DEFAULT_TOKEN_SOURCES),
        (b"token=a", ["bearer.b"], {}, DEFAULT_TOKEN_SOURCES),
        (b"", ["bearer.a", "bearer.b"], {}, DEFAULT_TOKEN_SOURCES),
        (b"token=a", [], {"authorization": "Bearer b"}, DEFAULT_TOKEN_SOURCES),
        (b"token=a", [], {"cookie": "wschat_token=b"}, cookie),
        (b"", [], {"cookie": "wschat_token=a; wschat_token=b"}, cookie),
    ]:
        with pytest.raises(AuthenticationError) as refused:
            find_token(query, protocols, headers, sources=sources)
        reasons.append(refused.value.reason)
    reasons.append(TokenMissing().reason)  # no token anywhere: the class default
    header_only = ChatOptions(token_sources=["header"])
    reasons.append(TokenMissing(missing_detail(header_only, ["query"])).reason)
    return reasons


def test_every_reason_in_the_auth_table_is_said_exactly(frozen_now: int) -> None:
    documented = documented_reasons()
    assert len(documented) == 42
    patterns = {
        row: re.compile(re.escape(row).replace(re.escape("..."), ".*"))
        for row in documented
        if row not in NOT_FROM_THE_VERIFIER
    }
    said = said_reasons(frozen_now)
    for reason in said:
        assert any(p.fullmatch(reason) for p in patterns.values()), reason
    for row, pattern in patterns.items():
        assert any(pattern.fullmatch(reason) for reason in said), row


def test_every_code_point_is_judged_by_its_category() -> None:
    # As docs/auth.md says: control, format and line/paragraph separator characters
    # are refused, lone surrogates are not UTF-8, everything else is accepted.
    refused_categories = {"Cc", "Cf", "Zl", "Zp"}
    wrong = []
    for point in range(0x110000):
        char = chr(point)
        category = unicodedata.category(char)
        try:
            wschat.auth.check_subject(char)
        except TokenInvalid:
            accepted = False
        else:
            accepted = True
        if accepted == (category in refused_categories or category == "Cs"):
            wrong.append(f"U+{point:04X} {category}")
    assert wrong == []


def test_eddsa_takes_ed448_keys_too() -> None:
    private, public = _pair(ed448.Ed448PrivateKey.generate())
    verifier = TokenVerifier(public, algorithms=["EdDSA"])
    assert verifier.verify(mint_token(private, "erin", algorithm="EdDSA")).user_id == (
        "erin"
    )


# -- what the mutation audit found no test for ----------------------------------------


def test_token_over_the_cap_in_characters_reports_its_bytes() -> None:
    verifier = TokenVerifier(SECRET, algorithms=["HS256"])
    err = refusal(verifier, "é" * 9000)
    assert err.reason == "token_too_large: token is 18000 bytes; the limit is 8192"


def test_key_is_prepared_once_not_per_token(verifier: TokenVerifier) -> None:
    # The verifier's own algorithm object hands back the key it prepared when the
    # verifier was built, the same object every time.
    algorithm = verifier._jwt._jws.get_algorithm_by_name("HS256")
    first = algorithm.prepare_key(verifier._key)
    assert first == SECRET.encode()
    assert algorithm.prepare_key(verifier._key) is first


@pytest.mark.parametrize("extra", ["X", "A", "w"])
def test_a_part_with_a_character_after_its_json_is_not_json(extra: str) -> None:
    # The header '{"alg":"none"}' (14 bytes) is 19 characters of base64url; one more
    # makes a 15th byte after the JSON. Every character counts, "X" like any other.
    header = b64(b'{"alg":"none"}') + extra
    assert len(header) == 20
    verifier = TokenVerifier(SECRET, algorithms=["HS256"])
    err = refusal(verifier, f"{header}.{b64json(claims())}.c2ln")
    assert err.reason == "token_malformed: not a JWT: the header is not a JSON object"


def test_a_padded_part_of_a_length_not_a_multiple_of_4_cannot_be_decoded() -> None:
    header = b64(b'{"":1}')  # 8 characters
    assert len(header + "==") == 10
    verifier = TokenVerifier(SECRET, algorithms=["HS256"])
    err = refusal(verifier, f"{header}==.{b64json(claims())}.c2ln")
    assert err.reason == "token_malformed: not a JWT: a part cannot be decoded"


def test_long_names_are_cut_to_16_characters_in_reasons(frozen_now: int) -> None:
    long_claim = "tenant_identifier_claim"
    verifier = TokenVerifier(
        SECRET, algorithms=["HS256"], require=["exp", "sub", long_claim]
    )
    err = refusal(verifier, hs256(frozen_claims(frozen_now)))
    assert err.reason == "token_invalid: the tenant_identifie claim is required"
    token = signed_payload(json.dumps(frozen_claims(frozen_now)), {"alg": "HS256" * 5})
    err = refusal(verifier, token)
    assert err.reason == (
        "token_invalid: algorithm HS256HS256HS256H not accepted; expected HS256"
    )
    with pytest.raises(ConfigurationError) as info:
        TokenVerifier(SECRET, algorithms=["HS256-but-a-longer-name"])
    assert str(info.value).startswith(
        "configuration_error: unknown algorithm 'HS256-but-a-long'; use one of "
    )


def test_wrong_algorithm_names_every_accepted_one() -> None:
    verifier = TokenVerifier("k" * 64, algorithms=["HS256", "HS384", "HS512"])
    token = signed_payload(json.dumps(claims()), {"alg": "RS256"})
    assert refusal(verifier, token).reason == (
        "token_invalid: algorithm RS256 not accepted; expected HS256/HS384/HS512"
    )
