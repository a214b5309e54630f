"""Shared fixtures: both anyio backends, a verifier, and Redis discovery."""

from __future__ import annotations

import pytest

from tests.support.common import SECRET
from wschat import TokenVerifier
from wschat.logfilter import remove_filter

# The adapters put wschat's redacting filter on the server's loggers when built; the
# tests that read those loggers in this process check what wschat itself keeps out of
# them (the scope), so they run without it. Servers in a subprocess get it as users
# do (tests/test_e2e_debug_logs.py).
remove_filter()


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every ``@pytest.mark.anyio`` test on asyncio and on trio."""
    return str(request.param)


@pytest.fixture
def verifier() -> TokenVerifier:
    return TokenVerifier(SECRET, algorithms=["HS256"])
