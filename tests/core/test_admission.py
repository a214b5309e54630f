"""Admission: where the token is (find_token), and the handshake decision (decide).

Plain functions, no event loop and no socket: what a handshake is answered (admit,
refuse, or wait for an ``auth`` frame) follows from the handshake, the options and
the verifier alone. The endpoint tests (tests/core/test_endpoint.py) and the end-to-end
tests check that the endpoint does what the decision says.
"""

from __future__ import annotations

import json

import pytest

from tests.support.common import SECRET
from tests.support.source import imports
from wschat.admission import (
    Admit,
    AwaitAuth,
    Refuse,
    decide,
    decide_auth_frame,
    find_token,
    offered_subprotocol,
    refused_fingerprint,
    verify,
)
from wschat.auth import Principal, TokenVerifier, token_fingerprint
from wschat.errors import (
    Forbidden,
    InvalidChatId,
    MessageTooBig,
    OriginRefused,
    TextOnly,
    TokenAmbiguous,
    TokenExpired,
    TokenMalformed,
    TokenMissing,
    WSChatError,
)
from wschat.ids import ChatId, UserId
from wschat.options import ChatOptions
from wschat.protocol import SUBPROTOCOL, SUBPROTOCOL_BATCH
from wschat.testing import mint_token
from wschat.transport import Handshake

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNlY3JldA"


def test_token_in_query() -> None:
    source = find_token(f"token={TOKEN}".encode(), [])
    assert source.token == TOKEN
    assert source.subprotocol is None
    assert source.batch is False
    assert TOKEN not in repr(source)


def test_token_in_query_with_other_parameters_and_percent_encoding() -> None:
    source = find_token(b"a=1&token=abc%2Edef.ghi&b=2", [])
    assert source.token == "abc.def.ghi"


def test_token_in_subprotocol() -> None:
    source = find_token(b"", [SUBPROTOCOL, f"bearer.{TOKEN}"])
    assert source.token == TOKEN
    # The server selects wschat.v1, never the bearer protocol (it would echo the token).
    assert source.subprotocol == SUBPROTOCOL


def test_no_token() -> None:
    source = find_token(b"", [SUBPROTOCOL])
    assert source.token is None
    assert source.subprotocol == SUBPROTOCOL
    assert find_token(b"other=1", []).token is None


def test_empty_token_parameter_is_found_as_empty() -> None:
    # The verifier then answers token_missing, rather than the endpoint guessing.
    assert find_token(b"token=", []).token == ""


def test_duplicate_query_token_refused() -> None:
    with pytest.raises(TokenMalformed, match="2 times") as info:
        find_token(f"token={TOKEN}&token={TOKEN}".encode(), [])
    assert TOKEN not in str(info.value)


def test_duplicate_bearer_subprotocol_refused() -> None:
    with pytest.raises(TokenMalformed, match="more than one") as info:
        find_token(b"", [SUBPROTOCOL, f"bearer.{TOKEN}", "bearer.other"])
    assert TOKEN not in str(info.value)


def test_the_same_token_in_both_places_is_one_token() -> None:
    source = find_token(f"token={TOKEN}".encode(), [SUBPROTOCOL, f"bearer.{TOKEN}"])
    assert (source.token, source.source) == (TOKEN, "query")


def test_different_tokens_in_both_places_are_ambiguous() -> None:
    with pytest.raises(TokenAmbiguous) as info:
        find_token(f"token={TOKEN}".encode(), [SUBPROTOCOL, "bearer.other"])
    assert TOKEN not in repr(info.value)
    assert info.value.reason == (
        "token_ambiguous: different tokens in the query and a subprotocol; send one"
    )
    assert info.value.close_code == 4401


@pytest.mark.parametrize(
    ("query", "protocols", "batch"),
    [
        (b"", [SUBPROTOCOL, SUBPROTOCOL_BATCH], True),
        (b"batch=1", [], True),
        (b"batch=true", [], True),
        (b"batch=0", [], False),
        (b"batch=yes-please", [], False),
        (b"", [SUBPROTOCOL], False),
        (b"", [], False),
    ],
)
def test_batch_is_opt_in(query: bytes, protocols: list[str], batch: bool) -> None:
    assert find_token(query, protocols).batch is batch


# -- naming the token(s) of a refused handshake without showing them -----------------


def handshake(query: bytes = b"", protocols: list[str] | None = None) -> Handshake:
    return Handshake("lobby", query, {}, protocols or [])


