"""Running a manager's bridge to a shared backplane for the app's lifetime.

Imports: anyio, the backplane interface and the standard library (core layer).

``ConnectionManager.__aenter__``/``__aexit__`` delegate here. Entering is reference
counted, so ``chat_app`` and the user's own lifespan may both enter the same manager;
the bridge runs from the first entry to the last exit. With the in-memory default
nothing runs at all.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import anyio

from ..errors import ConfigurationError
from .bridge import Bridge

if TYPE_CHECKING:
    from ..manager import ConnectionManager

__all__ = ["BridgeRunner"]

_NOT_RUNNING = (
    "the manager is not running: add lifespan=manager.lifespan "
    "(FastAPI, Starlette) or run it with `async with manager:`"
)


class BridgeRunner:
    """Starts and stops one manager's :class:`Bridge`; reports its health."""

    __slots__ = ("_depth", "_manager", "_stack", "bridge")

    def __init__(self, manager: ConnectionManager) -> None:
        self._manager = manager
        self._depth = 0
        self._stack: contextlib.AsyncExitStack | None = None
        self.bridge: Bridge | None = None

    @property
    def local_only(self) -> bool:
        """True when the backplane has no peers (the in-memory default)."""
        return bool(getattr(self._manager.backplane, "local_only", False))

    async def enter(self) -> None:
        """Start the bridge on the first entry.

        Raises:
            ConfigurationError: The backplane cannot run here (e.g. Redis on trio).
        """
        self._depth += 1
        if self._depth > 1 or self.local_only:
            return
        manager = self._manager
        stack = contextlib.AsyncExitStack()
        try:
            tg = await stack.enter_async_context(anyio.create_task_group())
            bridge = Bridge(
                manager,
                manager.backplane,
                presence_ttl=manager.presence_ttl,
                publish_queue=manager.publish_queue,
            )
            await tg.start(bridge.run)
            stack.callback(tg.cancel_scope.cancel)
            self._set(bridge)
            stack.push_async_callback(self._stop, bridge)
        except BaseException as exc:
            self._depth -= 1
            await stack.aclose()
            cause = _config_error(exc)
            if cause is not None and cause is not exc:
                raise cause from None
            raise
        self._stack = stack

    async def exit(self) -> None:
        """Stop the bridge on the last exit."""
        self._depth -= 1
        if self._depth or self._stack is None:
            return
        stack, self._stack = self._stack, None
        await stack.aclose()

    def _set(self, bridge: Bridge | None) -> None:
        self.bridge = bridge
        self._manager._bridge = bridge

    async def _stop(self, bridge: Bridge) -> None:
        self._set(None)
        await bridge.stop()

    def health(self) -> dict[str, Any]:
        """The backplane's name and health, for ``/status``.

        ``healthy`` is False while messages cannot reach the other processes, or
        when a shared backplane is configured but the manager is not running.
        """
        manager = self._manager
        if self.local_only:
            return {"name": manager.backplane_name, "healthy": True}
        health = manager.backplane.health().as_dict()
        if self.bridge is None:
            health["healthy"] = False
            health["detail"] = _NOT_RUNNING
        else:
            health["undelivered"] = self.bridge.undelivered
        return health


def _config_error(exc: BaseException) -> ConfigurationError | None:
    """Find a ConfigurationError in task groups' exception groups, to raise it plain."""
    if isinstance(exc, ConfigurationError):
        return exc
    for inner in getattr(exc, "exceptions", ()):
        found = _config_error(inner)
        if found is not None:
            return found
    return None
