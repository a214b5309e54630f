"""docs/troubleshooting.md's ``wschat doctor`` and ``wschat connect`` examples run,
and print what the page shows; each line of its doctor table is something doctor
prints for that cause.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

from tests.e2e.test_cli_doctor import run
from tests.support.common import SECRET, free_port, serve
from tests.support.e2e import chat_server
from tests.support.server_process import ServerProcess
from wschat.testing import mint_token

pytestmark = pytest.mark.e2e

PAGE = Path(__file__).resolve().parents[2] / "docs" / "troubleshooting.md"


def console_blocks() -> list[tuple[str, str]]:
    """(command, output) of each ``console`` block of the page."""
    blocks = re.findall(r"```console\n\$ (.*?)\n(.*?)```", PAGE.read_text(), re.S)
    assert len(blocks) == 2
    return blocks


@pytest.mark.parametrize("index", [0, 1])
def test_the_console_examples_print_what_the_page_shows(index: int) -> None:
    command, shown = console_blocks()[index]
    stdin = ""
    if command.startswith("printf "):
        printf, _, command = command.partition(" | ")
        stdin = shlex.split(printf)[1].replace("\\n", "\n")
    with chat_server("asgi") as chat:
        words = shlex.split(
            command.replace("8000", str(chat.port)).replace(
                '"$TOKEN"', mint_token(SECRET, "alice")
            )
        )
        assert words[0] == "wschat"
        result = run(*words[1:], stdin=stdin)
    assert result.stdout.replace(str(chat.port), "8000") == shown
    assert result.returncode == (1 if "FAIL" in shown else 0)


def table_cells() -> list[str]:
    section = PAGE.read_text().split("| doctor prints |", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^\| `([^`]+)` \|", section, re.M)


def test_every_line_of_the_doctor_table_is_printed_for_its_cause() -> None:
    printed = []
    port = free_port()
    printed.append(run("doctor", f"ws://127.0.0.1:{port}/ws/chat/a").stdout)
    command = [
        sys.executable,
        "-m",
        "tests.support.no_ws_libs",
        "tests.support.apps:asgi_app",
    ]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with ServerProcess(command, port):
        printed.append(run("doctor", f"ws://127.0.0.1:{port}/ws/chat/a").stdout)

    async def plain(scope: dict[str, object], receive: object, send: object) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200})  # type: ignore[operator]
            await send({"type": "http.response.body", "body": b"hi"})  # type: ignore[operator]

    with serve(plain) as server:
        printed.append(run("doctor", f"{server.ws}/ws/chat/a").stdout)
    with chat_server("asgi") as chat:
        url = chat.url("a")
        for args in (
            ["--origin", "https://evil.example"],
            ["--token", "test"],
            ["--token", mint_token(SECRET, "alice", ttl=-60)],
            ["--token", mint_token("z" * 40, "alice")],
            [],
        ):
            printed.append(run("doctor", url, *args).stdout)
    everything = "\n".join(printed)
    cells = table_cells()
    assert len(cells) == 8
    for cell in cells:
        assert cell in everything, cell
