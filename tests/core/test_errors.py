from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wschat import backplane, connection, errors, hooks, protocol, transport
from wschat.backplane import base as backplane_base
from wschat.errors import (
    MAX_REASON_BYTES,
    SlowConsumer,
    TokenMalformed,
    WSChatError,
    close_reason,
)
from wschat.protocol import parse_client_frame

ROOT = Path(__file__).resolve().parents[2]


def test_reason_starts_with_code() -> None:
    assert (
        close_reason("token_expired", "get a new one") == "token_expired: get a new one"
    )
    assert close_reason("bye") == "bye"


@given(st.text(), st.text())
def test_reason_fits_and_is_a_prefix(code: str, words: str) -> None:
    reason = close_reason(code, words)
    raw = reason.encode("utf-8", "surrogatepass")
    assert len(raw) <= MAX_REASON_BYTES
    full = f"{code}: {words}" if words else code
    assert full.startswith(reason)


def test_clamps_on_character_boundary() -> None:
    reason = close_reason("x", "é" * 200)  # two bytes each
    assert len(reason.encode()) in (MAX_REASON_BYTES, MAX_REASON_BYTES - 1)
    reason.encode("utf-8")  # never a broken sequence
    assert close_reason("x", "😀" * 100).encode().decode() == close_reason(
        "x", "😀" * 100
    )


def test_errors_carry_codes() -> None:
    err = TokenMalformed()
    assert (err.close_code, err.http_status, err.code) == (4401, 401, "token_malformed")
    assert err.reason.startswith("token_malformed: not a JWT")
    assert SlowConsumer().close_code == 1013
    assert WSChatError().reason == "internal_error: the server hit an unexpected error"


@given(st.text(max_size=20), st.text(max_size=200))
def test_reason_is_the_longest_prefix_that_fits(code: str, words: str) -> None:
    full = f"{code}: {words}" if words else code
    reason = close_reason(code, words)
    if len(full.encode()) <= MAX_REASON_BYTES:
        assert reason == full
    else:
        # Not one more character would have fitted.
        next_char = full[len(reason)]
        assert len((reason + next_char).encode()) > MAX_REASON_BYTES


@pytest.mark.parametrize("char", ["a", "é", "€", "😀"])
def test_clamping_each_utf8_width(char: str) -> None:
    reason = close_reason("code", char * 200)
    raw = reason.encode("utf-8")
    width = len(char.encode())
    assert MAX_REASON_BYTES - width < len(raw) <= MAX_REASON_BYTES
    assert reason == ("code: " + char * 200)[: len(reason)]