def test_fingerprint_is_sha256_of_the_token_cut_to_12_hex_digits() -> None:
    assert token_fingerprint("abc") == "sha256:ba7816bf8f01"
    assert token_fingerprint("") == "sha256:e3b0c44298fc"
    # A lone surrogate (possible from a percent-decoded query) is hashed, not fatal.
    assert token_fingerprint("\ud800") == token_fingerprint("?")


def test_refused_fingerprint_of_a_found_token() -> None:
    source = find_token(b"token=abc", [])
    assert refused_fingerprint(handshake(b"token=abc"), source) == "sha256:ba7816bf8f01"
    none_found = find_token(b"", [SUBPROTOCOL])
    assert refused_fingerprint(handshake(), none_found) == "none"
    empty = find_token(b"token=", [])
    assert refused_fingerprint(handshake(b"token="), empty) == "none"


@pytest.mark.parametrize(
    ("query", "protocols", "expected"),
    [
        (b"", [], "none"),
        (b"other=1", [SUBPROTOCOL], "none"),
        (b"token=abc", [], "sha256:ba7816bf8f01"),
        (b"token=", [], "sha256:e3b0c44298fc"),  # given, though empty
        (b"TOKEN=abc", [], "none"),  # not where find_token looks
        (b"token=abc&token=abc", [], "sha256:ba7816bf8f01"),  # each once
        (b"token=abc&token=", [], "sha256:ba7816bf8f01,sha256:e3b0c44298fc"),
        (b"", ["bearer.abc"], "sha256:ba7816bf8f01"),
        (
            b"",
            [SUBPROTOCOL, "bearer.abc", "bearer."],
            ("sha256:ba7816bf8f01,sha256:e3b0c44298fc"),
        ),
        (b"token=abc", ["bearer."], "sha256:ba7816bf8f01,sha256:e3b0c44298fc"),
        (b"token=%C3%BF", [], token_fingerprint("ÿ")),  # percent-escapes are UTF-8
        (b"token=\xc3\xbf", [], token_fingerprint("Ã¿")),  # raw bytes: latin-1
    ],
)
def test_refused_fingerprint_searches_the_handshake_like_find_token(
    query: bytes, protocols: list[str], expected: str
) -> None:
    # Without a TokenSource: the chat id was refused first, or the token was given
    # twice and find_token refused it.
    assert refused_fingerprint(handshake(query, protocols), None) == expected


def test_offered_subprotocol_selects_only_wschat_v1() -> None:
    assert offered_subprotocol(handshake(b"", [SUBPROTOCOL])) == "wschat.v1"
    assert offered_subprotocol(handshake(b"", ["bearer.abc", SUBPROTOCOL])) == (
        "wschat.v1"
    )
    assert offered_subprotocol(handshake(b"", [])) is None
    assert offered_subprotocol(handshake(b"", ["bearer.abc", "wschat.v2"])) is None
    assert offered_subprotocol(handshake(b"", [SUBPROTOCOL_BATCH])) is None


def test_subprotocol_names_are_pinned() -> None:
    assert (SUBPROTOCOL, SUBPROTOCOL_BATCH) == ("wschat.v1", "wschat.batch")


def test_refusal_messages_of_find_token() -> None:
    with pytest.raises(TokenMalformed) as info:
        find_token(b"token=a&token=b&token=c", [])
    assert info.value.detail == "token parameter given 3 times; send it once"
    with pytest.raises(TokenMalformed) as info:
        find_token(b"", ["bearer.a", "bearer.b"])
    assert info.value.detail == "more than one bearer.<JWT> subprotocol; send one"
    with pytest.raises(TokenAmbiguous) as ambiguous:
        find_token(b"token=a", ["bearer.b"])
    assert ambiguous.value.detail == (
        "different tokens in the query and a subprotocol; send one"
    )


# -- the decision ---------------------------------------------------------------------

VERIFIER = TokenVerifier(SECRET, algorithms=["HS256"])
DEFAULTS = ChatOptions()
PAGE = "https://chat.example"


def hs(
    query: str = "",
    protocols: tuple[str, ...] = (),
    *,
    chat_id: str = "lobby",
    origin: str | None = None,
    host: str = "chat.example",
) -> Handshake:
    headers = {"host": host}
    if origin is not None:
        headers["origin"] = origin
    return Handshake(chat_id, query.encode(), headers, protocols, scheme="wss")


