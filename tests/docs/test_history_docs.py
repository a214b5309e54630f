"""docs/history.md is tested: its snippets run, and its numbers are the code's.

The PostgreSQL example it shows is checked verbatim by ``tests/docs/test_docs.py`` and
run by ``tests/docs/test_history_postgres.py``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.common import source_env
from wschat.history.memory import (
    DEFAULT_MAX_MEMORY_BYTES,
    DEFAULT_MAX_MESSAGES,
    DEFAULT_TTL,
    ENTRY_OVERHEAD_BYTES,
)

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "history.md"
SNIPPET = re.compile(r"```python\n(?!# docs/examples/)(.*?)```", re.DOTALL)


def text() -> str:
    return PAGE.read_text()


def flat() -> str:
    return " ".join(text().split())


def snippets() -> list[str]:
    return SNIPPET.findall(text())


def test_the_page_has_three_snippets() -> None:
    # The third (Redis) runs in tests/docs/test_history_redis_docs.py.
    assert len(snippets()) == 3


@pytest.mark.parametrize("index", [0, 1])
def test_each_snippet_runs(index: int) -> None:
    run = subprocess.run(
        [sys.executable, "-c", snippets()[index]],
        capture_output=True,
        text=True,
        timeout=60,
        env=source_env(),
    )
    assert run.returncode == 0, run.stderr
    if index == 0:
        assert "'entries': 3" in run.stdout
        assert "'max_memory_bytes': 67108864" in run.stdout
    else:
        assert run.stdout.startswith("passed: basics, empty_room,")
        assert run.stdout.rstrip().endswith("concurrency, trimming")


def test_the_defaults_table_is_the_codes() -> None:
    rows = dict(re.findall(r"^\| `(\w+)` \| (\d+) \|", text(), re.MULTILINE))
    assert rows == {
        "max_messages": str(DEFAULT_MAX_MESSAGES),
        "ttl": str(int(DEFAULT_TTL)),
        "max_memory_bytes": str(DEFAULT_MAX_MEMORY_BYTES),
    }
    assert DEFAULT_MAX_MEMORY_BYTES == 64 * 2**20  # "(64 MiB)"
    assert "(64 MiB)" in flat()
    assert f"plus {ENTRY_OVERHEAD_BYTES} bytes of bookkeeping" in flat()
    # The summary in "Choosing a store" says the same.
    minutes = int(DEFAULT_TTL // 60)
    assert (
        f"the last {DEFAULT_MAX_MESSAGES} messages per room, {minutes} minutes, "
        "64 MiB in all" in flat()
    )


def test_the_not_wired_yet_note_is_gone() -> None:
    # The endpoint uses the store now (tests/core/test_history_wiring.py).
    assert "not-wired-yet" not in text()
    assert "Not wired yet" not in text()
