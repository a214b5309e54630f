"""Shared pieces of the benchmark suite: tokens, process stats, server processes.

Every server runs in its own process pinned to core 0 and every load generator on
core 1, so the two never compete for a core.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import jwt

SECRET = "benchmark-secret-not-for-production-0123456789"
ALGORITHM = "HS256"
HOST = "127.0.0.1"
SERVER_CORE = 0
LOADGEN_CORE = 1
ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def make_token(sub: str, lifetime: float = 3600.0) -> str:
    """A valid HS256 token for ``sub``, like an identity provider would issue."""
    now = int(time.time())
    return jwt.encode(
        {"sub": sub, "iat": now, "exp": now + int(lifetime)}, SECRET, ALGORITHM
    )


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds used so far by process ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_split(pid: int) -> tuple[float, float]:
    """``(user, system)`` CPU seconds used so far by process ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` in bytes."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE_SIZE


def free_port() -> int:
    """An unused TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    """Wait until something listens on ``port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no server on port {port}") from None
            time.sleep(0.05)


def pinned(core: int, argv: Sequence[str]) -> list[str]:
    """``argv`` pinned to one core with taskset, at a raised priority when allowed.

    The priority keeps other work on a shared machine from taking the core away in
    the middle of a measurement; it does not change what one process can do.
    """
    prefix: list[str] = []
    if os.path.exists("/usr/bin/taskset") and (os.cpu_count() or 1) > core:
        prefix = ["taskset", "-c", str(core)]
    if os.geteuid() == 0:
        prefix = ["nice", "-n", "-10", *prefix]
    return [*prefix, *argv]


def checkout_env(src: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a benchmark's server process: ``wschat`` from ``src``
    (default: this checkout's ``src``), and ``benchmarks`` from this checkout.

    Never the ``wschat`` the virtualenv happens to hold: an editable install points
    at one checkout, and a server started from another (a git worktree) would
    measure the first one's code.
    """
    path = os.pathsep.join([src or str(ROOT / "src"), str(ROOT)])
    return {**os.environ, **extra, "PYTHONPATH": path}


@contextlib.contextmanager
def server(
    kind: str,
    *,
    deflate: bool = False,
    log_path: Path | None = None,
    options: Sequence[str] = (),
    gc_log: Path | None = None,
    pythonpath: str | None = None,
) -> Iterator[tuple[int, int]]:
    """Run one benchmark server on core 0; yields ``(pid, port)``.

    Args:
        kind: ``raw``, ``naive`` or ``wschat``.
        deflate: Turn on permessage-deflate in uvicorn.
        log_path: Where the server's stdout and stderr go.
        options: Extra ``key=value`` options for the server.
        gc_log: Where the server writes its GC collections when it exits.
        pythonpath: Import ``wschat`` from this directory (another version's
            ``src``) instead of this checkout's.
    """
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.servers", kind, "--port", str(port)]
    if deflate:
        argv.append("--deflate")
    for option in options:
        argv += ["--option", option]
    if gc_log is not None:
        argv += ["--gc-log", str(gc_log)]
    out: IO[bytes] | int = (
        open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    )
    env = checkout_env(pythonpath)
    proc = subprocess.Popen(
        pinned(SERVER_CORE, argv),
        cwd=ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        wait_port(port)
        yield proc.pid, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if not isinstance(out, int):
            out.close()
