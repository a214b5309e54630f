"""Weak verifier configuration is refused at startup, with a message naming the fix.

Issue 12: HMAC secrets shorter than 32 bytes, ``algorithms`` mixing HMAC and
public-key families, ``none``, and a public key given as an HMAC secret, for
``TokenVerifier`` and ``JwksVerifier`` (which share ``check_verifier_options``).
Boundaries are literal: 31 bytes refused, 32 accepted for HS256.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from wschat import JwksVerifier, TokenVerifier
from wschat.errors import ConfigurationError


@pytest.mark.parametrize(
    ("alg", "short", "enough"),
    [("HS256", 31, 32), ("HS384", 47, 48), ("HS512", 63, 64)],
)
def test_hmac_secret_length_boundaries(alg: str, short: int, enough: int) -> None:
    with pytest.raises(ConfigurationError) as info:
        TokenVerifier("s" * short, algorithms=[alg])
    message = str(info.value)
    assert f"HMAC secret is {short} bytes; {alg} needs at least {enough}" in message
    assert "secrets.token_urlsafe(64)" in message  # how to make one
    assert TokenVerifier("s" * enough, algorithms=[alg]).algorithms == (alg,)


def test_hmac_length_counts_bytes_of_utf8() -> None:
    with pytest.raises(ConfigurationError, match="HMAC secret is 30 bytes"):
        TokenVerifier("é" * 15, algorithms=["HS256"])  # 15 characters, 30 bytes
    assert TokenVerifier("é" * 16, algorithms=["HS256"])


@pytest.mark.parametrize("algs", [["none"], ["HS256", "None"], ["NONE"]])
def test_none_is_refused_with_the_fix(algs: list[str]) -> None:
    for build in (
        lambda: TokenVerifier("s" * 64, algorithms=algs),
        lambda: JwksVerifier("https://id.example/jwks", algorithms=algs),
    ):
        with pytest.raises(ConfigurationError) as info:
            build()
        assert 'name the one your issuer signs with, e.g. algorithms=["HS256"]' in str(
            info.value
        )


@pytest.mark.parametrize("algs", [["HS256", "RS256"], ["ES256", "HS512"]])
def test_mixed_families_are_refused_with_the_fix(algs: list[str]) -> None:
    for build in (
        lambda: TokenVerifier("s" * 64, algorithms=algs),
        lambda: JwksVerifier("https://id.example/jwks", algorithms=algs),
    ):
        with pytest.raises(ConfigurationError) as info:
            build()
        assert "Use one family" in str(info.value)


@pytest.mark.parametrize("prefix", [b"", b"\n  "])
def test_a_pem_public_key_as_an_hmac_secret_is_refused_with_the_fix(
    prefix: bytes,
) -> None:
    public = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    for key in (prefix + public, (prefix + public).decode()):
        with pytest.raises(ConfigurationError) as info:
            TokenVerifier(key, algorithms=["HS256"])
        assert "is a PEM or SSH key, not an HMAC secret" in str(info.value)
        assert 'algorithms=["RS256"]' in str(info.value)
    with pytest.raises(ConfigurationError, match="not an HMAC secret"):
        TokenVerifier("ssh-rsa AAAAB3Nza" + "C" * 64, algorithms=["HS256"])
    assert TokenVerifier(public, algorithms=["RS256"]).algorithms == ("RS256",)
