"""Local health checks of the application, with failure and recovery thresholds.

A check is a TCP connect or an HTTP GET with an expected status, each with its own timeout. A
check turns unhealthy after ``fail_after`` consecutive failures and healthy again after
``recover_after`` consecutive successes, so one slow answer does not take a host out of the farm
and one lucky answer does not bring a broken one back. The first result after start counts at
once: an agent started next to a dead application reports it down from the first report.

A check to a port whose connections the agent counts is itself a connection on that port: the
agent's own probes must count neither as load nor as arrivals. ``Probes`` counts the connections
the agent opened to a counted port of this host (TCP checks, and HTTP requests of the agent's
local session: checks, custom metric URLs, advice hooks), so that the ``accepted`` counter is
reported without them; the connection count is taken after the checks have closed theirs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Iterable
from types import SimpleNamespace

import aiohttp

from lbdns.agent.config import Check
from lbdns.balance.check import streaks, thresholded


class CheckState:
    """The thresholded state of one check."""

    def __init__(self, check: Check, fail_after: int, recover_after: int):
        self.check = check
        self.fail_after = fail_after
        self.recover_after = recover_after
        self.healthy: bool | None = None  # None until the first result
        self.failures = 0
        self.successes = 0
        self.last_error: str | None = None
        self.changed_at = time.time()

    def record(self, ok: bool, error: str | None = None) -> bool:
        """Count one result; return True when the thresholded state changed."""
        self.last_error = None if ok else error
        self.successes, self.failures = streaks(ok, self.successes, self.failures)
        before = self.healthy
        self.healthy = thresholded(
            before, ok, self.successes, self.failures, self.recover_after, self.fail_after
        )
        if self.healthy != before:
            self.changed_at = time.time()
            return before is not None
        return False


class Probes:
    """Connections the agent itself opened to a counted port of this host."""

    def __init__(self, ports: Iterable[int], local_names: Iterable[str] = ()):
        self.ports = frozenset(ports)
        self.local_names = frozenset(n.lower() for n in local_names) | {"localhost"}
        self.opened = 0

    def is_local(self, host: str) -> bool:
        host = host.strip("[]").lower()
        if host in self.local_names:
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def tcp(self, sock: socket.socket) -> None:
        """A TCP check connected ``sock``: count it when it landed on a counted local port
        (the peer is loopback, or the kernel chose the peer's own address as the source)."""
        peer, own = sock.getpeername(), sock.getsockname()
        if peer[1] in self.ports and (peer[0] == own[0] or self.is_local(peer[0])):
            self.opened += 1

    def trace(self) -> aiohttp.TraceConfig:
        """A trace for the agent's local HTTP session: each new connection of a request to a
        counted local port is one probe."""
        config = aiohttp.TraceConfig()

        async def on_request_start(session, context: SimpleNamespace, params) -> None:
            url = params.url
            context.probe = url.port in self.ports and self.is_local(url.host or "")

        async def on_connection_create_end(session, context: SimpleNamespace, params) -> None:
            if getattr(context, "probe", False):
                self.opened += 1

        config.on_request_start.append(on_request_start)
        config.on_connection_create_end.append(on_connection_create_end)
        return config


async def run_check(
    check: Check, session: aiohttp.ClientSession, probes: Probes | None = None
) -> tuple[bool, str | None]:
    """One attempt: (ok, reason for a failure)."""
    try:
        if check.kind == "tcp":
            return await asyncio.wait_for(_tcp(check, probes), check.timeout)
        return await _http(check, session)
    except TimeoutError:
        return False, f"no answer within {check.timeout:g} s"
    except (OSError, aiohttp.ClientError) as exc:
        return False, str(exc) or type(exc).__name__


async def _tcp(check: Check, probes: Probes | None) -> tuple[bool, str | None]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(check.host, check.port, type=socket.SOCK_STREAM)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, address)
        if probes is not None:
            probes.tcp(sock)
    finally:
        sock.close()
    return True, None


async def _http(check: Check, session: aiohttp.ClientSession) -> tuple[bool, str | None]:
    timeout = aiohttp.ClientTimeout(total=check.timeout)
    async with session.get(check.target, timeout=timeout, allow_redirects=False) as response:
        await response.read()
        if response.status in check.status:
            return True, None
        expected = ", ".join(str(s) for s in check.status)
        return False, f"status {response.status}, expected {expected}"


class Health:
    """All checks of the host; healthy when every check is."""

    def __init__(
        self,
        checks: tuple[Check, ...],
        fail_after: int,
        recover_after: int,
        probes: Probes | None = None,
    ):
        self.states = [CheckState(c, fail_after, recover_after) for c in checks]
        self.probes = probes

    async def run(self, session: aiohttp.ClientSession) -> list[CheckState]:
        """Run every check concurrently; return the checks whose state changed."""
        results = await asyncio.gather(
            *(run_check(s.check, session, self.probes) for s in self.states)
        )
        changed = []
        for state, (ok, error) in zip(self.states, results, strict=True):
            if state.record(ok, error):
                changed.append(state)
        return changed

    @property
    def healthy(self) -> bool:
        return all(s.healthy is not False for s in self.states)
