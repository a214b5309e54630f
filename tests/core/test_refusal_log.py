"""Refusal logging is throttled: one line per reason per interval, with a count.

:class:`RefusalLog` on a fake clock (the interval and its boundaries), then the
endpoint serving refused fake sockets (both anyio backends): one WARNING for a burst,
the count when the interval is over, every refusal at DEBUG when asked for, and no
token hashing for the refusals that are not written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from tests.support.common import SECRET, FakeTransport
from wschat import ConnectionManager, TokenVerifier, token_fingerprint
from wschat.endpoint import ChatEndpoint
from wschat.options import ChatOptions
from wschat.refusal_log import INTERVAL, RefusalLog
from wschat.testing import mint_token
from wschat.transport import Handshake

pytestmark = pytest.mark.anyio

MALFORMED = (4401, "token_malformed")
EXPIRED = (4401, "token_expired")


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


Lines = Callable[[], list[str]]


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> Lines:
    """``lines()``: the messages the ``wschat.test`` logger has written so far."""
    caplog.set_level(logging.DEBUG, logger="wschat.test")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "wschat.test"]


def new_log(clock: Clock, interval: float = INTERVAL) -> RefusalLog:
    return RefusalLog(logging.getLogger("wschat.test"), interval, clock)


def test_the_interval_is_ten_seconds() -> None:
    assert INTERVAL == 10.0
    assert RefusalLog(logging.getLogger("x")).interval == 10.0


def count_line(n: int, code: int, reason: str) -> str:
    return (
        f"wschat refused {n} more connections with code={code} reason={reason} in "
        "the 10 s after the line logged for it (one line per reason every 10 s)"
    )


def test_first_in_full_then_counted_until_the_interval_ends(
    clock: Clock, lines: Lines
) -> None:
    log = new_log(clock)
    assert log.admit(*MALFORMED) is True
    for _ in range(2998):
        assert log.admit(*MALFORMED) is False
    clock.now += 9.999
    assert log.admit(*MALFORMED) is False
    assert log.pending() == {MALFORMED: 2999}
    assert lines() == []
    # Exactly INTERVAL later: the window is over; its count is written, and this
    # refusal opens the next window (the caller writes it in full).
    clock.now += 0.001
    assert log.admit(*MALFORMED) is True
    assert lines() == [count_line(2999, *MALFORMED)]
    assert log.pending() == {MALFORMED: 0}


def test_each_reason_and_code_has_its_own_window(clock: Clock, lines: Lines) -> None:
    log = new_log(clock)
    assert log.admit(*MALFORMED) is True
    assert log.admit(*EXPIRED) is True
    assert log.admit(4403, "forbidden") is True
    assert log.admit(403, "token_malformed") is True  # same reason, other code
    assert log.admit(*MALFORMED) is False
    assert log.admit(*EXPIRED) is False
    assert log.admit(*EXPIRED) is False
    clock.now += 10
    log.tick()
    assert sorted(lines()) == sorted(
        [count_line(1, *MALFORMED), count_line(2, *EXPIRED)]
    )
    assert log.pending() == {}


def test_a_window_with_nothing_suppressed_writes_no_count(
    clock: Clock, lines: Lines
) -> None:
    log = new_log(clock)
    assert log.admit(*MALFORMED) is True
    clock.now += 60
    log.tick()
    assert lines() == []
    assert log.admit(*MALFORMED) is True


def test_a_count_is_written_by_any_later_refusal(clock: Clock, lines: Lines) -> None:
    log = new_log(clock)
    log.admit(*MALFORMED)
    log.admit(*MALFORMED)
    clock.now += 5
    log.admit(*EXPIRED)
    log.admit(*EXPIRED)
    clock.now += 5  # MALFORMED's window is over, EXPIRED's is not
    assert log.admit(*EXPIRED) is False
    assert lines() == [count_line(1, *MALFORMED)]
    clock.now += 5
    assert log.admit(4403, "forbidden") is True
    assert lines() == [count_line(1, *MALFORMED), count_line(2, *EXPIRED)]


def test_tick_is_free_without_windows(clock: Clock, lines: Lines) -> None:
    log = new_log(clock)
    log.tick()
    assert clock.reads == 0
    log.admit(*MALFORMED)
    log.admit(*MALFORMED)
    log.tick()
    assert lines() == []
    clock.now += 10
    log.tick()
    assert lines() == [count_line(1, *MALFORMED)]


def test_another_interval(clock: Clock, lines: Lines) -> None:
    log = new_log(clock, interval=2.5)
    log.admit(*MALFORMED)
    log.admit(*MALFORMED)
    clock.now += 2.5
    log.tick()
    assert lines() == [
        "wschat refused 1 more connections with code=4401 reason=token_malformed in "
        "the 2.5 s after the line logged for it (one line per reason every 2.5 s)"
    ]


# -- the endpoint ------------------------------------------------------------------


def handshake(
    query: bytes, *, origin: str | None = None, chat_id: str = "room1"
) -> Handshake:
    headers = {"host": "chat.example"}
    if origin is not None:
        headers["origin"] = origin
    return Handshake(chat_id, query, headers, ["wschat.v1"], "ws", "1.2.3.4:5")


async def serve_all(
    endpoint: ChatEndpoint, handshakes: list[Handshake], first: str | None = None
) -> None:
    """Serve each handshake in turn; the client sends ``first``, then hangs up."""
    with anyio.fail_after(10):
        for hs in handshakes:
            transport = FakeTransport()
            async with anyio.create_task_group() as tg:
                tg.start_soon(endpoint.serve, hs, transport)
                if first is not None:
                    transport.feed(first)
                transport.hang_up()
            transport.aclose_streams()


def make_endpoint(clock: Clock, **options: Any) -> ChatEndpoint:
    endpoint = ChatEndpoint(
        ConnectionManager(),
        TokenVerifier(SECRET, algorithms=["HS256"]),
        ChatOptions(**options),
    )
    endpoint.refusals = RefusalLog(logging.getLogger("wschat"), clock=clock)
    return endpoint


def wschat_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "wschat" and r.levelno == level
    ]


async def test_a_burst_of_refusals_is_one_warning_then_a_count(
    clock: Clock, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed: list[object] = []
    real = token_fingerprint

    def counting(*args: Any) -> str:
        hashed.append(args)
        return real(*args)

    # Admission hashes a refused token only when the log line is written.
    monkeypatch.setattr("wschat.admission.token_fingerprint", counting)
    caplog.set_level(logging.INFO, logger="wschat")
    endpoint = make_endpoint(clock)
    junk = [handshake(f"token=junk-{i}".encode()) for i in range(50)]
    await serve_all(endpoint, junk)
    warnings = wschat_lines(caplog, logging.WARNING)
    assert len(warnings) == 1, warnings
    assert "code=4401 reason='token_malformed" in warnings[0]
    assert len(hashed) == 1  # the 49 refusals not written were not hashed either
    # An accepted connection after the interval writes the count.
    clock.now += INTERVAL
    await serve_all(endpoint, [handshake(f"token={mint_token(SECRET, 'a')}".encode())])
    assert wschat_lines(caplog, logging.WARNING)[1:] == [
        count_line(49, 4401, "token_malformed")
    ]


async def test_every_refusal_at_debug_when_asked_for(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="wschat")
    endpoint = make_endpoint(clock)
    await serve_all(endpoint, [handshake(b"token=junk") for _ in range(5)])
    assert len(wschat_lines(caplog, logging.WARNING)) == 1
    debug = wschat_lines(caplog, logging.DEBUG)
    assert len(debug) == 4
    assert all("reason='token_malformed" in line for line in debug)


async def test_origin_and_first_message_refusals_are_throttled_too(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wschat")
    endpoint = make_endpoint(clock, first_message_auth=True)
    evil = [handshake(b"", origin="http://evil.example") for _ in range(20)]
    await serve_all(endpoint, evil)
    # First-message auth: the first frame is not an auth frame.
    await serve_all(endpoint, [handshake(b"") for _ in range(20)], '{"type":"ping"}')
    warnings = wschat_lines(caplog, logging.WARNING)
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("wschat refused origin 'http://evil.example'")
    assert "code=4401 reason='token_missing: the first frame must be" in warnings[1]
    assert endpoint.refusals.pending() == {
        (403, "origin_refused"): 19,
        (4401, "token_missing"): 19,
    }


async def test_the_endpoint_uses_the_documented_interval() -> None:
    endpoint = ChatEndpoint(
        ConnectionManager(),
        TokenVerifier(SECRET, algorithms=["HS256"]),
        ChatOptions(),
    )
    assert endpoint.refusals.interval == 10.0
    assert endpoint.refusals.logger is logging.getLogger("wschat")


async def test_per_user_cap_refusals_are_throttled_too(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wschat")
    endpoint = ChatEndpoint(
        ConnectionManager(max_connections_per_user=1),
        TokenVerifier(SECRET, algorithms=["HS256"]),
        ChatOptions(),
    )
    endpoint.refusals = RefusalLog(logging.getLogger("wschat"), clock=clock)
    query = f"token={mint_token(SECRET, 'alice')}".encode()
    first = FakeTransport()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(endpoint.serve, handshake(query), first)
            assert (await first.next_frame())["type"] == "ready"
            await serve_all(endpoint, [handshake(query) for _ in range(5)])
            first.hang_up()
    first.aclose_streams()
    warnings = wschat_lines(caplog, logging.WARNING)
    assert len(warnings) == 1, warnings
    assert "code=4429 reason='too_many_connections" in warnings[0]
    assert endpoint.refusals.pending() == {(4429, "too_many_connections"): 4}
