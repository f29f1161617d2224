"""Log lines that cannot flood: the same kind of message at most once per period."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RateLimitedLog:
    """Logs a message of a given ``key`` at most once every ``every`` seconds.

    Messages held back are counted and the count is added to the next line of that key, so a
    server that stays away for an hour gives one line a minute, not one a second.
    """

    def __init__(
        self, logger: logging.Logger, every: float, clock: Callable[[], float] = time.monotonic
    ):
        self.logger = logger
        self.every = every
        self.clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def log(
        self, level: int, key: str, message: str, *args: object, exc_info: bool = False
    ) -> bool:
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.every:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            message += f" ({held} more like this in the last {self.every:g} s)"
        self.logger.log(level, message, *args, exc_info=exc_info)
        return True

    def forget(self, key: str) -> None:
        """The condition behind ``key`` ended: its next occurrence is logged at once."""
        self._last.pop(key, None)
        self._held.pop(key, None)
