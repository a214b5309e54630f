"""Token sources: which are on, in which order, and two tokens that disagree. Pure.

``token_sources`` (wschat.options) says where a token may be; ``find_token`` and
``decide`` (wschat.admission) read only those. No socket, no event loop: the
end-to-end tests (tests/test_e2e_token_sources.py) check the same through real
servers.
"""

from __future__ import annotations

import pytest

from tests.support.common import SECRET
from wschat.admission import (
    Admit,
    AwaitAuth,
    Refuse,
    cookie_tokens,
    decide,
    find_token,
    header_tokens,
    missing_detail,
    offered_token,
    refused_fingerprint,
)
from wschat.auth import TokenVerifier, token_fingerprint
from wschat.errors import (
    ConfigurationError,
    TokenAmbiguous,
    TokenMalformed,
    TokenMissing,
)
from wschat.options import (
    DEFAULT_TOKEN_COOKIE,
    DEFAULT_TOKEN_SOURCES,
    TOKEN_SOURCE_NAMES,
    ChatOptions,
    TokenSourceName,
)
from wschat.protocol import SUBPROTOCOL
from wschat.testing import mint_token
from wschat.transport import Handshake

VERIFIER = TokenVerifier(SECRET, algorithms=["HS256"])
ALICE = mint_token(SECRET, "alice")
BOB = mint_token(SECRET, "bob")
ALL: list[TokenSourceName] = ["header", "cookie", "query", "subprotocol"]
SITE = ["https://app.example"]


def hs(
    query: str = "",
    protocols: tuple[str, ...] = (),
    headers: dict[str, str] | None = None,
) -> Handshake:
    return Handshake(
        "lobby", query.encode(), {"host": "chat.example", **(headers or {})}, protocols
    )


def opts(*sources: TokenSourceName, **kwargs: object) -> ChatOptions:
    return ChatOptions(token_sources=sources, allowed_origins=SITE, **kwargs)  # type: ignore[arg-type]


# -- the option -----------------------------------------------------------------------


def test_defaults_are_pinned() -> None:
    assert DEFAULT_TOKEN_SOURCES == ("header", "query", "subprotocol")
    assert ChatOptions().token_sources == ("header", "query", "subprotocol")
    assert DEFAULT_TOKEN_COOKIE == ChatOptions().token_cookie == "wschat_token"
    assert TOKEN_SOURCE_NAMES == (
        "header",
        "cookie",
        "query",
        "subprotocol",
        "auth_frame",
    )
    assert "cookie" not in ChatOptions().token_sources


def test_sources_are_kept_as_a_tuple_in_the_given_order() -> None:
    options = ChatOptions(token_sources=["query", "header"])
    assert options.token_sources == ("query", "header")


@pytest.mark.parametrize("origins", [["*"], ["https://app.example", "*"]])
def test_cookie_with_any_origin_is_refused_with_the_fix(origins: list[str]) -> None:
    with pytest.raises(ConfigurationError) as info:
        ChatOptions(token_sources=["cookie"], allowed_origins=origins)
    message = str(info.value)
    assert "cross-site WebSocket hijacking" in message
    assert 'allowed_origins=["https://app.example.com"]' in message
    assert '"header", "subprotocol" or "auth_frame"' in message


def test_cookie_with_listed_origins_or_the_default_is_allowed() -> None:
    assert "cookie" in ChatOptions(token_sources=["cookie"]).token_sources
    assert "cookie" in opts("cookie").token_sources
    # Any origin without the cookie source is allowed (the header cannot be forged
    # by a page).
    assert ChatOptions(allowed_origins=["*"]).token_sources == DEFAULT_TOKEN_SOURCES


@pytest.mark.parametrize(
    ("sources", "words"),
    [
        ("header", "must be a list of names"),
        ([1], "must be a list of names"),
        (["headers"], "unknown token source 'headers'; known: 'header', 'cookie'"),
        (["query", "query"], "names a source twice"),
        ([], "token_sources is empty"),
        (["auth_frame", "query"], '"auth_frame" must come last'),
    ],
)
def test_bad_sources_are_refused_with_words(sources: object, words: str) -> None:
    with pytest.raises(ConfigurationError, match=words.replace("(", r"\(")):
        ChatOptions(token_sources=sources)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", "a b", "a;b", "a=b", 'a"', "é"])
def test_bad_cookie_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigurationError, match="token_cookie must be a cookie name"):
        ChatOptions(token_cookie=name)


