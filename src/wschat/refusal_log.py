"""Throttled logging of refused handshakes: one line per reason per interval.

Imports: the standard library only (core layer).

A flood of junk handshakes must not become a flood of log lines (each one is a
formatted record and a write, paid by the event loop that serves everybody else).
:class:`RefusalLog` lets the endpoint log the first refusal of each kind (close code
and reason code) in full, counts the others for :data:`INTERVAL` seconds, and then
logs one line with the count::

    wschat refused connection: chat='lobby' code=4401 reason='token_malformed: ...' ...
    wschat refused 2998 more connections with code=4401 reason=token_malformed in the
    10 s after the line logged for it (one line per reason every 10 s)

The count is logged at the first refusal or admission after its window ended. With
the ``wschat`` logger at DEBUG, each refusal that is not logged in full at WARNING is
logged at DEBUG instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["INTERVAL", "RefusalLog"]

#: Seconds during which refusals of one kind after the first are only counted.
INTERVAL = 10.0


class _Window:
    __slots__ = ("code", "end", "reason", "suppressed")

    def __init__(self, code: int, reason: str, end: float) -> None:
        self.code = code
        self.reason = reason
        self.end = end
        self.suppressed = 0


class RefusalLog:
    """Decides which refusals are logged in full, and logs the counts of the others.

    Args:
        logger: Where the count lines go (at WARNING).
        interval: Seconds during which more refusals of a kind are only counted.
        clock: A monotonic clock in seconds (a fake one in tests).
    """

    __slots__ = ("_clock", "_next_end", "_windows", "interval", "logger")

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._windows: dict[tuple[int, str], _Window] = {}
        self._next_end = float("inf")

    def admit(self, code: int, reason: str) -> bool:
        """Count one refusal; whether the caller should log it in full now.

        Args:
            code: The close code (or HTTP status) the client got.
            reason: The stable reason code (``token_malformed``).

        Returns:
            True for the first refusal of its kind in a window: log it at WARNING.
            False: it was counted, and will be reported in the window's count line.
        """
        now = self._clock()
        if now >= self._next_end:
            self._flush(now)
        window = self._windows.get((code, reason))
        if window is not None:
            window.suppressed += 1
            return False
        end = now + self.interval
        self._windows[(code, reason)] = _Window(code, reason, end)
        if end < self._next_end:
            self._next_end = end
        return True

    def tick(self) -> None:
        """Log the counts of windows that have ended (cheap when none has)."""
        if self._windows:
            now = self._clock()
            if now >= self._next_end:
                self._flush(now)

    def pending(self) -> dict[tuple[int, str], int]:
        """Refusals counted but not yet reported, by ``(code, reason)``."""
        return {key: w.suppressed for key, w in self._windows.items()}

    def _flush(self, now: float) -> None:
        ended = [key for key, w in self._windows.items() if w.end <= now]
        for key in ended:
            window = self._windows.pop(key)
            if window.suppressed:
                self.logger.warning(
                    "wschat refused %d more connections with code=%s reason=%s in "
                    "the %g s after the line logged for it (one line per reason "
                    "every %g s)",
                    window.suppressed,
                    window.code,
                    window.reason,
                    self.interval,
                    self.interval,
                )
        self._next_end = min(
            (w.end for w in self._windows.values()), default=float("inf")
        )
