"""docs/security.md: every threat says what wschat does, what the deployment must do,
and names tests that exist, so a promise on the page cannot lose its test unnoticed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "security.md"


def defined_tests() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(
                node, (ast.FunctionDef, ast.AsyncFunctionDef)
            ) and node.name.startswith("test_"):
                names.add(node.name)
    return names


def sections() -> dict[str, str]:
    """Each threat: a heading and its bullets (headings that only group are skipped)."""
    parts = re.split(r"^#{2,3} (.+)$", PAGE.read_text(), flags=re.MULTILINE)
    found = {}
    for title, body in zip(parts[1::2], parts[2::2], strict=True):
        if "- **" in body:
            found[title.strip()] = body
    return found


def test_every_threat_says_what_wschat_does_what_you_do_and_which_tests() -> None:
    threats = sections()
    assert len(threats) >= 14, sorted(threats)
    for title, body in threats.items():
        for label in ("- **wschat:**", "- **You:**", "- **Tests:**"):
            assert label in body, f"{title!r} has no {label}"


def test_every_test_the_page_names_exists() -> None:
    named = set(re.findall(r"`(test_\w+)`", PAGE.read_text()))
    assert len(named) >= 40
    missing = sorted(named - defined_tests())
    assert not missing, f"docs/security.md names tests that do not exist: {missing}"


def test_each_threat_names_at_least_one_test() -> None:
    for title, body in sections().items():
        tests = body.split("- **Tests:**", 1)[1]
        assert re.search(r"`test_\w+`", tests), f"{title!r} names no test"
