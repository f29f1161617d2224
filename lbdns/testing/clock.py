"""The one stand-in clock of the tests: a wall clock that moves only when a test moves it."""

from __future__ import annotations

import time


class Clock:
    """Callable like ``time.time``; ``now`` starts at ``start`` (default: the real time, so
    report receipt times look real) and changes only through ``now`` or ``advance``."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now
