"""TokenVerifier against a catalogue of good, bad and hostile tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import traceback
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from wschat import TokenVerifier
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
from wschat.testing import mint_token

from .support import SECRET

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
    key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey,
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


@pytest.mark.parametrize("exp", ["99999999999", "soon", [1], {"t": 1}, True])
def test_exp_must_be_a_number(verifier: TokenVerifier, exp: Any) -> None:
    # A numeric string passes PyJWT's int() but must not dodge the lifetime cap.
    err = refusal(verifier, hs256(claims(exp=exp)))
    assert isinstance(err, (TokenInvalid, TokenExpired))
    assert err.code in ("token_invalid", "token_expired")


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
    """Freeze the clock PyJWT reads, so boundaries can be tested to the second."""
    import datetime as dt

    import jwt.api_jwt

    now = int(time.time())

    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> Frozen:
            return cls.fromtimestamp(now, tz)

    monkeypatch.setattr(jwt.api_jwt, "datetime", Frozen)
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
    ok = hs256(claims(iat=now, nbf=now + leeway))
    assert verifier.verify(ok).user_id == "alice"
    early = hs256(claims(iat=now, nbf=now + leeway + 1))
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
