"""What every directory of tests shares: each ``anyio`` test on asyncio and trio, and
the server loggers of this process without wschat's redacting filter.

Each directory's own ``conftest.py`` adds what its tests need (``tests/core``: a
verifier; ``tests/e2e``: the adapters and asyncio only; ``tests/redis``: a private
Redis). Helpers that are not fixtures are in ``tests/support``.
"""

from __future__ import annotations

import pytest

from wschat.logfilter import remove_filter

# The adapters put wschat's redacting filter on the server's loggers when built; the
# tests that read those loggers in this process check what wschat itself keeps out of
# them (the scope), so they run without it. Servers in a subprocess get it as users
# do (tests/e2e/test_e2e_debug_logs.py).
remove_filter()


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every ``@pytest.mark.anyio`` test on asyncio and on trio."""
    return str(request.param)
