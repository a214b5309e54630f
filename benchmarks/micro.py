"""Core micro-benchmarks, no sockets: what wschat itself costs per recipient.

``broadcast``: ``broadcast_nowait`` of one encoded frame into 10,000 members' outboxes
(the fan-out a chat message pays before any socket is touched).
``writer``: a connection's writer draining its outbox into a transport whose
``send_text`` does nothing (the per-frame cost wschat adds on top of the server's).
``parse``: ``parse_client_frame`` of typical and large client frames (the per-frame
cost of reading what a client sends, before any hook or broadcast).

Run ``python -m benchmarks.micro``; prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.lowlevel

from wschat import ConnectionManager
from wschat.auth import Principal
from wschat.connection import Connection
from wschat.ids import ChatId, UserId
from wschat.protocol import encode_message, parse_client_frame

ROOM = ChatId("micro")


def _frame() -> str:
    return encode_message(
        id="m1-1", chat_id=ROOM, user="u1", body="x" * 64, ts=0, client_id=None
    )


def broadcast(members: int = 10_000, rounds: int = 30) -> dict[str, Any]:
    """Microseconds per recipient of ``broadcast_nowait`` to one room."""
    manager = ConnectionManager(presence=False, outbox_max_messages=rounds + 1)
    conns = [manager.connect(Principal(UserId(f"u{i}")), ROOM) for i in range(members)]
    frame = _frame()
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        delivered = manager.broadcast_nowait(ROOM, frame)
        samples.append((time.perf_counter() - t0) / delivered * 1e6)
        assert delivered == members
    for conn in conns:
        while conn.queued:
            conn.receive_nowait()
    return {
        "members": members,
        "rounds": rounds,
        "us_per_recipient": round(statistics.median(samples), 3),
        "us_per_recipient_min": round(min(samples), 3),
        "us_per_recipient_max": round(max(samples), 3),
    }


class _NullTransport:
    """A transport that accepts every frame at once, like an idle socket does."""

    def __init__(self) -> None:
        self.frames = 0

    async def accept(self, subprotocol: str | None) -> None:
        return None

    async def receive(self) -> str | bytes | None:
        return None

    async def send_text(self, text: str) -> None:
        self.frames += 1

    async def send_many(self, texts: Sequence[str]) -> None:
        self.frames += len(texts)

    async def close(self, code: int, reason: str) -> None:
        return None

    async def deny(self, status: int, body: str | None) -> None:
        return None


async def _writer(frames: int, rounds: int, batch: bool) -> list[float]:
    manager = ConnectionManager(presence=False, outbox_max_messages=frames + 1)
    conn: Connection = manager.connect(Principal(UserId("u1")), ROOM, batch=batch)
    transport = _NullTransport()
    frame = _frame()
    samples = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(conn.run_writer, transport)
        await anyio.lowlevel.checkpoint()
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(frames):
                conn.put_nowait(frame)
            while conn.queued:
                await anyio.lowlevel.checkpoint()
            samples.append((time.perf_counter() - t0) / frames * 1e6)
        tg.cancel_scope.cancel()
    return samples


def writer(frames: int = 1000, rounds: int = 20, batch: bool = False) -> dict[str, Any]:
    """Microseconds per frame through put_nowait and the writer, no socket."""
    samples = anyio.run(_writer, frames, rounds, batch)
    return {
        "frames": frames,
        "batch": batch,
        "us_per_frame": round(statistics.median(samples), 3),
        "us_per_frame_min": round(min(samples), 3),
        "us_per_frame_max": round(max(samples), 3),
    }


def _parse_frames() -> dict[str, str]:
    """Client frames by kind: what chat clients send, and the large cases."""

    def message(body: Any) -> str:
        return json.dumps({"type": "message", "body": body, "client_id": "c-1"})

    return {
        "chat": message({"text": "hello there, how are you?"}),
        "ping": '{"type":"ping","id":7}',
        "chat_300": message(
            {"text": "x" * 200, "reply_to": "m1-7", "mentions": ["bob", "carol"]}
        ),
        "text_4k": message({"text": "x" * 4096}),
        "floats_500": message({"points": [[i * 0.25, -i / 3] for i in range(250)]}),
        "objects_60k": message([{"id": i, "tags": ["a", "b"]} for i in range(2000)]),
        "brackets_in_text": message({"text": "[{" * 200}),
    }


def parse(rounds: int = 30, repeat: int = 200) -> dict[str, Any]:
    """Microseconds per ``parse_client_frame`` call, per kind of frame."""
    result: dict[str, Any] = {}
    for kind, text in _parse_frames().items():
        parse_client_frame(text)
        calls = max(1, repeat * 1000 // max(len(text), 1000))
        samples = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(calls):
                parse_client_frame(text)
            samples.append((time.perf_counter() - t0) / calls * 1e6)
        result[kind] = {
            "bytes": len(text),
            "us_per_parse": round(statistics.median(samples), 3),
            "us_per_parse_min": round(min(samples), 3),
        }
    return result


def run(quick: bool = False) -> dict[str, Any]:
    """Every micro-benchmark; ``quick`` uses fewer rounds."""
    rounds = 5 if quick else 30
    return {
        "broadcast": broadcast(rounds=rounds),
        "writer": writer(rounds=rounds // 2 + 1),
        "writer_batch": writer(rounds=rounds // 2 + 1, batch=True),
        "parse": parse(rounds=rounds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(json.dumps(run(args.quick)))


if __name__ == "__main__":
    main()
