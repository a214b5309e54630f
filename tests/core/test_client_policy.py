"""The Python client's close-code decisions are the data's (close-codes.json).

``wschat.client`` keeps no table of its own: for every entry of
``wschat.schema.close_policy()`` the client finds that entry, and its step
(:func:`wschat.client.decide`), backoff and fix follow the entry's action,
``backoff_ms``, ``max_attempts`` and fix. Pure functions: no I/O, no event loop.
"""

from __future__ import annotations

import inspect

import pytest

from wschat import schema
from wschat.client import Backoff, close_policy, decide, policy_for
from wschat.client import chat as client_chat
from wschat.client import policy as client_policy
from wschat.client.policy import HTTP_STATUS_CODES, client_fix
from wschat.schema import ClosePolicy

POLICY = schema.close_policy()


def name(entry: ClosePolicy) -> str:
    return f"{entry.code}-{entry.reason or 'none'}"


def test_the_client_reads_the_schema_data() -> None:
    assert close_policy is schema.close_policy
    assert policy_for is schema.policy_for
    assert client_policy.ClosePolicy is schema.ClosePolicy
    assert len(POLICY) == 24


@pytest.mark.parametrize("entry", POLICY, ids=name)
def test_the_client_finds_each_entry(entry: ClosePolicy) -> None:
    if (entry.code, entry.reason) == (1012, ""):
        # uvicorn's own 1012 has no reason: the first 1012 entry, same decision.
        found = policy_for(1012, "")
        assert (found.action, found.backoff_ms) == (entry.action, entry.backoff_ms)
        return
    assert policy_for(entry.code, entry.reason) == entry
    assert policy_for(entry.code, f"{entry.reason}: some detail") == entry


@pytest.mark.parametrize("entry", POLICY, ids=name)
@pytest.mark.parametrize("has_provider", [True, False])
def test_the_clients_step_for_each_entry_is_the_datas(
    entry: ClosePolicy, has_provider: bool
) -> None:
    def step(attempt: int = 0, refreshed: bool = False, cap: int | None = None) -> str:
        return decide(
            entry,
            attempt=attempt,
            refreshed=refreshed,
            has_provider=has_provider,
            max_attempts=cap,
        )

    fix = client_fix(entry, has_provider=has_provider)
    if entry.action == "retry":
        assert entry.backoff_ms is not None
        limit = entry.max_attempts
        for attempt in range(limit if limit is not None else 50):
            assert step(attempt) == "retry", attempt
            base, cap = entry.backoff_ms
            assert Backoff.ceiling(entry, attempt) == min(cap, base * 2**attempt) / 1000
        if limit is not None:
            assert step(limit) == "give_up"
        assert step(2, cap=2) == "give_up"  # the caller's max_attempts too
        assert step(1, cap=2) == "retry"
        assert step(0, refreshed=True) == "retry"
        assert fix == entry.fix
    elif entry.action == "refresh_token":
        assert entry.max_attempts == 1
        assert step() == ("refresh_token" if has_provider else "stop")
        assert step(refreshed=True) == "stop"  # once: never a loop of refreshes
        assert fix.startswith(entry.fix)
        assert ("token_provider=" in fix) is not has_provider
    else:
        assert entry.action == "stop"
        expected = "end" if entry.code == 1000 else "stop"
        assert {step(), step(5), step(0, refreshed=True), step(0, cap=0)} == {expected}
        assert fix == entry.fix


def test_an_unknown_code_stops() -> None:
    unknown = policy_for(4999, "mine")
    assert unknown.action == "stop"
    assert decide(unknown, attempt=0, refreshed=False, has_provider=True) == "stop"


def test_the_http_statuses_read_as_codes_of_the_data() -> None:
    codes = {entry.code for entry in POLICY}
    assert set(HTTP_STATUS_CODES.values()) <= codes
    assert HTTP_STATUS_CODES == {
        400: 4400,
        401: 4401,
        403: 4403,
        404: 4400,
        429: 4429,
        503: 1013,
    }


def test_no_second_table_in_the_client() -> None:
    """No fix, no backoff and no wording of the data is spelled in the client."""
    source = inspect.getsource(client_policy) + inspect.getsource(client_chat)
    for entry in POLICY:
        assert entry.fix not in source, entry
        assert entry.client_should not in source, entry
    for figure in ("10_000", "30_000", "120_000", "15_000", "10000", "30000"):
        assert figure not in source, figure