def _all_errors(cls: type[WSChatError]) -> list[type[WSChatError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found += _all_errors(sub)
    return found


def make(cls: type[WSChatError], detail: str | None = None) -> WSChatError:
    """An instance of any error class (a FrameError needs its code)."""
    if issubclass(cls, errors.FrameError):
        return cls(errors.ErrorCode.BAD_FRAME, detail or "bad frame")
    return cls(detail)


def test_every_error_has_a_snake_case_code_and_a_reason_that_fits() -> None:
    classes = _all_errors(WSChatError)
    assert len(classes) >= 20
    for cls in classes:
        err = make(cls)
        assert re.fullmatch(r"[a-z][a-z_]*", err.code), cls
        assert err.reason.startswith(err.code)
        assert len(err.reason.encode()) <= MAX_REASON_BYTES
        assert str(err) == f"{err.code}: {err.detail}"
        long = make(cls, "x" * 500)
        assert len(long.reason.encode()) == MAX_REASON_BYTES
        assert 1000 <= cls.close_code <= 4999
        assert 400 <= cls.http_status <= 599


# -- every error's wire values, pinned with literals -----------------------------------

WIRE = [
    # class, close code, HTTP status (sent with http_denials=True), reason code
    (errors.WSChatError, 1011, 500, "internal_error"),
    (errors.ConfigurationError, 1011, 500, "configuration_error"),
    (errors.InvalidChatId, 4400, 400, "invalid_chat_id"),
    (errors.BadRequest, 4400, 400, "bad_request"),
    (errors.OriginRefused, 4403, 403, "origin_refused"),
    (errors.AuthenticationError, 4401, 401, "token_invalid"),
    (errors.TokenMissing, 4401, 401, "token_missing"),
    (errors.TokenMalformed, 4401, 401, "token_malformed"),
    (errors.TokenInvalid, 4401, 401, "token_invalid"),
    (errors.TokenExpired, 4401, 401, "token_expired"),
    (errors.TokenNotYetValid, 4401, 401, "token_not_yet_valid"),
    (errors.TokenTooLarge, 4401, 401, "token_too_large"),
    (errors.TokenAmbiguous, 4401, 401, "token_ambiguous"),
    (errors.TokenRevoked, 4401, 401, "token_revoked"),
    (errors.Forbidden, 4403, 403, "forbidden"),
    (errors.AuthTimeout, 4408, 408, "auth_timeout"),
    (errors.TextOnly, 1003, 400, "text_only"),
    (errors.MessageTooBig, 1009, 413, "message_too_big"),
    (errors.SlowConsumer, 1013, 503, "slow_consumer"),
    (errors.TryAgainLater, 1013, 503, "try_again_later"),
    (errors.KeysUnavailable, 1013, 503, "try_again_later"),
    (errors.RateLimited, 4429, 429, "rate_limited"),
    (errors.TooManyConnections, 4429, 429, "too_many_connections"),
    (errors.NormalClosure, 1000, 410, "bye"),
    (errors.GoingAway, 1001, 503, "going_away"),
    (errors.ServiceRestart, 1012, 503, "service_restart"),
    # Refused before accept: the ASGI server answers HTTP 403.
    (errors.NotFound, 1008, 404, "not_found"),
    # Nothing is sent: the peer is gone.
    (errors.TransportClosed, 1006, 500, "gone"),
    # Answered with an error frame (the code is the frame's); never a close of
    # their own (see test_an_error_reply_that_ends_a_connection_is_a_1011).
    (errors.ErrorReply, 1011, 500, "internal_error"),
    (errors.FrameError, 1011, 500, "bad_frame"),
    (errors.Veto, 1011, 500, "vetoed"),
    (errors.BackplaneUnavailable, 1011, 500, "delivery_degraded"),
    (errors.PublishInDoubt, 1011, 500, "delivery_degraded"),
    (errors.HistoryStoreUnavailable, 1011, 500, "delivery_degraded"),
    (errors.DeliveryInDoubt, 1011, 500, "delivery_degraded"),
    (errors.HistoryUnavailable, 1011, 500, "history_unavailable"),
    (errors.NotSent, 1011, 500, "not_sent"),
]


@pytest.mark.parametrize(
    ("cls", "close_code", "http_status", "code"),
    WIRE,
    ids=[w[0].__name__ for w in WIRE],
)
def test_wire_values_of_each_error(
    cls: type[WSChatError], close_code: int, http_status: int, code: str
) -> None:
    err = make(cls)
    assert (err.close_code, err.http_status, err.code) == (
        close_code,
        http_status,
        code,
    )


def test_the_table_lists_every_error_class() -> None:
    # A new error in wschat.errors gets its wire values pinned above.
    defined = {c for c in _all_errors(WSChatError) if c.__module__ == "wschat.errors"}
    assert {w[0] for w in WIRE} == defined


def test_close_reason_limit_is_123_bytes() -> None:
    assert MAX_REASON_BYTES == 123
    exactly = "w" * (123 - len("code: "))
    assert close_reason("code", exactly) == "code: " + exactly
    assert close_reason("code", exactly + "w") == "code: " + exactly
    # Cut inside a two-byte character: the partial character is dropped.
    assert close_reason("code", exactly[:-1] + "é") == "code: " + exactly[:-1]
    assert close_reason("x" * 200) == "x" * 123


def test_detail_is_the_exception_message() -> None:
    err = errors.TokenInvalid("signature does not match the key")
    assert err.args == ("signature does not match the key",)
    assert repr(err) == "TokenInvalid('signature does not match the key')"
    assert errors.TokenExpired().args == ("token has expired; get a new one",)


# -- CloseCode: every close code wschat sends, pinned ----------------------------------


def test_close_codes_are_pinned() -> None:
    assert {m.name: m.value for m in errors.CloseCode} == {
        "NORMAL_CLOSURE": 1000,
        "GOING_AWAY": 1001,
        "UNSUPPORTED_DATA": 1003,
        "ABNORMAL_CLOSURE": 1006,
        "POLICY_VIOLATION": 1008,
        "MESSAGE_TOO_BIG": 1009,
        "INTERNAL_ERROR": 1011,
        "SERVICE_RESTART": 1012,
        "TRY_AGAIN_LATER": 1013,
        "BAD_REQUEST": 4400,
        "UNAUTHORIZED": 4401,
        "FORBIDDEN": 4403,
        "AUTH_TIMEOUT": 4408,
        "TOO_MANY_REQUESTS": 4429,
    }


def test_a_close_code_prints_as_its_number() -> None:
    # Log lines read code=4401 on every Python version (3.10 printed the name).
    code = errors.CloseCode.UNAUTHORIZED
    logged = "%s %d" % (code, code)  # noqa: UP031 - the way log lines format it
    assert (str(code), f"{code}", logged) == ("4401", "4401", "4401 4401")
    assert json.dumps({"code": code}) == '{"code": 4401}'
    assert isinstance(code, int)


def test_every_error_closes_with_a_close_code_member_and_every_member_is_used() -> None:
    used = set()
    for cls in _all_errors(WSChatError):
        if cls.__module__ == "wschat.errors":
            assert type(cls.close_code) is errors.CloseCode, cls
            used.add(cls.close_code)
    assert used == set(errors.CloseCode)


# -- ErrorCode: the registry of error-frame codes --------------------------------------


def test_error_frame_codes_are_pinned() -> None:
    assert {m.name: m.value for m in errors.ErrorCode} == {
        "BAD_JSON": "bad_json",
        "BAD_FRAME": "bad_frame",
        "UNKNOWN_TYPE": "unknown_type",
        "VETOED": "vetoed",
        "DELIVERY_DEGRADED": "delivery_degraded",
        "HISTORY_UNAVAILABLE": "history_unavailable",
        "NOT_SENT": "not_sent",
        "BAD_CURSOR": "bad_cursor",
    }
    for member in errors.ErrorCode:
        assert (str(member), f"{member}") == (member.value, member.value)
        assert json.dumps(member) == f'"{member.value}"'
        assert len(member.meaning) > 20, member


def _documented_error_codes() -> dict[str, str]:
    """The ``code`` column of the code table under ``### `error``` in
    docs/protocol.md (after the frame's field table)."""
    text = (ROOT / "docs" / "protocol.md").read_text()
    section = text.split("### `error`", 1)[1].split("\n### ", 1)[0]
    body = section.split("| `code` | cause |\n|---|---|\n", 1)[1]
    rows = re.findall(r"^\| `([a-z_]+)` \| (.+) \|$", body, flags=re.MULTILINE)
    return dict(rows)


def test_docs_list_exactly_the_registered_error_frame_codes() -> None:
    documented = _documented_error_codes()
    # Both ways: no code the server sends is undocumented, and the docs promise
    # no code the server never sends.
    assert set(documented) == {m.value for m in errors.ErrorCode}
    assert all(len(cause) > 20 for cause in documented.values())


def test_the_protocol_sends_only_registered_error_codes() -> None:
    bad = ['{"type": "message"', "[]", '{"type": "nope"}', '{"type": 1}', "NaN"]
    for text in bad:
        with pytest.raises(errors.FrameError) as info:
            parse_client_frame(text)
        assert type(info.value.code) is errors.ErrorCode, text
    assert errors.Veto().code is errors.ErrorCode.VETOED
    assert errors.BackplaneUnavailable().code is errors.ErrorCode.DELIVERY_DEGRADED
    assert errors.HistoryUnavailable().code is errors.ErrorCode.HISTORY_UNAVAILABLE
    assert errors.NotSent().code is errors.ErrorCode.NOT_SENT


# -- the classes that joined the tree, where they were ---------------------------------


def test_moved_errors_are_importable_where_they_were() -> None:
    assert protocol.FrameError is errors.FrameError
    assert hooks.Veto is errors.Veto
    assert transport.TransportClosed is errors.TransportClosed
    assert backplane_base.BackplaneUnavailable is errors.BackplaneUnavailable
    assert backplane_base.PublishInDoubt is errors.PublishInDoubt
    assert backplane.BackplaneUnavailable is errors.BackplaneUnavailable
    assert backplane.PublishInDoubt is errors.PublishInDoubt
    assert connection.is_gone is errors.is_gone


def test_moved_errors_keep_their_behaviour() -> None:
    frame = errors.FrameError(errors.ErrorCode.BAD_JSON, "frame is not valid JSON")
    assert isinstance(frame, ValueError)
    assert (frame.code, frame.detail) == ("bad_json", "frame is not valid JSON")
    assert str(frame) == "bad_json: frame is not valid JSON"
    veto = errors.Veto()
    assert (veto.message, veto.code, veto.detail) == (
        "message refused",
        "vetoed",
        "message refused",
    )
    own = errors.Veto("no spam here", code="spam")
    assert (own.message, own.code, own.args) == (
        "no spam here",
        "spam",
        ("no spam here",),
    )
    assert errors.is_gone(errors.TransportClosed())
    assert not errors.is_gone(errors.SlowConsumer())
    assert not errors.is_gone(None)
    assert errors.PublishInDoubt().detail == (
        "the engine did not answer in time; the message may still go out"
    )
    assert isinstance(errors.PublishInDoubt(), errors.BackplaneUnavailable)


@pytest.mark.anyio
async def test_publish_in_doubt_tells_its_outcome() -> None:
    assert await errors.PublishInDoubt("no answer").outcome() is False

    async def published() -> bool:
        return True

    assert await errors.PublishInDoubt("no answer", published).outcome() is True


# -- error_class: reason code -> class, for a close decided in another process ---------

BY_CODE = {
    "internal_error": errors.WSChatError,
    "configuration_error": errors.ConfigurationError,
    "invalid_chat_id": errors.InvalidChatId,
    "bad_request": errors.BadRequest,
    "origin_refused": errors.OriginRefused,
    "not_found": errors.NotFound,
    "token_missing": errors.TokenMissing,
    "token_malformed": errors.TokenMalformed,
    "token_invalid": errors.TokenInvalid,
    "token_expired": errors.TokenExpired,
    "token_not_yet_valid": errors.TokenNotYetValid,
    "token_too_large": errors.TokenTooLarge,
    "token_ambiguous": errors.TokenAmbiguous,
    "token_revoked": errors.TokenRevoked,
    "forbidden": errors.Forbidden,
    "auth_timeout": errors.AuthTimeout,
    "text_only": errors.TextOnly,
    "message_too_big": errors.MessageTooBig,
    "slow_consumer": errors.SlowConsumer,
    "try_again_later": errors.TryAgainLater,
    "rate_limited": errors.RateLimited,
    "too_many_connections": errors.TooManyConnections,
    "bye": errors.NormalClosure,
    "going_away": errors.GoingAway,
    "service_restart": errors.ServiceRestart,
    "gone": errors.TransportClosed,
}


@pytest.mark.parametrize(("code", "cls"), BY_CODE.items())
def test_error_class_of_each_reason_code(code: str, cls: type[WSChatError]) -> None:
    assert errors.error_class(code) is cls
    made = errors.error_class(code)("said the other process")
    assert (made.code, made.close_code, made.detail) == (
        code,
        cls.close_code,
        "said the other process",
    )


@pytest.mark.parametrize(
    "code", ["banned", "", "vetoed", "delivery_degraded", "bad_json", "Forbidden"]
)
def test_an_unknown_reason_code_closes_as_forbidden(code: str) -> None:
    # Error-frame codes never close a connection; an application's own class is
    # not known in the other process: both close as 4403 with their detail.
    assert errors.error_class(code) is errors.Forbidden


def test_every_closing_class_has_a_reason_code_entry() -> None:
    closing = {
        c
        for c in _all_errors(WSChatError)
        if c.__module__ == "wschat.errors" and not issubclass(c, errors.ErrorReply)
    }
    # AuthenticationError shares token_invalid with its more specific TokenInvalid;
    # KeysUnavailable is a TryAgainLater with other words (it names no code).
    assert closing - set(BY_CODE.values()) == {
        errors.AuthenticationError,
        errors.KeysUnavailable,
    }


# -- wire_close: the one error -> wire + log line mapping ------------------------------


def line(closing: errors.WireClose) -> str:
    return closing.message % closing.args


def test_a_refusal_with_every_field() -> None:
    closing = errors.wire_close(
        errors.TokenMalformed("not a JWT: got 1 part"),
        chat_id="lobby",
        client="1.2.3.4:5",
        token="sha256:9f86d081884c",
    )
    assert (closing.code, closing.reason, closing.http_status) == (
        4401,
        "token_malformed: not a JWT: got 1 part",
        401,
    )
    assert (closing.send, closing.tell, closing.level) == (True, True, logging.WARNING)
    assert closing.throttle == (4401, "token_malformed")
    assert type(closing.code) is int
    assert line(closing) == (
        "wschat refused connection: chat='lobby' code=4401 "
        "reason='token_malformed: not a JWT: got 1 part' "
        "token=sha256:9f86d081884c client=1.2.3.4:5"
    )


def test_a_refusal_names_only_the_fields_given() -> None:
    timeout = errors.AuthTimeout("send an auth frame within 5 s")
    assert line(errors.wire_close(timeout, chat_id="lobby", client="c:1")) == (
        "wschat refused connection: chat='lobby' code=4408 "
        "reason='auth_timeout: send an auth frame within 5 s' client=c:1"
    )
    cap = errors.TooManyConnections()
    assert line(errors.wire_close(cap, chat_id="lobby", token="sha256:0")) == (
        "wschat refused connection: chat='lobby' code=4429 "
        "reason='too_many_connections: too many open connections for this user' "
        "token=sha256:0"
    )
    long = errors.wire_close(errors.Forbidden(), chat_id="r" * 300)
    assert f"chat='{'r' * 128}' " in line(long)


def test_a_token_fingerprint_is_computed_only_for_a_written_line_and_once() -> None:
    calls: list[int] = []

    def fingerprint() -> str:
        calls.append(1)
        return "sha256:abcdefabcdef"

    closing = errors.wire_close(
        errors.TokenInvalid(), chat_id="lobby", token=fingerprint
    )
    assert calls == []
    assert line(closing).endswith(" token=sha256:abcdefabcdef")
    assert line(closing).endswith(" token=sha256:abcdefabcdef")
    assert calls == [1]


def test_an_origin_refusal_tells_the_page_nothing() -> None:
    refused = errors.OriginRefused(origin="https://evil.example" + "x" * 300)
    closing = errors.wire_close(
        refused, chat_id="lobby", client="1.2.3.4:5", token="sha256:0"
    )
    assert (closing.tell, closing.http_status, closing.send) == (False, 403, True)
    assert closing.throttle == (403, "origin_refused")
    assert closing.level == logging.WARNING
    assert line(closing) == (
        "wschat refused origin "
        + repr(("https://evil.example" + "x" * 300)[:200])
        + " for chat 'lobby' (client 1.2.3.4:5): add it to allowed_origins=[...] "
        "if this site should connect"
    )


def test_a_path_nothing_serves_is_1008_without_a_line() -> None:
    closing = errors.wire_close(errors.NotFound())
    assert (closing.code, closing.reason, closing.level) == (
        1008,
        "not_found: no chat route at this path",
        0,
    )


@pytest.mark.parametrize("connection", [None, "c1-1"])
def test_a_gone_peer_gets_nothing_and_no_line(connection: str | None) -> None:
    closing = errors.wire_close(
        errors.TransportClosed(), chat_id="lobby", connection=connection
    )
    assert (closing.send, closing.level, closing.code) == (False, 0, 1006)


@pytest.mark.parametrize(
    "error",
    [
        errors.Veto("no"),
        errors.FrameError(errors.ErrorCode.BAD_JSON, "x"),
        errors.BackplaneUnavailable(),
    ],
    ids=["Veto", "FrameError", "BackplaneUnavailable"],
)
@pytest.mark.parametrize("connection", [None, "c1-1"])
def test_an_error_reply_that_ends_a_connection_is_a_1011(
    error: WSChatError, connection: str | None
) -> None:
    closing = errors.wire_close(error, chat_id="lobby", connection=connection)
    assert (closing.code, closing.reason, closing.http_status) == (
        1011,
        "internal_error: the server hit an unexpected error",
        500,
    )
    assert (closing.level, closing.throttle, closing.tell) == (
        logging.ERROR,
        None,
        True,
    )
    where = ", connection c1-1" if connection else ""
    assert line(closing) == (
        f"wschat: {type(error).__name__} ({error.code}) was raised where no error "
        f"frame can answer it (chat 'lobby'{where}); closing with 1011"
    )


def test_a_slow_consumer_is_the_one_session_close_with_a_line() -> None:
    slow = errors.SlowConsumer("outbox full (1024 frames)")
    closing = errors.wire_close(slow, chat_id="lobby", connection="c1-7")
    assert (closing.code, closing.reason) == (
        1013,
        "slow_consumer: outbox full (1024 frames)",
    )
    assert (closing.level, closing.throttle) == (logging.WARNING, None)
    assert line(closing) == (
        "wschat closed slow consumer c1-7 (chat lobby): outbox full (1024 frames)"
    )


@pytest.mark.parametrize(
    "error",
    [
        errors.GoingAway(),
        errors.ServiceRestart(),
        errors.NormalClosure("logged out"),
        errors.Forbidden("removed from the chat by the server"),
        errors.RateLimited(),
        errors.BadRequest(),
        errors.TokenExpired(),
        errors.TextOnly(),
        errors.MessageTooBig(),
        errors.WSChatError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_other_session_closes_send_the_error_and_write_no_line(
    error: WSChatError,
) -> None:
    closing = errors.wire_close(error, chat_id="lobby", connection="c1-1")
    assert (closing.code, closing.reason, closing.http_status) == (
        error.close_code,
        error.reason,
        error.http_status,
    )
    assert (closing.send, closing.tell, closing.level) == (True, True, 0)


def test_an_application_error_class_keeps_its_own_close_code() -> None:
    class Banned(errors.Forbidden):
        close_code = 4003
        code = "banned"

    closing = errors.wire_close(Banned("spam"), chat_id="lobby", connection="c1")
    assert (closing.code, closing.reason) == (4003, "banned: spam")
    assert type(closing.code) is int
