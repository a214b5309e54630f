"""The close-code policy (wschat/schema/close-codes.json) is the one source of truth:
it covers exactly the closes wschat.errors can send, docs/close-codes.md shows it
row by row, and ``policy_for`` reads it.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import pytest

from wschat import errors
from wschat.errors import CloseCode
from wschat.schema import ClosePolicy, close_policy, policy_for

DOCS = Path(__file__).resolve().parents[2] / "docs"
POLICY = close_policy()


def wire_closes() -> set[tuple[int, str]]:
    """(close code, reason code) of every error class that can close a connection
    with a frame the client reads."""
    return {
        (int(cls.close_code), cls.code)
        for cls in vars(errors).values()
        if isinstance(cls, type)
        and issubclass(cls, errors.WSChatError)
        and not issubclass(cls, errors.ErrorReply)
        and cls
        not in (
            errors.ConfigurationError,
            errors.OriginRefused,
            errors.NotFound,
            errors.TransportClosed,
        )
    }


def test_the_policy_covers_exactly_what_wschat_sends() -> None:
    sent = {(p.code, p.reason) for p in POLICY if p.sent_by == "wschat"}
    assert sent == wire_closes()
    assert len(POLICY) == len({(p.code, p.reason) for p in POLICY}), "duplicates"


def test_every_close_code_a_client_can_see_has_a_policy() -> None:
    codes = {p.code for p in POLICY}
    # 1008 is answered as a bare HTTP 403 before accept: no client sees it.
    assert {int(c) for c in CloseCode} - {CloseCode.POLICY_VIOLATION} == codes
    assert policy_for(1006).sent_by == "network"
    assert policy_for(1012, "").sent_by == "server"


def test_each_entry_is_complete() -> None:
    for p in POLICY:
        assert all((p.when, p.client_should, p.fix)), p
        if p.action == "retry":
            assert p.backoff_ms is not None
            base, cap = p.backoff_ms
            assert 0 <= base <= cap <= 120_000
        else:
            assert p.backoff_ms is None
        if p.action == "refresh_token":
            assert p.max_attempts == 1


@pytest.mark.parametrize(
    ("code", "reason", "action"),
    [
        (1000, "bye", "stop"),
        (1001, "going_away", "retry"),
        (1003, "text_only", "stop"),
        (1006, "", "retry"),
        (1009, "message_too_big", "stop"),
        (1011, "internal_error", "retry"),
        (1012, "service_restart", "retry"),
        (1013, "slow_consumer", "retry"),
        (1013, "try_again_later", "retry"),
        (4400, "bad_request", "stop"),
        (4400, "invalid_chat_id", "stop"),
        (4401, "token_expired", "refresh_token"),
        (4401, "token_malformed", "refresh_token"),
        (4403, "forbidden", "stop"),
        (4429, "too_many_connections", "stop"),
        (4429, "rate_limited", "retry"),
    ],
)
def test_the_actions_are_the_ones_issue_15_names(
    code: int, reason: str, action: str
) -> None:
    assert policy_for(code, reason).action == action


def test_retry_backoffs() -> None:
    assert policy_for(1001, "going_away").backoff_ms == (500, 10_000)
    assert policy_for(1006).backoff_ms == (1000, 30_000)
    assert policy_for(1013, "slow_consumer").backoff_ms == (15_000, 120_000)
    auth_timeout = policy_for(4408, "auth_timeout")
    assert (auth_timeout.backoff_ms, auth_timeout.max_attempts) == ((0, 0), 3)


def test_policy_for_reads_a_whole_reason_and_unknown_codes() -> None:
    whole = "token_expired: token has expired; get a new one"
    assert policy_for(4401, whole).reason == "token_expired"
    # A reason this table does not know: the code's first entry.
    assert policy_for(4401, "token_stolen: gone").reason == "token_missing"
    unknown = policy_for(4999, "mine: an application's own")
    assert (unknown.action, unknown.reason, unknown.code) == ("stop", "mine", 4999)


def _policy_words(p: ClosePolicy) -> str:
    if p.action == "stop":
        return "stop"
    if p.action == "refresh_token":
        return "refresh the token once"
    assert p.backoff_ms is not None
    base, cap = p.backoff_ms
    if cap == 0:
        return f"retry at once, at most {p.max_attempts} times"
    return f"retry, backoff {base / 1000:g}-{cap / 1000:g} s"


def _rows(text: str, header: str) -> list[list[str]]:
    start = text.index(header)
    block = text[start:].split("\n\n", 1)[0].splitlines()[2:]
    return [[c.strip() for c in row.strip("|").split("|")] for row in block]


def test_close_codes_md_shows_the_policy_row_by_row() -> None:
    text = (DOCS / "close-codes.md").read_text()
    rows = _rows(text, "| close code | reason code | when | the client should |")
    expected = [
        [str(p.code), f"`{p.reason}`", p.when, p.client_should, _policy_words(p)]
        for p in POLICY
        if p.sent_by == "wschat"
    ]
    assert rows == expected
    others = _rows(text, "| close code | meaning | the client should | policy |")
    assert [r[1:] for r in others] == [
        [p.when, p.client_should, _policy_words(p)]
        for p in POLICY
        if p.sent_by != "wschat"
    ]
    assert [r[0].split()[0] for r in others] == [
        str(p.code) for p in POLICY if p.sent_by != "wschat"
    ]
    assert "../src/wschat/schema/close-codes.json" in text


def test_the_file_names_its_actions() -> None:
    raw = json.loads(
        resources.files("wschat.schema").joinpath("close-codes.json").read_text()
    )
    assert set(raw["actions"]) == {"retry", "refresh_token", "stop"}
    assert {e["action"] for e in raw["codes"]} <= set(raw["actions"])
    assert re.fullmatch(r"\d+", str(raw["version"]))
