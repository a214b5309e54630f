"""Run one benchmark server: ``python -m benchmarks.servers KIND --port PORT``."""

from __future__ import annotations

import argparse
import importlib
import logging
import resource

import uvicorn

MODULES = {"raw": "raw", "naive": "naive", "wschat": "wschat_app"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=sorted(MODULES))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--deflate", action="store_true")
    parser.add_argument("--option", action="append", default=[])
    args = parser.parse_args()
    # wschat logs through the "wschat" logger; show its level so ERROR is greppable.
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    module = importlib.import_module(f"benchmarks.servers.{MODULES[args.kind]}")
    options = dict(o.split("=", 1) for o in args.option)
    if options.pop("gc", "on") == "off":  # diagnosis only: how much is the cyclic GC?
        import gc

        gc.disable()
    uvicorn.run(
        module.build_app(**options),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        loop="asyncio",
        ws="websockets-sansio",
        ws_per_message_deflate=args.deflate,
        backlog=8192,
    )


if __name__ == "__main__":
    main()
