"""docs/deployment.md, "Big rooms: the collector's full passes": the setting it shows
makes full collections a tenth as often as CPython's default, which it states."""

from __future__ import annotations

import gc
import re
import subprocess
import sys

import pytest

from tests.docs.test_docs import section

HEADING = "## Big rooms: the collector's full passes"


def test_the_default_thresholds_are_the_ones_the_page_states() -> None:
    if sys.version_info >= (3, 14):
        pytest.skip("the incremental collector of 3.14 has no third threshold")
    fresh = subprocess.run(
        [sys.executable, "-c", "import gc; print(gc.get_threshold())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert fresh.stdout.strip() == "(700, 10, 10)"
    assert "`(700, 10, 10)`" in section("deployment.md", HEADING)


def test_the_setting_makes_full_collections_a_tenth_as_often() -> None:
    if sys.version_info >= (3, 14):
        pytest.skip("the incremental collector of 3.14 ignores the third threshold")
    blocks = re.findall(r"```python\n(.*?)```", section("deployment.md", HEADING), re.S)
    assert len(blocks) == 1
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        exec(blocks[0], {})
        young, middle, full = gc.get_threshold()
        assert (young, middle) == (700, 10)
        assert full == 10 * 10
    finally:
        gc.set_threshold(*before)
