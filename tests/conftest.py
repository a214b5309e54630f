"""What every directory of tests shares: each ``anyio`` test on asyncio and trio, and
the server loggers of this process without wschat's redacting filter.

Each directory's own ``conftest.py`` adds what its tests need (``tests/core``: a
verifier; ``tests/e2e``: the adapters and asyncio only; ``tests/redis``: a private
Redis). Every frame a ``websockets`` client receives from a chat socket is checked
against the wire's JSON Schema (``tests/support/frame_schema.py``). Helpers that are
not fixtures are in ``tests/support``.
"""

from __future__ import annotations

import pytest

from tests.support.frame_schema import pytest_report_header as pytest_report_header
from tests.support.frame_schema import require_in_ci
from tests.support.frame_schema import (
    validate_server_frames as validate_server_frames,
)
from wschat.logfilter import remove_filter


def pytest_configure(config: pytest.Config) -> None:
    require_in_ci()


# The adapters put wschat's redacting filter on the server's loggers when built; the
# tests that read those loggers in this process check what wschat itself keeps out of
# them (the scope), so they run without it. Servers in a subprocess get it as users
# do (tests/e2e/test_e2e_debug_logs.py).
remove_filter()


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every ``@pytest.mark.anyio`` test on asyncio and on trio."""
    return str(request.param)
