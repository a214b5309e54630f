"""Test kit for what the ASGI server holds: uvicorn in a subprocess with given flags,
its memory, and the kernel's view of a TCP connection.

A server's own limits (message size, handshake timeouts, concurrency) are set by its
command line, so these tests start it the way a deployment does: ``python -m uvicorn
tests.apps:asgi_app --ws-max-size ...`` in a subprocess, whose RSS is read from
``/proc/<pid>/status``. Linux only, as the deployment docs are.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

from .support import free_port

ROOT = Path(__file__).resolve().parent.parent
#: uvicorn's three WebSocket implementations.
WS_IMPLS = ("websockets-sansio", "wsproto", "websockets")
#: ``tcpi_state`` of a TCP socket that is open, and of one that was reset or closed.
TCP_ESTABLISHED, TCP_CLOSE = 1, 7


def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB, from ``/proc/<pid>/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def tcp_state(sock: socket.socket) -> int:
    """The kernel's state of ``sock`` (``tcpi_state`` of ``TCP_INFO``)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def send_queue(local_port: int, remote_port: int) -> int | None:
    """Bytes the kernel holds unsent or unacknowledged on the loopback socket from
    ``local_port`` to ``remote_port`` (``tx_queue`` of ``/proc/net/tcp``), or None
    if there is no such socket."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local = int(fields[1].rpartition(":")[2], 16)
        remote = int(fields[2].rpartition(":")[2], 16)
        if (local, remote) == (local_port, remote_port):
            return int(fields[4].partition(":")[0], 16)
    return None


def open_sockets(pid: int) -> int:
    """How many sockets process ``pid`` holds open."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            count += os.readlink(fd).startswith("socket:")
    return count


class Uvicorn:
    """``python -m uvicorn APP FLAGS...`` in a subprocess, its output collected."""

    def __init__(
        self, app: str = "tests.apps:asgi_app", flags: Sequence[str] = ()
    ) -> None:
        self.port = free_port()
        self.command = [
            sys.executable,
            *("-m", "uvicorn", app),
            *("--host", "127.0.0.1", "--port", str(self.port)),
            *flags,
        ]
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _pump(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    def __enter__(self) -> Uvicorn:
        self.proc = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"uvicorn exited early:\n{self.output()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url("/ws/status"), timeout=1).status_code == 200:
                    return self
            if time.monotonic() > deadline:
                raise AssertionError(f"uvicorn did not start:\n{self.output()}")
            time.sleep(0.05)

    def stop(self) -> str:
        """Stop with SIGTERM (SIGKILL after 10 s) and return the whole output."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._reader is not None:
            self._reader.join(5)
        return self.output()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def upgrade_request(
    port: int, path: str, *, extensions: str | None = None, extra: str = ""
) -> bytes:
    """The bytes of a WebSocket opening handshake for ``path``."""
    key = base64.b64encode(os.urandom(16)).decode()
    ext = f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else ""
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{ext}{extra}\r\n"
    ).encode()


def client_frame(first_byte: int, payload: bytes) -> bytes:
    """A masked client frame: ``first_byte`` is FIN, RSV1-3 and the opcode."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        head = bytes([first_byte, 0x80 | size])
    elif size < 1 << 16:
        head = bytes([first_byte, 0x80 | 126]) + struct.pack("!H", size)
    else:
        head = bytes([first_byte, 0x80 | 127]) + struct.pack("!Q", size)
    # XOR the payload with the repeated mask in one big-integer operation.
    key = (mask * (size // 4 + 1))[:size]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(
        size, "big"
    )
    return head + mask + masked


@contextlib.contextmanager
def raw_upgrade(
    port: int, path: str, *, extensions: str | None = None
) -> Iterator[tuple[socket.socket, str]]:
    """Open a socket and complete a handshake; yield it and the response head."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(upgrade_request(port, path, extensions=extensions))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            data += chunk
        yield sock, data.partition(b"\r\n\r\n")[0].decode("latin-1")
    finally:
        sock.close()
