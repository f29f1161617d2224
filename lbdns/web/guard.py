"""The HTTP listener's own limits, which aiohttp does not set: a deadline for a request's headers,
a cap on open connections, and a log line (at most one every ``LOG_EVERY`` seconds) when either
is hit.

aiohttp reads headers for as long as a client keeps sending them, one octet at a time if it likes
(slowloris), and accepts connections until the process runs out of file descriptors, which then
takes the DNS TCP listener with it. The guard wraps each connection's aiohttp protocol: a
connection whose next request has not reached the application ``header_timeout`` seconds after
it opened (or after its previous response) is closed, and a connection beyond
``max_connections`` is closed as it is accepted. The body deadline is enforced where bodies are
read (``lbdns.web.base.read_json``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web

log = logging.getLogger("lbdns.http")

LOG_EVERY = 10.0


class HttpGuard:
    """Protocol factory for ``loop.create_server`` around aiohttp's ``web.Server``."""

    def __init__(self, server: web.Server, header_timeout: float, max_connections: int):
        self.server = server
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self.open = 0
        self.refused = 0  # connections closed at accept because of the cap
        self.timed_out = 0  # connections closed because their headers were late
        self._waiting: dict[int, _Guarded] = {}  # id(protocol) -> connection awaiting a request
        self._last_log: dict[str, float] = {}

    def __call__(self) -> asyncio.Protocol:
        return _Guarded(self, self.server())

    def request_started(self, handler: Any) -> None:
        """The middleware saw a request on ``handler``'s connection: its headers were in time."""
        guarded = self._waiting.get(id(handler))
        if guarded is not None:
            guarded.request_started()

    def request_finished(self, handler: Any) -> None:
        guarded = self._waiting.get(id(handler))
        if guarded is not None:
            guarded.arm()

    def note(self, what: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last_log.get(what, -LOG_EVERY) >= LOG_EVERY:
            self._last_log[what] = now
            log.warning(message, *args, extra={"fields": {"event": what}})


class _Guarded(asyncio.Protocol):
    """One HTTP connection: aiohttp's protocol, with a header deadline."""

    def __init__(self, guard: HttpGuard, inner: Any):
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self.guard
        self.transport = transport  # type: ignore[assignment]
        if guard.open >= guard.max_connections:
            guard.refused += 1
            guard.note(
                "http_connection_cap",
                "HTTP connection cap reached (%d open, http_max_connections): closing new ones",
                guard.open,
            )
            transport.abort()  # type: ignore[attr-defined]
            return
        guard.open += 1
        self.counted = True
        guard._waiting[id(self.inner)] = self
        self.inner.connection_made(transport)
        self.arm()

    def arm(self) -> None:
        self.disarm()
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.guard.header_timeout, self._late)

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def request_started(self) -> None:
        self.disarm()

    def _late(self) -> None:
        self.timer = None
        guard = self.guard
        guard.timed_out += 1
        guard.note(
            "http_header_timeout",
            "closing HTTP connections whose request headers did not arrive within %g s",
            guard.header_timeout,
        )
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        if not self.counted:
            return
        self.counted = False
        self.guard.open -= 1
        self.guard._waiting.pop(id(self.inner), None)
        self.inner.connection_lost(exc)