def test_auth_frame_alone_or_first_message_auth_waits_for_the_frame() -> None:
    assert ChatOptions(token_sources=["auth_frame"]).waits_for_auth_frame
    assert ChatOptions(token_sources=["query", "auth_frame"]).waits_for_auth_frame
    assert ChatOptions(first_message_auth=True).waits_for_auth_frame
    assert ChatOptions(token_sources=[], first_message_auth=True).waits_for_auth_frame
    assert not ChatOptions().waits_for_auth_frame


# -- reading the header and the cookie ------------------------------------------------


@pytest.mark.parametrize(
    ("value", "tokens"),
    [
        ("Bearer abc.def.ghi", ["abc.def.ghi"]),
        ("bearer abc", ["abc"]),
        ("BEARER   abc  ", ["abc"]),
        ("Bearer", [""]),
        ("Basic dXNlcjpwYXNz", []),
        ("abc.def.ghi", []),
    ],
)
def test_authorization_header(value: str, tokens: list[str]) -> None:
    assert header_tokens({"authorization": value}) == tokens
    assert header_tokens({}) == []


@pytest.mark.parametrize(
    ("header", "tokens"),
    [
        ("wschat_token=abc", ["abc"]),
        ("a=1; wschat_token=abc; b=2", ["abc"]),
        ('wschat_token="abc"', ["abc"]),
        ("other_wschat_token=abc", []),
        ("WSCHAT_TOKEN=abc", []),  # names are case-sensitive
        ("wschat_token=a; wschat_token=b", ["a", "b"]),
        ("wschat_token", []),
        ("", []),
    ],
)
def test_cookie(header: str, tokens: list[str]) -> None:
    assert cookie_tokens({"cookie": header}, "wschat_token") == tokens


def test_repeated_headers_are_all_read_when_the_mapping_keeps_them() -> None:
    from wschat.asgi import ScopeHeaders

    headers = ScopeHeaders(
        [(b"cookie", b"wschat_token=a"), (b"Cookie", b"wschat_token=b")]
    )
    assert cookie_tokens(headers, "wschat_token") == ["a", "b"]
    with pytest.raises(TokenAmbiguous):
        find_token(b"", [], headers, sources=["cookie"])


# -- each source on and off ------------------------------------------------------------

PLACES: dict[TokenSourceName, Handshake] = {
    "header": hs(headers={"authorization": f"Bearer {ALICE}"}),
    "cookie": hs(headers={"cookie": f"theme=dark; wschat_token={ALICE}"}),
    "query": hs(f"token={ALICE}"),
    "subprotocol": hs("", (SUBPROTOCOL, f"bearer.{ALICE}")),
}


@pytest.mark.parametrize("where", list(PLACES))
def test_a_source_that_is_on_admits(where: TokenSourceName) -> None:
    decision = decide(PLACES[where], opts(where), VERIFIER)
    assert isinstance(decision, Admit)
    assert decision.principal.user_id == "alice"
    assert decision.fingerprint == token_fingerprint(ALICE)


@pytest.mark.parametrize("where", list(PLACES))
def test_a_token_in_a_source_that_is_off_is_never_used(where: TokenSourceName) -> None:
    others = tuple(s for s in ALL if s != where)
    decision = decide(PLACES[where], opts(*others), VERIFIER)
    assert isinstance(decision, Refuse)
    assert type(decision.error) is TokenMissing
    assert decision.error.detail.startswith("this server does not read a token from")
    # It is not even named in the log line: only tokens of sources that are on are.
    assert decision.fingerprint == "none"
    assert ALICE not in decision.error.reason


def test_an_off_source_never_makes_an_on_source_ambiguous() -> None:
    mixed = hs(f"token={BOB}", headers={"authorization": f"Bearer {ALICE}"})
    decision = decide(mixed, opts("header"), VERIFIER)
    assert isinstance(decision, Admit)
    assert decision.principal.user_id == "alice"


def test_a_token_in_a_source_that_is_off_waits_for_the_auth_frame() -> None:
    decision = decide(PLACES["query"], opts("header", "auth_frame"), VERIFIER)
    assert isinstance(decision, AwaitAuth)


def test_missing_reasons_name_the_sources_that_are_on() -> None:
    assert missing_detail(ChatOptions()) == TokenMissing.default_detail
    assert missing_detail(opts("header")) == "send Authorization: Bearer <JWT>"
    assert missing_detail(opts("cookie", "query")) == (
        "send the wschat_token cookie or ?token=<JWT>"
    )
    assert missing_detail(opts("auth_frame")) == "send an auth frame first"
    assert missing_detail(opts("header"), ["query"]) == (
        "this server does not read a token from the query; "
        "send Authorization: Bearer <JWT>"
    )
    # The longest possible reason fits a close frame.
    longest = TokenMissing(missing_detail(opts(*ALL, token_cookie="c" * 40), ["query"]))
    assert len(longest.reason.encode()) <= 123


