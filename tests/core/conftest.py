"""In-process tests of the core, no server, no Redis: a verifier for the tests."""

from __future__ import annotations

import pytest

from tests.support.common import SECRET
from wschat import TokenVerifier


@pytest.fixture
def verifier() -> TokenVerifier:
    return TokenVerifier(SECRET, algorithms=["HS256"])
