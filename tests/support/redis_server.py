"""Test kit for the Redis tests: find the shared Redis, or run a private one.

The shared Redis is the one at 127.0.0.1:6379 (``.ci/run`` starts it). Without it the
Redis tests skip with a message saying how to start one, except under ``CI``, where
they fail. Fault tests run their own ``redis-server`` on a free port so they can kill
and restart it, or pause it (SIGSTOP) and resume it (SIGCONT) to make it hang.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from tests.support.common import IN_CI, free_port

NO_REDIS = (
    "no Redis at 127.0.0.1:6379; start one with: "
    "redis-server --daemonize yes --port 6379 --save '' --appendonly no"
)
NO_SERVER = "no redis-server on PATH; install Redis (apt-get install redis-server)"


def redis_answers(port: int, timeout: float = 0.5) -> bool:
    """Whether a Redis on 127.0.0.1:``port`` answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def unavailable(message: str) -> None:
    """Skip, or fail under CI where Redis is part of the contract."""
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def need_redis() -> str:
    """The shared Redis's URL; skip (fail in CI) when none answers."""
    if not redis_answers(6379):
        unavailable(NO_REDIS)
    return "redis://127.0.0.1:6379/0"


def unique_prefix() -> str:
    """A channel and key prefix of one's own, so tests never see each other."""
    return f"wst{os.urandom(4).hex()}:"


class RedisServer:
    """A private ``redis-server`` on a free port, to kill and restart."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable(NO_SERVER)
        self.binary = str(binary)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not redis_answers(self.port, timeout=0.2):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"redis-server did not start on {self.port}")
            time.sleep(0.02)

    def pause(self) -> None:
        """SIGSTOP: the server hangs (its sockets stay open); returns once it does."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while redis_answers(self.port, timeout=0.05):
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server still answers after SIGSTOP")

    def resume(self) -> None:
        """SIGCONT: the server runs again and serves what waited on its sockets."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None
