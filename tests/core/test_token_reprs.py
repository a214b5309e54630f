"""No token in the repr or text of anything wschat builds around one.

What a handshake carries (query, headers, cookie, subprotocols), what admission
decides from it (the token source, admit, refuse, wait for an ``auth`` frame, the
``auth`` frame's decision), the principal, and every refusal's exception: a debugger,
a ``%r`` in a log line or an error tracker shows them, so none may hold the token,
its payload or its signature. The servers' logs: tests/e2e/test_e2e_token_logs.py.
"""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest

from tests.support.common import SECRET
from wschat import ChatOptions, TokenVerifier
from wschat.admission import (
    AwaitAuth,
    decide,
    decide_auth_frame,
    find_token,
)
from wschat.errors import AuthenticationError
from wschat.query import Query
from wschat.transport import Handshake

OTHER = "another-secret-of-at-least-32-bytes!!"
ALL_SOURCES: Any = ["header", "cookie", "query", "subprotocol", "auth_frame"]


def mint(sub: str, key: str = SECRET, ttl: int = 3600, **claims: Any) -> str:
    now = int(time.time())
    return jwt.encode(
        {"sub": sub, "iat": now, "exp": now + ttl, **claims}, key, algorithm="HS256"
    )


def secret_parts(tok: str) -> list[str]:
    _, payload, signature = tok.split(".")
    return [tok, payload, signature]


def assert_clean(texts: list[str], tok: str) -> None:
    joined = "\n".join(texts)
    assert [p for p in secret_parts(tok) if p in joined] == [], joined


def handshake(where: str, tok: str) -> Handshake:
    query = f"token={tok}".encode() if where == "query" else b""
    headers = {"origin": "https://app.example.test"}
    subprotocols = ["wschat.v1"]
    if where == "header":
        headers["authorization"] = f"Bearer {tok}"
    elif where == "cookie":
        headers["cookie"] = f"wschat_token={tok}"
    elif where == "subprotocol":
        subprotocols.append(f"bearer.{tok}")
    return Handshake("room1", query, headers, subprotocols, client="1.2.3.4:5")


OPTIONS = ChatOptions(
    token_sources=ALL_SOURCES, allowed_origins=["https://app.example.test"]
)
VERIFIER = TokenVerifier(SECRET, algorithms=["HS256"], leeway=0)


def texts_of(*objects: object) -> list[str]:
    return [t for o in objects for t in (repr(o), str(o))]


def public_texts(decision: object) -> list[str]:
    """The repr and text of each public attribute (a refusal keeps the token in a
    private slot until it is hashed for the log line; the principal is checked
    below)."""
    names = [n for n in getattr(type(decision), "__slots__", ()) if n[0] != "_"]
    return texts_of(*(getattr(decision, n, None) for n in names))


@pytest.mark.parametrize("where", ["header", "cookie", "query", "subprotocol"])
@pytest.mark.parametrize(
    "tok",
    [
        pytest.param(mint("alice"), id="accepted"),
        pytest.param(mint("alice", key=OTHER), id="bad-signature"),
        pytest.param(mint("alice", ttl=-60), id="expired"),
    ],
)
def test_handshake_and_its_decision(where: str, tok: str) -> None:
    hs = handshake(where, tok)
    found = find_token(
        hs.query, hs.subprotocols, hs.headers, sources=OPTIONS.token_sources
    )
    assert found.token == tok  # found, and still not shown
    decision = decide(hs, OPTIONS, VERIFIER)
    texts = texts_of(hs, hs.query, Query(hs.query_string), found, decision)
    texts += public_texts(decision)
    assert_clean(texts, tok)


@pytest.mark.parametrize(
    "tok",
    [
        pytest.param(mint("alice"), id="accepted"),
        pytest.param(mint("alice", key=OTHER), id="bad-signature"),
        pytest.param(mint("alice", ttl=-60), id="expired"),
    ],
)
def test_auth_frame_decision(tok: str) -> None:
    waiting = decide(handshake("auth_frame", "x.y.z"), OPTIONS, VERIFIER)
    assert isinstance(waiting, AwaitAuth)
    decision = decide_auth_frame(
        json.dumps({"type": "auth", "token": tok}), waiting, OPTIONS, VERIFIER
    )
    texts = texts_of(waiting, decision) + public_texts(decision)
    assert_clean(texts, tok)


def test_principal_and_refusals() -> None:
    good = mint("alice", jti="j-1")
    principal = VERIFIER.verify(good)
    texts = texts_of(principal)
    for tok in (
        mint("alice", key=OTHER),
        mint("alice", ttl=-60),
        good.rsplit(".", 1)[0] + ".c2lnbmF0dXJlLXNpZ25hdHVyZQ",
        good[:-3],
        good + "x",
    ):
        with pytest.raises(AuthenticationError) as caught:
            VERIFIER.verify(tok)
        exc = caught.value
        chained = [exc.__cause__, exc.__context__]
        texts += texts_of(exc, exc.args, *chained)
        assert_clean(texts, tok)
    assert_clean(texts, good)
    assert principal.fingerprint.startswith("sha256:")
    assert principal.fingerprint in repr(principal)