class Counting:
    """A verifier that counts its calls, around the real one."""

    def __init__(self) -> None:
        self.calls = 0

    def verify(self, token: str) -> Principal:
        self.calls += 1
        return VERIFIER.verify(token)


def test_a_valid_token_is_admitted_with_what_the_socket_needs() -> None:
    token = mint_token(SECRET, "alice")
    decision = decide(hs(f"token={token}&batch=1", (SUBPROTOCOL,)), DEFAULTS, VERIFIER)
    assert isinstance(decision, Admit)
    assert decision.principal.user_id == "alice"
    assert (decision.chat_id, decision.subprotocol, decision.batch) == (
        "lobby",
        "wschat.v1",
        True,
    )
    assert decision.fingerprint == token_fingerprint(token)
    assert token not in repr(decision)


def test_a_token_in_a_subprotocol_is_admitted_and_never_selected() -> None:
    token = mint_token(SECRET, "bob")
    decision = decide(hs("", (SUBPROTOCOL, f"bearer.{token}")), DEFAULTS, VERIFIER)
    assert isinstance(decision, Admit)
    assert (decision.principal.user_id, decision.subprotocol) == ("bob", "wschat.v1")
    assert decision.batch is False


def test_a_custom_verifiers_principal_still_gets_the_tokens_fingerprint() -> None:
    class Sessions:
        def verify(self, token: str) -> Principal:
            return Principal(UserId("carol"))  # no fingerprint of its own

    decision = decide(hs("token=session-1"), DEFAULTS, Sessions())
    assert isinstance(decision, Admit)
    assert decision.fingerprint == token_fingerprint("session-1")


def test_a_refused_origin_is_decided_before_anything_else() -> None:
    verifier = Counting()
    token = mint_token(SECRET, "alice")
    options = ChatOptions(allowed_origins=["https://app.example"])
    for chat_id in ("lobby", "no/such room"):
        decision = decide(
            hs(f"token={token}", chat_id=chat_id, origin="https://evil.example"),
            options,
            verifier,
        )
        # The same bare 403 whatever the chat id: the page learns nothing more.
        assert isinstance(decision, Refuse)
        assert type(decision.error) is OriginRefused
        assert decision.origin == "https://evil.example"
    assert verifier.calls == 0
    # The allowlisted origin and the page's own pass.
    for origin in ("https://app.example", PAGE):
        assert isinstance(
            decide(hs(f"token={token}", origin=origin), options, VERIFIER), Admit
        )


def test_a_missing_origin_is_the_options_choice() -> None:
    token = mint_token(SECRET, "alice")
    refused = decide(
        hs(f"token={token}"), ChatOptions(allow_missing_origin=False), VERIFIER
    )
    assert isinstance(refused, Refuse)
    assert type(refused.error) is OriginRefused
    assert refused.origin is None
    assert isinstance(decide(hs(f"token={token}"), DEFAULTS, VERIFIER), Admit)


def test_an_invalid_chat_id_is_refused_before_the_token_is_looked_at() -> None:
    verifier = Counting()
    decision = decide(
        hs("token=abc&token=", (SUBPROTOCOL,), chat_id="a b"), DEFAULTS, verifier
    )
    assert isinstance(decision, Refuse)
    assert type(decision.error) is InvalidChatId
    assert decision.error.close_code == 4400
    assert decision.subprotocol == "wschat.v1"
    # Every token the handshake carried is named, the empty one too.
    assert decision.fingerprint == "sha256:ba7816bf8f01,sha256:e3b0c44298fc"
    assert verifier.calls == 0


@pytest.mark.parametrize(
    ("query", "protocols", "detail", "fingerprint"),
    [
        (
            "token=abc&token=abc",
            (),
            "token parameter given 2 times; send it once",
            "sha256:ba7816bf8f01",
        ),
        (
            "",
            ("bearer.abc", "bearer."),
            "more than one bearer.<JWT> subprotocol; send one",
            "sha256:ba7816bf8f01,sha256:e3b0c44298fc",
        ),
    ],
)
def test_a_token_given_twice_is_refused_unverified(
    query: str, protocols: tuple[str, ...], detail: str, fingerprint: str
) -> None:
    verifier = Counting()
    decision = decide(hs(query, protocols), DEFAULTS, verifier)
    assert isinstance(decision, Refuse)
    assert type(decision.error) is TokenMalformed
    assert decision.error.detail == detail
    assert decision.fingerprint == fingerprint
    assert decision.subprotocol is None
    assert verifier.calls == 0


