"""Backplanes: how several processes running wschat share rooms.

Imports: anyio and the standard library. ``wschat.backplane.redis`` (not imported
here) needs ``pip install wschat[redis]``.

Example::

    from wschat.backplane.redis import RedisBackplane

    manager = ConnectionManager(backplane=RedisBackplane("redis://localhost:6379"))
    app = FastAPI(lifespan=manager.lifespan)
"""

from __future__ import annotations

from .base import Backplane as Backplane
from .base import BackplaneHealth as BackplaneHealth
from .base import BackplaneUnavailable as BackplaneUnavailable
from .base import PublishInDoubt as PublishInDoubt
from .base import Receiver as Receiver
from .base import UserSlots as UserSlots
from .memory import MemoryBackplane as MemoryBackplane
from .memory import MemoryHub as MemoryHub

__all__ = [
    "Backplane",
    "BackplaneHealth",
    "BackplaneUnavailable",
    "MemoryBackplane",
    "MemoryHub",
    "PublishInDoubt",
    "Receiver",
    "UserSlots",
]
