"""History store micro-benchmarks, no sockets: what keeping history costs per message.

``encode``: ``encode_message`` (today's frame) against ``encode_message_template``
plus ``render`` (the frame with its offset), per message.
``append``: ``MemoryHistoryStore.append_nowait`` at steady state (every room full, so
each append also trims one message), in 1 room and in 1,000 rooms; the same through
``await store.append``; and with a memory bound that evicts on every append.
``read``: ``read_after`` replaying 50 missed messages of the 100 kept (per message
replayed), and ``read_before`` of a 50-message page.

These feed the target "W1 with history on >= 0.9x W1 with history off": a W1
message costs the server N deliveries of about 15 us each (docs/performance.md), so
what history adds once per message is compared with that.

Run ``python -m benchmarks.history_micro [--quick]``; prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import anyio

from wschat.history import MemoryHistoryStore, encode_message_template
from wschat.history.memory import entry_bytes
from wschat.protocol import encode_message

BODY = {"text": "x" * 64}


def _best(run: Callable[[], int], rounds: int) -> float:
    """Best of ``rounds`` of ``run()``, in microseconds per unit it reports.

    Short rounds and the best of many: on a shared machine the best round is the
    one nothing else interrupted, which is the cost of the code itself.
    """
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        units = run()
        best = min(best, (time.perf_counter() - t0) / units * 1e6)
    return round(best, 3)


def _templates(count: int, rooms: int) -> list[tuple[str, Any]]:
    return [
        (
            room := f"room{i % rooms}",
            encode_message_template(
                id=f"m1-{i}", chat_id=room, user="u1", body=BODY, ts=0, client_id=None
            ),
        )
        for i in range(count)
    ]


def encode(messages: int = 2_000, rounds: int = 60) -> dict[str, Any]:
    """Microseconds per message: today's frame against the template and render."""

    def plain() -> int:
        for i in range(messages):
            encode_message(
                id="m1-1", chat_id="lobby", user="u1", body=BODY, ts=i, client_id=None
            )
        return messages

    def templated() -> int:
        for i in range(messages):
            encode_message_template(
                id="m1-1", chat_id="lobby", user="u1", body=BODY, ts=i, client_id=None
            ).render(i)
        return messages

    return {
        "us_encode_message": _best(plain, rounds),
        "us_template_and_render": _best(templated, rounds),
    }


def append(
    messages: int = 5_000, rounds: int = 60, max_messages: int = 100
) -> dict[str, Any]:
    """Microseconds per append at steady state (each append also trims one)."""
    out: dict[str, Any] = {"messages": messages, "max_messages": max_messages}
    for rooms in (1, 1000):
        items = _templates(messages, rooms)
        store = MemoryHistoryStore(max_messages=max_messages)
        for chat_id, template in items:  # fill every room: steady state
            store.append_nowait(chat_id, template)

        def run(store: MemoryHistoryStore = store, items: Any = items) -> int:
            for chat_id, template in items:
                store.append_nowait(chat_id, template)
            return len(items)

        out[f"us_append_nowait_{rooms}_rooms"] = _best(run, rounds)

    items = _templates(messages, 1)
    store = MemoryHistoryStore(max_messages=max_messages)

    async def awaited() -> None:
        for chat_id, template in items:
            await store.append(chat_id, template)

    def run_awaited() -> int:
        anyio.run(awaited)
        return len(items)

    out["us_await_append_1_room"] = _best(run_awaited, rounds)

    # A bound of 50 messages in all: every append evicts the oldest message.
    size = entry_bytes(items[0][1].render(10**5))
    evicting = MemoryHistoryStore(max_messages=max_messages, max_memory_bytes=50 * size)
    spread = _templates(messages, 1000)

    def run_evicting() -> int:
        for chat_id, template in spread:
            evicting.append_nowait(chat_id, template)
        return len(spread)

    out["us_append_evicting"] = _best(run_evicting, rounds)
    out["evicted"] = evicting.health().evicted
    return out


def read(calls: int = 200, rounds: int = 60) -> dict[str, Any]:
    """``read_after`` of 50 missed of 100 kept, per message; ``read_before`` pages."""
    store = MemoryHistoryStore()
    for chat_id, template in _templates(100, 1):
        store.append_nowait(chat_id, template)
    assert store.read_after_nowait("room0", 50, 100).complete_after(50)

    def after() -> int:
        for _ in range(calls):
            store.read_after_nowait("room0", 50, 100)
        return calls * 50

    def before() -> int:
        for _ in range(calls):
            store.read_before_nowait("room0", None, 50)
        return calls

    return {
        "us_read_after_per_message": _best(after, rounds),
        "us_read_before_page_of_50": _best(before, rounds),
    }


def run(quick: bool = False) -> dict[str, Any]:
    """All of the above; ``quick`` uses fewer messages and rounds."""
    rounds = 3 if quick else 60
    return {
        "encode": encode(rounds=rounds),
        "append": append(rounds=rounds),
        "read": read(rounds=rounds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    print(json.dumps(run(parser.parse_args().quick)))


if __name__ == "__main__":
    main()