def test_no_token_is_refused_unless_first_message_auth_is_on() -> None:
    refused = decide(hs("", (SUBPROTOCOL,)), DEFAULTS, VERIFIER)
    assert isinstance(refused, Refuse)
    assert type(refused.error) is TokenMissing
    assert refused.error.reason == (
        "token_missing: send Authorization: Bearer <JWT>, ?token=<JWT> "
        "or the subprotocols wschat.v1, bearer.<JWT>"
    )
    assert (refused.fingerprint, refused.subprotocol) == ("none", "wschat.v1")
    waiting = decide(
        hs("batch=true", (SUBPROTOCOL,)), ChatOptions(first_message_auth=True), VERIFIER
    )
    assert waiting == AwaitAuth(ChatId("lobby"), "wschat.v1", True)


def test_a_token_in_the_handshake_is_used_with_first_message_auth_on() -> None:
    options = ChatOptions(first_message_auth=True)
    decision = decide(hs(f"token={mint_token(SECRET, 'alice')}"), options, VERIFIER)
    assert isinstance(decision, Admit)
    refused = decide(hs("token=junk"), options, VERIFIER)
    assert isinstance(refused, Refuse)
    assert refused.error.code == "token_malformed"


def test_the_verifiers_refusal_is_the_decision() -> None:
    expired = mint_token(SECRET, "alice", ttl=-60)
    decision = decide(hs(f"token={expired}", (SUBPROTOCOL,)), DEFAULTS, VERIFIER)
    assert isinstance(decision, Refuse)
    assert type(decision.error) is TokenExpired
    assert decision.subprotocol == "wschat.v1"
    assert decision.fingerprint == token_fingerprint(expired)
    assert decision.cause is None
    # An empty token is refused by the verifier, and logged as no token.
    empty = decide(hs("token="), DEFAULTS, VERIFIER)
    assert isinstance(empty, Refuse)
    assert empty.error.reason == "token_missing: the token is empty"
    assert empty.fingerprint == "none"


def test_a_verifier_that_crashes_is_a_1011_with_the_cause_for_the_log() -> None:
    boom = RuntimeError("database down")

    class Broken:
        def verify(self, token: str) -> Principal:
            raise boom

    decision = decide(hs("token=abc"), DEFAULTS, Broken())
    assert isinstance(decision, Refuse)
    assert type(decision.error) is WSChatError
    assert decision.error.reason == (
        "internal_error: the server hit an unexpected error"
    )
    assert decision.cause is boom
    assert decision.fingerprint == "sha256:ba7816bf8f01"


def test_a_verifier_may_refuse_with_any_wschat_error() -> None:
    class Banned:
        def verify(self, token: str) -> Principal:
            raise Forbidden("banned")

    decision = decide(hs("token=abc"), DEFAULTS, Banned())
    assert isinstance(decision, Refuse)
    assert decision.error.reason == "forbidden: banned"
    assert decision.cause is None


def test_a_refusal_shows_no_token_and_hashes_only_when_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hashed: list[str] = []
    real = token_fingerprint

    def counting(token: str) -> str:
        hashed.append(token)
        return real(token)

    monkeypatch.setattr("wschat.admission.token_fingerprint", counting)
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNlY3JldA"
    decision = decide(hs(f"token={token}"), DEFAULTS, VERIFIER)
    assert isinstance(decision, Refuse)
    assert hashed == []
    shown = [repr(decision), str(decision.error), decision.error.reason]
    shown += [
        repr(getattr(decision, name)) for name in ("subprotocol", "origin", "cause")
    ]
    assert not any(token in text for text in shown), shown
    assert decision.fingerprint == real(token)
    assert decision.fingerprint == real(token)
    assert hashed == [token]  # once, however often it is read


def test_a_known_fingerprint_is_kept_as_given() -> None:
    # authorize() said no to an Admit: its fingerprint is the refusal's.
    refusal = Refuse(Forbidden(), "wschat.v1", fingerprint="sha256:0123456789ab")
    assert refusal.fingerprint == "sha256:0123456789ab"
    assert Refuse(Forbidden()).fingerprint == "none"


