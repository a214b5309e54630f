"""Test kit for what the ASGI server holds: uvicorn in a subprocess with given flags,
its memory, and the kernel's view of a TCP connection.

A server's own limits (message size, handshake timeouts, concurrency) are set by its
command line, so these tests start it the way a deployment does: ``python -m uvicorn
tests.support.apps:asgi_app --ws-max-size ...`` in a subprocess, whose RSS is read from
``/proc/<pid>/status``. Linux only, as the deployment docs are.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import resource
import shlex
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

from tests.support.common import free_port
from tests.support.frame_schema import check_received

ROOT = Path(__file__).resolve().parents[2]
#: uvicorn's three WebSocket implementations.
WS_IMPLS = ("websockets-sansio", "wsproto", "websockets")
#: The page whose checklist the tests read.
PAGE = ROOT / "docs" / "deployment.md"
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


class ServerProcess:
    """An ASGI server's command line in a subprocess, its output collected.

    :class:`Uvicorn` and :class:`Hypercorn` fill in the command.
    """

    def __init__(self, command: list[str], port: int) -> None:
        self.port = port
        self.command = command
        #: The server's limit on open file descriptors, if set before it starts.
        self.nofile: int | None = None
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None

    def _limits(self) -> None:  # runs in the child, before exec
        if self.nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

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

    def __enter__(self) -> ServerProcess:
        self.proc = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=self._limits,
        )
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.output()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url("/ws/status"), timeout=1).status_code == 200:
                    return self
            if time.monotonic() > deadline:
                raise AssertionError(f"server did not start:\n{self.output()}")
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


class Uvicorn(ServerProcess):
    """``python -m uvicorn APP --host 127.0.0.1 --port P FLAGS...``."""

    def __init__(
        self, app: str = "tests.support.apps:asgi_app", flags: Sequence[str] = ()
    ) -> None:
        port = free_port()
        super().__init__(
            [
                sys.executable,
                *("-m", "uvicorn", app),
                *("--host", "127.0.0.1", "--port", str(port)),
                *flags,
            ],
            port,
        )


class Hypercorn(ServerProcess):
    """``python -m hypercorn APP --bind 127.0.0.1:P FLAGS...`` (asyncio workers)."""

    def __init__(
        self, app: str = "tests.support.apps:asgi_app", flags: Sequence[str] = ()
    ) -> None:
        port = free_port()
        super().__init__(
            [
                sys.executable,
                *("-m", "hypercorn", app),
                *("--bind", f"127.0.0.1:{port}"),
                *flags,
            ],
            port,
        )


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


class RawClient:
    """A socket that completed (or tried) a WebSocket handshake, read by hand.

    The text frames it reads on a chat path are checked against the wire's schema
    (uncompressed ones: a compressed frame's payload is deflated).
    """

    def __init__(
        self, sock: socket.socket, head: str, rest: bytes, path: str = ""
    ) -> None:
        self.sock = sock
        self.head = head
        self.buffer = rest
        self.path = path

    @property
    def status(self) -> int:
        """The HTTP status of the handshake's answer."""
        return int(self.head.split(" ", 2)[1])

    def _read(self, count: int, deadline: float) -> bytes:
        while len(self.buffer) < count:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise EOFError("the connection ended without a close frame")
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def close_frame(self, timeout: float) -> tuple[int, str]:
        """Read frames until the server's close frame: ``(code, reason)``.

        Raises:
            EOFError: The connection ended without one.
            TimeoutError: None came within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            first, second = self._read(2, deadline)
            size = second & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", self._read(2, deadline))
            elif size == 127:
                (size,) = struct.unpack("!Q", self._read(8, deadline))
            payload = self._read(size, deadline)
            if first & 0x0F == 0x1 and not first & 0x40:
                check_received(payload.decode("utf-8"), path=self.path)
            if first & 0x0F == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if payload else 1005
                return code, payload[2:].decode("utf-8", "replace")

    def ended(self, timeout: float) -> bool:
        """Read until the server ends the connection; whether it did in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, min(0.2, deadline - time.monotonic())))
            try:
                if not self.sock.recv(1 << 16):
                    return True
            except TimeoutError:
                continue
            except OSError:
                return True
        return False


@contextlib.contextmanager
def raw_upgrade(
    port: int, path: str, *, extensions: str | None = None, extra: str = ""
) -> Iterator[RawClient]:
    """Open a socket and send a handshake; yield it once the answer's head is in."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(upgrade_request(port, path, extensions=extensions, extra=extra))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        yield RawClient(sock, head.decode("latin-1"), rest, path)
    finally:
        sock.close()


#: An unfinished message's size: under uvicorn's and hypercorn's 16 MiB default.
BIG_MESSAGE = 15 * 1024 * 1024


def deflate_bomb(size: int = BIG_MESSAGE) -> bytes:
    """Compressed data (raw deflate, 4 KiB window) that inflates to ``size`` bytes."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -12)
    return compressor.compress(b"a" * size) + compressor.flush(zlib.Z_SYNC_FLUSH)


def unfinished_message(*, compressed: bool, size: int = BIG_MESSAGE) -> bytes:
    """The first frame of a text message that never ends (FIN clear).

    Compressed (RSV1 set): about 15 KB on the wire that inflate to ``size`` bytes;
    the server must have negotiated permessage-deflate. Plain: ``size`` bytes.
    """
    if compressed:
        return client_frame(0x40 | 0x01, deflate_bomb(size))
    return client_frame(0x01, b"a" * size)


#: What a client offers to negotiate compression (the server's window is 12 bits).
DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"


def checklist_command() -> list[str]:
    """The uvicorn command line of the page's production checklist."""
    text = PAGE.read_text()
    match = re.search(r"```bash\n(uvicorn [^`]*?)\n```", text)
    assert match, "docs/deployment.md has no ```bash uvicorn ...``` block"
    return shlex.split(match.group(1).replace("\\\n", " "))


def checklist_flags() -> list[str]:
    """The checklist's flags, without the app and without --host/--port."""
    words = checklist_command()[2:]  # drop "uvicorn myapp:app"
    flags: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in ("--host", "--port"):
            skip = True
        else:
            flags.append(word)
    return flags
