"""docs/testing.md: its example tests pass as shown, beside the apps they import.

They run the way a user runs them: ``pytest`` in a subprocess, from the folder that
holds the example apps. That the page shows each file unchanged is checked by
``tests/docs/test_docs.py``.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.docs.test_docs import DOCS, TEST_EXAMPLES
from tests.support.common import source_env

ROOT = DOCS.parent
COUNTS = {
    "test_fastapi_testclient": 3,
    "test_starlette_testclient": 2,
    "test_chat_kit": 5,
    "test_token_expiry": 2,
}


@pytest.mark.parametrize("name", TEST_EXAMPLES)
def test_the_example_tests_pass(name: str) -> None:
    env = {k: v for k, v in source_env().items() if k != "WSCHAT_SECRET"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"{name}.py"],
        cwd=DOCS / "examples",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    passed = re.search(r"(\d+) passed", run.stdout)
    assert passed is not None, run.stdout
    assert int(passed.group(1)) == COUNTS[name]
    assert "failed" not in run.stdout


def test_every_example_test_is_counted() -> None:
    assert set(COUNTS) == set(TEST_EXAMPLES)
    on_disk = {p.stem for p in (DOCS / "examples").glob("test_*.py")}
    assert on_disk == set(TEST_EXAMPLES)
