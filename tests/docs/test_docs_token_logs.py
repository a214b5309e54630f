"""docs/auth.md's promise about tokens in logs names the commands the e2e test runs."""

from __future__ import annotations

import re
from pathlib import Path

from tests.e2e.test_e2e_token_logs import ACCESS_FORMAT, SOURCES

ROOT = Path(__file__).resolve().parents[2]


def section(title: str) -> str:
    text = (ROOT / "docs" / "auth.md").read_text()
    start = text.index(title)
    end = text.index("\n### ", start + len(title))
    return text[start:end]


def test_the_documented_commands_are_the_tested_ones() -> None:
    text = section("### Choosing a token source")
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 1
    assert blocks[0].splitlines() == [
        "uvicorn app:app --log-level debug",
        "uvicorn app:app --log-level trace",
        "hypercorn app:app --log-level debug --access-logfile - "
        f"--access-logformat '{ACCESS_FORMAT}'",
    ]
    for ws in ("websockets-sansio", "wsproto", "websockets"):
        assert f"`{ws}`" in text
    assert "all five sources" in text
    assert len(SOURCES) == 5
    assert "tests/e2e/test_e2e_token_logs.py" in text
