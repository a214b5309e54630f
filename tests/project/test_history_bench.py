"""benchmarks/history_micro.py runs, and measures what it says it does."""

from __future__ import annotations

from benchmarks import history_micro


def test_history_micro_benchmark_runs() -> None:
    encoded = history_micro.encode(messages=50, rounds=1)
    assert set(encoded) == {"us_encode_message", "us_template_and_render"}
    assert all(v > 0 for v in encoded.values())
    appended = history_micro.append(messages=300, rounds=1, max_messages=100)
    assert appended["us_append_nowait_1_rooms"] > 0
    assert appended["us_append_nowait_1000_rooms"] > 0
    assert appended["us_await_append_1_room"] > 0
    # The evicting case evicts on every append once 50 messages are kept.
    assert appended["evicted"] == 300 - 50
    read = history_micro.read(calls=5, rounds=1)
    assert read["us_read_after_per_message"] > 0
    assert read["us_read_before_page_of_50"] > 0