def test_verify_is_the_principal_or_the_refusal() -> None:
    principal = verify(VERIFIER, mint_token(SECRET, "alice"))
    assert isinstance(principal, Principal)
    assert principal.user_id == "alice"
    refused = verify(VERIFIER, "junk", "wschat.v1")
    assert isinstance(refused, Refuse)
    assert (refused.error.code, refused.subprotocol) == ("token_malformed", "wschat.v1")


# -- the first frame of a socket waiting to authenticate ----------------------------

WAITING = AwaitAuth(ChatId("lobby"), "wschat.v1", True)


def auth_frame(token: str) -> str:
    return json.dumps({"type": "auth", "token": token})


def test_an_auth_frame_admits_into_the_waiting_room() -> None:
    token = mint_token(SECRET, "alice")
    decision = decide_auth_frame(auth_frame(token), WAITING, DEFAULTS, VERIFIER)
    assert isinstance(decision, Admit)
    assert decision.principal.user_id == "alice"
    assert (decision.chat_id, decision.subprotocol, decision.batch) == (
        "lobby",
        "wschat.v1",
        True,
    )
    assert decision.fingerprint == token_fingerprint(token)


def test_an_auth_frame_of_a_custom_verifier_gets_the_tokens_fingerprint() -> None:
    class Sessions:
        def verify(self, token: str) -> Principal:
            return Principal(UserId("carol"))

    decision = decide_auth_frame(auth_frame("session-1"), WAITING, DEFAULTS, Sessions())
    assert isinstance(decision, Admit)
    assert decision.fingerprint == token_fingerprint("session-1")


@pytest.mark.parametrize(
    ("data", "error", "reason"),
    [
        (b"{}", TextOnly, "text_only: binary frames are not accepted; send JSON text"),
        (
            "not json",
            TokenMissing,
            "token_missing: first frame is not an auth frame (bad_json)",
        ),
        (
            json.dumps({"type": "message", "body": "hi"}),
            TokenMissing,
            'token_missing: the first frame must be {"type": "auth", ...}',
        ),
        (auth_frame("junk"), TokenMalformed, None),
        (auth_frame(mint_token(SECRET, "a", ttl=-60)), TokenExpired, None),
    ],
)
def test_a_first_frame_that_does_not_authenticate_is_refused(
    data: str | bytes, error: type[WSChatError], reason: str | None
) -> None:
    decision = decide_auth_frame(data, WAITING, DEFAULTS, VERIFIER)
    assert isinstance(decision, Refuse)
    assert type(decision.error) is error
    assert decision.subprotocol is None  # accepted already: nothing to select
    if reason is not None:
        assert decision.error.reason == reason


def test_the_auth_frame_is_held_to_max_message_bytes() -> None:
    options = ChatOptions(max_message_bytes=200)
    frame = auth_frame(mint_token(SECRET, "alice"))
    padded = frame[:-1] + " " * (200 - len(frame)) + "}"
    assert len(padded) == 200
    assert isinstance(decide_auth_frame(padded, WAITING, options, VERIFIER), Admit)
    over = decide_auth_frame(padded[:-1] + " }", WAITING, options, VERIFIER)
    assert isinstance(over, Refuse)
    assert type(over.error) is MessageTooBig
    assert over.error.reason == "message_too_big: frames are limited to 200 bytes"
    # Bytes of UTF-8 count, not characters.
    room = 200 - len(frame) - len(', "x": ""')
    wide = frame[:-1] + ', "x": "' + "é" * room + '"}'
    assert len(wide) <= 200 < len(wide.encode())
    refused = decide_auth_frame(wide, WAITING, options, VERIFIER)
    assert isinstance(refused, Refuse)
    assert type(refused.error) is MessageTooBig


def test_a_verifier_that_crashes_on_the_auth_frame_is_a_1011() -> None:
    class Broken:
        def verify(self, token: str) -> Principal:
            raise KeyError(token)

    decision = decide_auth_frame(auth_frame("abc"), WAITING, DEFAULTS, Broken())
    assert isinstance(decision, Refuse)
    assert decision.error.close_code == 1011
    assert isinstance(decision.cause, KeyError)


def test_the_decision_module_does_no_io() -> None:
    # What the decision may use: no event loop, no sockets, no logging.
    found = imports("wschat.admission")
    assert not {"anyio", "asyncio", "trio", "socket", "logging"} & {
        name.partition(".")[0] for name in found
    }, found
    assert "wschat.endpoint" not in found
