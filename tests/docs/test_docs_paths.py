"""Every path under ``tests/`` that the docs, the README, CONTRIBUTING.md or the
project's config names exists, so a moved or renamed test file cannot leave a page
(or the mutation run) pointing at nothing."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: ``tests/core/test_auth*.py``, ``tests/redis/``, ``tests/e2e/test_e2e_chat.py``.
TEST_PATH = re.compile(r"(?<![\w/.])tests/[\w*./-]*[\w*/]")


def pages() -> list[Path]:
    return [
        *sorted((ROOT / "docs").glob("*.md")),
        ROOT / "README.md",
        ROOT / "CONTRIBUTING.md",
        ROOT / "benchmarks" / "README.md",
        ROOT / "pyproject.toml",
    ]


def named_paths(text: str) -> set[str]:
    return set(TEST_PATH.findall(text))


def exists(path: str) -> bool:
    if "*" in path:
        return any(ROOT.glob(path))
    return (ROOT / path).exists()


def test_every_tests_path_the_docs_name_exists() -> None:
    missing = []
    for page in pages():
        for path in sorted(named_paths(page.read_text())):
            if not exists(path):
                missing.append(f"{page.relative_to(ROOT)}: {path}")
    assert not missing, "\n".join(missing)


def test_the_docs_name_tests_by_their_directory() -> None:
    named = set().union(*(named_paths(page.read_text()) for page in pages()))
    # The architecture page's table and CONTRIBUTING.md at least.
    assert len(named) >= 20, sorted(named)
    assert "tests/core/test_manager.py" in named
    assert "tests/redis/" in named


def test_the_check_sees_a_path_that_is_gone() -> None:
    text = "see `tests/test_core_async.py` and tests/core/test_nothing*.py, tests/e2e/"
    assert named_paths(text) == {
        "tests/test_core_async.py",
        "tests/core/test_nothing*.py",
        "tests/e2e/",
    }
    assert [p for p in sorted(named_paths(text)) if not exists(p)] == [
        "tests/core/test_nothing*.py",
        "tests/test_core_async.py",
    ]
