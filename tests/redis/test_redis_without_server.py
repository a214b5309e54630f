"""The Redis side that needs no Redis server: trio is refused with a clear error, and
the Redis tests skip with a hint (fail under ``CI``) when no Redis answers."""

from __future__ import annotations

import anyio
import pytest

from tests.support.cluster import WAIT
from wschat import ConnectionManager
from wschat.errors import ConfigurationError

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_redis_backplane_on_trio_fails_at_start_with_a_clear_error() -> None:
    pytest.importorskip("redis")
    from wschat.backplane.redis import RedisBackplane

    manager = ConnectionManager(backplane=RedisBackplane("redis://127.0.0.1:1"))
    with anyio.fail_after(WAIT), pytest.raises(ConfigurationError, match="asyncio"):
        async with manager:
            pass
    assert not manager.clustered


def test_redis_tests_skip_with_a_hint_and_fail_in_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.support import redis_server as support

    monkeypatch.setattr(support, "redis_answers", lambda port, timeout=0.5: False)
    monkeypatch.setattr(support, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="redis-server --daemonize yes"):
        support.need_redis()
    monkeypatch.setattr(support, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match=r"no Redis at 127\.0\.0\.1:6379"):
        support.need_redis()
