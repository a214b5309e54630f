"""Shared fixtures: both anyio backends, a verifier, and Redis discovery."""

from __future__ import annotations

import os

import pytest

from wschat import TokenVerifier

from .support import SECRET


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every ``@pytest.mark.anyio`` test on asyncio and on trio."""
    return str(request.param)


@pytest.fixture
def verifier() -> TokenVerifier:
    return TokenVerifier(SECRET, algorithms=["HS256"])


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
