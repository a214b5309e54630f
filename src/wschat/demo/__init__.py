"""The ``wschat demo`` app: a chat page, a demo-only token endpoint, and the endpoint.

Imports: the core, the Starlette adapter, and Starlette (the ``wschat[demo]`` extra).

Run it with ``wschat demo``; build it in a test with :func:`create_app`.
"""

from __future__ import annotations

from .app import LOOPBACK_HOSTS as LOOPBACK_HOSTS
from .app import NAME_PATTERN as NAME_PATTERN
from .app import create_app as create_app

__all__ = ["LOOPBACK_HOSTS", "NAME_PATTERN", "create_app"]