# -- two tokens ----------------------------------------------------------------------

PAIRS = [(a, b) for i, a in enumerate(ALL) for b in ALL[i + 1 :]]


def two(first: TokenSourceName, second: TokenSourceName, a: str, b: str) -> Handshake:
    query, protocols, headers = "", [SUBPROTOCOL], {}
    for where, tok in ((first, a), (second, b)):
        if where == "header":
            headers["authorization"] = f"Bearer {tok}"
        elif where == "cookie":
            headers["cookie"] = f"wschat_token={tok}"
        elif where == "query":
            query = f"token={tok}"
        else:
            protocols.append(f"bearer.{tok}")
    return hs(query, tuple(protocols), headers)


@pytest.mark.parametrize(("first", "second"), PAIRS)
def test_two_different_tokens_in_two_sources_are_ambiguous(
    first: TokenSourceName, second: TokenSourceName
) -> None:
    decision = decide(two(first, second, ALICE, BOB), opts(*ALL), VERIFIER)
    assert isinstance(decision, Refuse)
    assert type(decision.error) is TokenAmbiguous
    assert decision.error.close_code == 4401
    assert decision.error.reason.startswith("token_ambiguous: different tokens in ")
    # Both are named in the log line by fingerprint, neither is shown.
    assert decision.fingerprint == (
        f"{token_fingerprint(ALICE)},{token_fingerprint(BOB)}"
    )
    assert ALICE not in repr(decision)
    assert BOB not in decision.error.reason


@pytest.mark.parametrize(("first", "second"), PAIRS)
def test_the_same_token_in_two_sources_is_fine(
    first: TokenSourceName, second: TokenSourceName
) -> None:
    decision = decide(two(first, second, ALICE, ALICE), opts(*ALL), VERIFIER)
    assert isinstance(decision, Admit)
    assert decision.principal.user_id == "alice"


def test_the_order_says_which_source_the_token_is_read_from() -> None:
    both = two("header", "query", ALICE, ALICE)
    assert find_token(
        both.query, both.subprotocols, both.headers, sources=["query", "header"]
    ).source == ("query")
    assert find_token(
        both.query, both.subprotocols, both.headers, sources=["header", "query"]
    ).source == ("header")
    bad = two("header", "query", ALICE, BOB)
    with pytest.raises(TokenAmbiguous) as info:
        find_token(
            bad.query, bad.subprotocols, bad.headers, sources=["query", "header"]
        )
    assert info.value.detail == (
        "different tokens in the query and the Authorization header; send one"
    )


def test_the_same_source_twice() -> None:
    # The query and the subprotocol keep their 0.1 answer; the header and the
    # cookie, which a client controls less, are ambiguous only when they differ.
    with pytest.raises(TokenMalformed, match="given 2 times"):
        find_token(f"token={ALICE}&token={ALICE}".encode(), [])
    same = {"cookie": f"wschat_token={ALICE}; wschat_token={ALICE}"}
    assert find_token(b"", [], same, sources=["cookie"]).token == ALICE
    differ = {"cookie": f"wschat_token={ALICE}; wschat_token={BOB}"}
    with pytest.raises(TokenAmbiguous, match="the wschat_token cookie is given 2"):
        find_token(b"", [], differ, sources=["cookie"])


def test_offered_token_and_fingerprints_read_only_the_sources_that_are_on() -> None:
    mixed = hs(f"token={BOB}", headers={"authorization": f"Bearer {ALICE}"})
    assert offered_token(mixed) is None  # two tokens in default sources
    assert offered_token(mixed, opts("header")) == ALICE
    assert offered_token(mixed, opts("query")) == BOB
    assert offered_token(two("header", "query", ALICE, ALICE)) == ALICE
    assert refused_fingerprint(mixed, None, opts("header")) == token_fingerprint(ALICE)
    assert refused_fingerprint(mixed, None) == (
        f"{token_fingerprint(ALICE)},{token_fingerprint(BOB)}"
    )


def test_a_token_source_repr_never_shows_the_token() -> None:
    source = find_token(b"", [], {"authorization": f"Bearer {ALICE}"})
    assert source.source == "header"
    assert ALICE not in repr(source)


def test_auth_md_shows_the_cookie_refusal_as_raised() -> None:
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "auth.md").read_text()
    shown = page.split("ConfigurationError: token_sources", 1)[1].split("```", 1)[0]
    with pytest.raises(ConfigurationError) as info:
        ChatOptions(token_sources=["cookie"], allowed_origins=["*"])
    assert " ".join(("token_sources" + shown).split()) == info.value.detail
