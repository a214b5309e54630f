"""Run one benchmark server: ``python -m benchmarks.servers KIND --port PORT``."""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib
import json
import logging
import resource
import signal
import sys
import time

import uvicorn

MODULES = {"raw": "raw", "naive": "naive", "wschat": "wschat_app"}


def record_gc(path: str) -> None:
    """Time every collection of the cyclic GC; write them as JSON when the server exits.

    Each entry is ``[start, seconds, generation]``, ``start`` on the
    ``time.perf_counter`` clock (CLOCK_MONOTONIC, shared with the load generator's
    process), so :mod:`benchmarks.run` can count those inside a workload's window.
    """
    collections: list[tuple[float, float, int]] = []
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            started[0] = now
        else:
            collections.append((started[0], now - started[0], info["generation"]))

    def dump() -> None:
        with open(path, "w") as out:
            json.dump(collections, out)

    gc.callbacks.append(on_gc)
    atexit.register(dump)
    # uvicorn re-raises SIGTERM once it has shut down; exit through atexit then.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=sorted(MODULES))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--deflate", action="store_true")
    parser.add_argument("--option", action="append", default=[])
    parser.add_argument("--gc-log", help="write the cyclic GC's collections here")
    args = parser.parse_args()
    if args.gc_log:
        record_gc(args.gc_log)
    # wschat logs through the "wschat" logger; show its level so ERROR is greppable.
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    module = importlib.import_module(f"benchmarks.servers.{MODULES[args.kind]}")
    options = dict(o.split("=", 1) for o in args.option)
    # Diagnosis only. gc=off: how much is the cyclic GC? gc=reset: one full
    # collection once the app is built, so every server starts a workload from the
    # same GC state (where each one's counters stand after its imports decides when
    # its full collections fall).
    gc_mode = options.pop("gc", "on")
    # uvicorn's own log level (warning: its per-connection INFO lines are off, as the
    # docs recommend under load); ``log_level=info`` shows what they cost.
    log_level = options.pop("log_level", "warning")
    app = module.build_app(**options)
    if gc_mode == "off":
        gc.disable()
    elif gc_mode == "reset":
        gc.collect()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level=log_level,
        loop="asyncio",
        ws="websockets-sansio",
        # docs/deployment.md's checklist: the server's own message limit matches
        # wschat's max_message_bytes (every server gets the same setting).
        ws_max_size=65536,
        ws_per_message_deflate=args.deflate,
        backlog=8192,
    )


if __name__ == "__main__":
    main()
