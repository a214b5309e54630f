"""Core micro-benchmarks, no sockets: what wschat itself costs per recipient.

``broadcast``: ``broadcast_nowait`` of one encoded frame into 10,000 members' outboxes
(the fan-out a chat message pays before any socket is touched).
``writer``: a connection's writer draining its outbox into a transport whose
``send_text`` does nothing (the per-frame cost wschat adds on top of the server's).
``rate``: the per-user rate check alone (per frame, and per connection), and one
frame through the endpoint's read loop (a ``ping`` in, a ``pong`` out through the
writer) with the check on and off.
``refusal``: ``chat_app`` refusing a handshake with a junk token (or a JWT signed with
another key), called as an ASGI app with a scope, its log lines formatted and written
to ``os.devnull``: wschat's own part of what a refusal flood costs the server.
``parse``: ``parse_client_frame`` of typical and large client frames (the per-frame
cost of reading what a client sends, before any hook or broadcast).

Run ``python -m benchmarks.micro [--only refusal]``; prints one JSON object. With
``PYTHONPATH=<another revision's src>`` it measures that revision.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
import timeit
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


class _FramesTransport(_NullTransport):
    """Hands the endpoint ``count`` ping frames, then ends."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.left = count

    async def receive(self) -> str | bytes | None:
        if not self.left:
            return None
        self.left -= 1
        return '{"type":"ping"}'


async def _pump(frames: int, rate_limit: float | None) -> float:
    from wschat import ChatOptions, TokenVerifier
    from wschat.endpoint import ChatEndpoint
    from wschat.testing import mint_token
    from wschat.transport import Handshake

    secret = "micro-benchmark-secret-" + "x" * 32
    manager = ConnectionManager(presence=False, outbox_max_messages=frames + 8)
    options = ChatOptions(rate_limit=rate_limit, rate_burst=10**9)
    endpoint = ChatEndpoint(
        manager, TokenVerifier(secret, algorithms=["HS256"]), options
    )
    query = f"token={mint_token(secret, 'u1')}".encode()
    hs = Handshake(ROOM, query, {"host": "h"}, ["wschat.v1"], "ws", "c")
    transport = _FramesTransport(frames)
    t0 = time.perf_counter()
    await endpoint.serve(hs, transport)
    elapsed = time.perf_counter() - t0
    assert transport.frames >= frames, transport.frames  # every pong (and ready)
    return elapsed / frames * 1e6


def rate(frames: int = 20_000, rounds: int = 7) -> dict[str, Any]:
    """What the per-user rate check costs: per frame, and per connection.

    ``ns_per_take``: one ``RateBucket.take()`` (the whole check a frame pays), best
    of ``rounds``. ``ns_acquire_release``: finding and giving back a user's bucket,
    once per connection. ``us_per_frame_rate_on/off``: a frame through the endpoint's
    read loop, with the check on and off (best of ``rounds``, interleaved).
    """
    from wschat.limits import UserRates

    rates: UserRates[str] = UserRates(1e9, 10**9)
    bucket = rates.acquire("u1")
    number = 200_000
    take = min(timeit.repeat(bucket.take, number=number, repeat=rounds)) / number

    def cycle() -> None:
        rates.release("u2", rates.acquire("u2"))

    per_conn = min(timeit.repeat(cycle, number=number // 10, repeat=rounds))
    on: list[float] = []
    off: list[float] = []
    for _ in range(rounds):  # interleaved, so drift hits both alike
        off.append(anyio.run(_pump, frames, None))
        on.append(anyio.run(_pump, frames, 1e9))
    return {
        "ns_per_take": round(take * 1e9, 1),
        "ns_acquire_release": round(per_conn / (number // 10) * 1e9, 1),
        "frames": frames,
        "us_per_frame_rate_off": round(min(off), 3),
        "us_per_frame_rate_on": round(min(on), 3),
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


_HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"upgrade", b"websocket"),
    (b"connection", b"Upgrade"),
    (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    (b"sec-websocket-version", b"13"),
]


async def _refusals(app: Any, token: str, count: int) -> float:
    async def send(message: Any) -> None:
        pass

    t0 = time.perf_counter()
    for i in range(count):
        scope = {
            "type": "websocket",
            "path": "/ws/chat/calm",
            "raw_path": b"/ws/chat/calm",
            "root_path": "",
            "query_string": f"token={token}".encode(),
            "headers": list(_HEADERS),
            "subprotocols": [],
            "client": ("127.0.0.1", 40000 + i % 20000),
            "scheme": "ws",
            "extensions": {},
        }
        events = [{"type": "websocket.connect"}, {"type": "websocket.disconnect"}]

        async def receive(events: list[dict[str, Any]] = events) -> Any:
            return events.pop(0)

        await app(scope, receive, send)
    return (time.perf_counter() - t0) / count * 1e6


def refusal(count: int = 5000, rounds: int = 5) -> dict[str, Any]:
    """Microseconds per refused handshake inside ``chat_app`` (no server)."""
    from benchmarks.common import ALGORITHM, SECRET, make_token
    from wschat import TokenVerifier
    from wschat.asgi import chat_app

    logger = logging.getLogger("wschat")
    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115
    logger.addHandler(handler)
    logger.propagate = False
    try:
        app = chat_app(
            ConnectionManager(), TokenVerifier(SECRET, algorithms=[ALGORITHM])
        )
        good = make_token("u1")
        tokens = {
            "malformed": "junk-123",
            "bad_signature": good[: good.rindex(".") + 1] + "A" * 43,
        }
        out: dict[str, Any] = {"count": count}
        for name, token in tokens.items():
            samples = [anyio.run(_refusals, app, token, count) for _ in range(rounds)]
            out[f"{name}_us"] = round(min(samples), 2)
        return out
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        handler.stream.close()


def run(quick: bool = False, only: str | None = None) -> dict[str, Any]:
    """The micro-benchmarks (or ``only`` one); ``quick`` uses fewer rounds."""
    rounds = 5 if quick else 30
    out: dict[str, Any] = {}
    if only in (None, "broadcast"):
        out["broadcast"] = broadcast(rounds=rounds)
    if only in (None, "writer"):
        out["writer"] = writer(rounds=rounds // 2 + 1)
        out["writer_batch"] = writer(rounds=rounds // 2 + 1, batch=True)
    if only in (None, "parse"):
        out["parse"] = parse(rounds=rounds)
    if only in (None, "rate"):
        out["rate"] = rate(rounds=3 if quick else 7)
    if only in (None, "refusal"):
        out["refusal"] = refusal(count=500 if quick else 5000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--only", choices=("broadcast", "writer", "parse", "rate", "refusal")
    )
    args = parser.parse_args()
    print(json.dumps(run(args.quick, args.only)))


if __name__ == "__main__":
    main()
