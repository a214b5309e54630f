"""A key rotation during a connect storm, with a JWKS endpoint that takes 200 ms.

The server is uvicorn in a subprocess (``benchmarks.jwks_storm``), so the clients'
work does not share its interpreter; a ticker on its event loop records every
wake-up. The assertions hold on a busy shared machine: they compare what a fetch
made off the loop leaves (the loop keeps ticking through the fetch) with what a
fetch on the loop does (no tick for its whole 200 ms), which the control proves the
harness can see. ``python -m benchmarks.jwks_storm`` reports the percentiles (in a
quiet moment, the loop's lag p99 during the fetch is about 3 ms).
"""

from __future__ import annotations

import pytest

from benchmarks.jwks_storm import run

pytestmark = pytest.mark.e2e

DELAY = 0.2


def test_a_slow_jwks_fetch_during_a_storm_of_1000_never_stalls_the_loop() -> None:
    result = run(
        "jwks", connections=1000, open_clients=50, delay=DELAY, rate=500, pin=False
    )
    assert result["admitted"] == 1000, result
    # One fetch for the whole storm: every handshake with the new kid waited for it.
    assert result["jwks_requests"] == 1, result
    fetch = result["fetch"]
    assert fetch["window_ms"] >= 1000 * DELAY
    # A 1 ms ticker: ~200 ticks in the window when nothing holds the loop; a fetch
    # on the loop leaves none, and one gap as long as the fetch (the control below).
    # Other processes on this machine take the CPU away for a while now and then:
    # the gap is counted without the time the loop waited for a CPU.
    assert fetch["ticks"] >= 3, result
    assert fetch["longest_on_cpu_ms"] < 150, result
    # The goal is a p99 under 5 ms; 50 is the generous bound of a noisy machine
    # (a fetch on the loop makes it the whole 200 ms).
    assert fetch["lag_on_cpu_p99_ms"] < 50, result


def test_control_a_fetch_on_the_event_loop_is_seen_as_a_stall() -> None:
    """The harness sees a blocked loop: PyJWT's PyJWKClient called from verify."""
    result = run(
        "blocking", connections=200, open_clients=10, delay=DELAY, rate=500, pin=False
    )
    assert result["admitted"] == 200, result
    assert result["jwks_requests"] == 1, result
    fetch = result["fetch"]
    # A few ticks at the window's edges at most (the window is the JWKS server's,
    # from the request's arrival to the answer, and its clock is not the loop's:
    # 1 to 4 seen in CI); the loop itself stood still for the fetch, which the gap
    # below proves. An off-loop fetch ticks about 200 times in the window.
    assert fetch["ticks"] <= 10, result
    assert fetch["longest_gap_ms"] >= 1000 * DELAY * 0.95, result
    assert fetch["longest_on_cpu_ms"] >= 1000 * DELAY * 0.9, result
    assert fetch["lag_on_cpu_p99_ms"] is None or fetch["lag_on_cpu_p99_ms"] >= 50
