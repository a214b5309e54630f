"""What a new user meets first: a missing extra, and the hooks example under uvicorn.

- ``import wschat.fastapi`` (or ``wschat.starlette``) without its extra ends with one
  line that says what to install, as ``wschat.backplane.redis`` does.
- The hooks example, run with a plain ``uvicorn hooks_app:app``, shows its INFO
  lines (joins and leaves): uvicorn configures only its own loggers.
"""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.support.common import SECRET, free_port, source_env
from wschat.testing import mint_token

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
TIMEOUT = 20.0

# A meta path finder that makes the named top-level packages not installed.
BLOCK = """
import sys
BLOCKED = {blocked!r}

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
import {module}
"""


@pytest.mark.parametrize(
    ("module", "blocked", "hint"),
    [
        ("wschat.fastapi", {"fastapi"}, "pip install 'wschat[fastapi]'"),
        ("wschat.fastapi", {"fastapi", "starlette"}, "pip install 'wschat[fastapi]'"),
        ("wschat.starlette", {"starlette"}, "pip install 'wschat[starlette]'"),
    ],
)
def test_a_missing_extra_says_what_to_install(
    module: str, blocked: set[str], hint: str
) -> None:
    run = subprocess.run(
        [sys.executable, "-c", BLOCK.format(blocked=blocked, module=module)],
        capture_output=True,
        text=True,
        env=source_env(),
        timeout=60,
    )
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    framework = "FastAPI" if module == "wschat.fastapi" else "Starlette"
    assert last == f"ImportError: {module} needs {framework}: {hint}"


def test_the_core_and_the_raw_asgi_adapter_need_no_framework() -> None:
    code = BLOCK.format(blocked={"fastapi", "starlette"}, module="wschat.asgi")
    code += "import wschat.testing\nprint('ok')\n"
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=source_env()
    )
    assert run.stdout.strip() == "ok", run.stderr


class Lines:
    """The merged output of a process, line by line, and a bounded wait for one."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self.seen: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self._stream = proc.stdout
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self._stream:
            self._queue.put(line)

    def wait_for(self, pattern: str) -> str:
        deadline = time.monotonic() + TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matched {pattern!r}:\n{''.join(self.seen)}")


@pytest.fixture
def hooks_app_under_uvicorn() -> Iterator[tuple[int, Lines]]:
    """``uvicorn hooks_app:app``, as the example says to run it, in its folder."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "hooks_app:app", "--port", str(port)],
        cwd=EXAMPLES,
        env={**source_env(), "WSCHAT_SECRET": SECRET, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = Lines(proc)
        lines.wait_for(r"Uvicorn running on")
        yield port, lines
    finally:
        proc.terminate()
        proc.wait(TIMEOUT)
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.mark.e2e
def test_the_hooks_example_shows_joins_under_plain_uvicorn(
    hooks_app_under_uvicorn: tuple[int, Lines],
) -> None:
    port, lines = hooks_app_under_uvicorn
    token = mint_token(SECRET, "alice")
    with connect(f"ws://127.0.0.1:{port}/ws/chat/lobby?token={token}") as ws:
        ws.recv(timeout=5)
        assert (
            lines.wait_for("joined").strip()
            == "INFO:     myapp.chat: alice joined lobby"
        )
    assert lines.wait_for("left").strip() == "INFO:     myapp.chat: alice left lobby"
