"""Numeric options are finite numbers of the right type, in range, or refused.

``nan`` passes every ``x <= 0`` check and ``True`` is an ``int`` in Python: each
option below is refused with a ``ConfigurationError`` that says what is allowed.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from wschat import ConnectionManager
from wschat.connection import OutboxLimits
from wschat.errors import ConfigurationError
from wschat.options import ChatOptions

NOT_NUMBERS: list[Any] = [math.nan, math.inf, -math.inf, True, "5", [5]]


def refused(make: Any, **kwargs: Any) -> str:
    with pytest.raises(ConfigurationError) as info:
        make(**kwargs)
    return info.value.detail


# -- ChatOptions --------------------------------------------------------------------

CHAT_COUNTS = {
    "max_message_bytes": "max_message_bytes must be an integer of at least 64",
    "rate_burst": "rate_burst must be an integer of at least 1",
    "malformed_limit": "malformed_limit must be an integer of at least 1",
}
# The outbox caps are the manager's only (test_manager_counts below).


@pytest.mark.parametrize("name", sorted(CHAT_COUNTS))
@pytest.mark.parametrize("value", [*NOT_NUMBERS, 0, -1, 2.0])
def test_chat_option_counts(name: str, value: Any) -> None:
    if name == "max_message_bytes" and value == 0:
        value = 63
    detail = refused(ChatOptions, **{name: value})
    assert detail == f"{CHAT_COUNTS[name]}; got {value!r}"


@pytest.mark.parametrize("name", ["auth_timeout", "close_timeout"])
@pytest.mark.parametrize("value", [*NOT_NUMBERS, 0, 0.0, -1, None])
def test_chat_option_timeouts(name: str, value: Any) -> None:
    detail = refused(ChatOptions, **{name: value})
    assert detail == f"{name} must be a number of seconds above 0; got {value!r}"


@pytest.mark.parametrize("value", [*NOT_NUMBERS, 0, -1.5])
def test_chat_option_rate_limit(value: Any) -> None:
    assert refused(ChatOptions, rate_limit=value) == (
        "rate_limit must be a number of frames per second above 0, "
        f"or None for no limit; got {value!r}"
    )


def test_chat_options_at_their_bounds() -> None:
    options = ChatOptions(
        max_message_bytes=64,
        rate_burst=1,
        malformed_limit=1,
        rate_limit=0.001,
        auth_timeout=0.001,
        close_timeout=0.001,
    )
    assert (options.max_message_bytes, options.rate_burst) == (64, 1)
    unlimited = ChatOptions(rate_limit=None, max_pending_auth=None)
    assert (unlimited.rate_limit, unlimited.max_pending_auth) == (None, None)
    defaults = ChatOptions()
    assert (defaults.max_message_bytes, defaults.rate_limit) == (65536, 100.0)
    assert (defaults.rate_burst, defaults.malformed_limit) == (200, 10)
    assert (defaults.auth_timeout, defaults.close_timeout) == (10.0, 5.0)


# -- OutboxLimits and ConnectionManager ---------------------------------------------


@pytest.mark.parametrize("name", ["max_messages", "max_bytes"])
@pytest.mark.parametrize("value", [*NOT_NUMBERS, 0, -1, 1.0])
def test_outbox_limits(name: str, value: Any) -> None:
    detail = refused(OutboxLimits, **{name: value})
    assert detail == f"{name} must be an integer of at least 1; got {value!r}"


def test_outbox_limits_at_their_bounds() -> None:
    assert OutboxLimits(1, 1) == OutboxLimits(max_messages=1, max_bytes=1)
    assert OutboxLimits() == OutboxLimits(1024, 4 * 1024 * 1024, "close")


@pytest.mark.parametrize(
    "name", ["outbox_max_messages", "outbox_max_bytes", "publish_queue"]
)
@pytest.mark.parametrize("value", [*NOT_NUMBERS, 0, -1, 1.0, None])
def test_manager_counts(name: str, value: Any) -> None:
    detail = refused(ConnectionManager, **{name: value})
    assert detail == f"{name} must be an integer of at least 1; got {value!r}"


@pytest.mark.parametrize("value", [*NOT_NUMBERS, 0, -1, 1.0])
def test_manager_connection_cap(value: Any) -> None:
    assert refused(ConnectionManager, max_connections_per_user=value) == (
        "max_connections_per_user must be an integer of at least 1, "
        f"or None for no cap; got {value!r}"
    )


@pytest.mark.parametrize("value", [*NOT_NUMBERS, 0, -30.0, None])
def test_manager_presence_ttl(value: Any) -> None:
    assert refused(ConnectionManager, presence_ttl=value) == (
        f"presence_ttl must be a number of seconds above 0; got {value!r}"
    )


def test_manager_at_its_bounds() -> None:
    manager = ConnectionManager(
        outbox_max_messages=1,
        outbox_max_bytes=1,
        publish_queue=1,
        max_connections_per_user=1,
        presence_ttl=0.001,
    )
    assert manager.limits == OutboxLimits(1, 1, "close")
    assert manager.max_connections_per_user == 1
