"""The prober: one background task that probes every address of every checked host.

It never runs on the query path. Each (farm, host, address) is a target with its next due time
in a heap; the task sleeps until the earliest one, starts every due probe (at most
``concurrency`` at a time; a target never has two probes in flight), and the results go to the
host's trackers (``lbdns.balance.check``). A tracker that turns up or down marks the farm
changed, so the next query builds its view with the new state, and tells the store (the Redis
store publishes this server's verdicts to the others).

Scheduling: the first probe of a target comes at a random point of its first interval (so a
restart does not probe every host at once); the next ones ``interval`` after the start of the
previous one, give or take 10 % (so targets that started together drift apart). A probe that
hangs ends at its ``timeout``, which the zone file keeps at most the interval. Targets follow
the registry: a reload or a host added, changed or removed changes ``Registry.version``, and the
targets are rebuilt from the farms before the next probe starts; a probe in flight for a host
that went away is not counted.

The load is bounded by the zone files: each server sends sum(addresses / interval) probes per
second, and N servers N times that. A server with several DNS workers probes from its main
process only, which relays the verdicts to the workers (``lbdns.workers.checks``).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any

from lbdns.balance.check import HostProbe, Tracker
from lbdns.dnsserver.latency import LatencyHistogram
from lbdns.probe.attempt import Attempt, Poller, client_context, probe
from lbdns.registry import Registry
from lbdns.zone.model import CheckSpec

if TYPE_CHECKING:
    from lbdns.store.base import Store

log = logging.getLogger("lbdns.probe")

# Probe latencies, in seconds: a loopback connect takes tens of microseconds, a TLS handshake
# milliseconds, a hung listener the whole timeout.
PROBE_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
JITTER = 0.1  # each interval is stretched or shortened by up to this fraction
# Targets due within this many seconds start in the same wake-up: fewer wake-ups of the loop
# (each one a system call) at the price of probes up to 20 ms early.
BATCH_WINDOW = 0.02
IDLE_WAKE = 0.25  # with nothing due, look at the registry again after this long

Key = tuple[str, str, str]  # farm, host, address


@dataclass(slots=True)
class Target:
    check: CheckSpec
    due: float  # monotonic time of the next probe
    running: bool = False
    overdue: bool = False  # came due while its probe was still out


class ProbeStats:
    """Plain counters the metrics endpoint reads: results per farm and host, latencies per
    check type, up/down transitions per farm and host."""

    def __init__(self) -> None:
        self.results: dict[tuple[str, str, str], int] = {}  # (farm, host, ok|fail) -> count
        self.latency: dict[str, LatencyHistogram] = {}  # check type -> histogram
        self.transitions: dict[tuple[str, str, str], int] = {}  # (farm, host, up|down)
        self.late = 0  # probes started over a second after they were due (concurrency full)
        self.discarded = 0  # results of probes whose host went away meanwhile

    def count(self, farm: str, host: str, kind: str, ok: bool, latency: float) -> None:
        key = (farm, host, "ok" if ok else "fail")
        self.results[key] = self.results.get(key, 0) + 1
        histogram = self.latency.get(kind)
        if histogram is None:
            histogram = self.latency[kind] = LatencyHistogram(PROBE_BOUNDS)
        histogram.observe(latency)


class Prober:
    """Probes the registry's checked hosts until ``close``."""

    def __init__(
        self,
        registry: Registry,
        store: Store | None = None,
        source: str | None = None,
        concurrency: int = 256,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, str], None] | None = None,
    ):
        self.registry = registry
        self.store = store
        self.on_change = on_change  # also told of each change (the workers' hub relays it)
        self.source = source
        self.concurrency = concurrency
        self.rng = rng or random.Random()
        self._random = self.rng.random
        self.monotonic = monotonic
        self.stats = ProbeStats()
        self.targets: dict[Key, Target] = {}
        self._heap: list[tuple[float, Key]] = []
        self._version = -1
        self._farms_id = 0
        self._tasks: set[asyncio.Task] = set()  # tls and https probes
        self._open = 0  # tcp and http attempts in flight
        # (monotonic deadline, sequence, attempt): one heap for the timeouts of all attempts.
        self._deadlines: list[tuple[float, int, Attempt]] = []
        self._sequence = 0
        self._wake: asyncio.Future | None = None
        self._full = False
        self._context: ssl.SSLContext | None = None
        self._poller: Poller | None = None  # the tcp and http attempts' epoll set, in run()

    @property
    def in_flight(self) -> int:
        return self._open + len(self._tasks)

    # -- targets ----------------------------------------------------------------------------

    def sync(self) -> None:
        """Rebuild the targets from the registry's farms (after any change of hosts)."""
        registry = self.registry
        self._version = registry.version
        self._farms_id = id(registry.farms)
        now = self.monotonic()
        wanted: dict[Key, CheckSpec] = {}
        for farm_name, farm in registry.farms.items():
            for host_name, host in farm.hosts.items():
                check = farm.spec.check_of(host.spec)
                if check is None:
                    host.probe = None
                    continue
                addresses = (*host.spec.a, *host.spec.aaaa)
                probe_state = host.probe
                if probe_state is None:
                    probe_state = host.probe = HostProbe()
                trackers = probe_state.trackers
                for address in [a for a in trackers if a not in addresses]:
                    del trackers[address]  # re-addressed: the old address is not probed
                for address in addresses:
                    trackers.setdefault(address, Tracker())
                    wanted[(farm_name, host_name, address)] = check
        targets: dict[Key, Target] = {}
        heap: list[tuple[float, Key]] = []
        for key, check in wanted.items():
            target = self.targets.get(key)
            if target is None:
                # The first probe anywhere in the first interval: spread, not all at once.
                target = Target(check, now + self.rng.uniform(0.0, check.interval))
            elif target.check != check:
                # A new target: a probe still out under the old check is not counted (_record).
                target = Target(check, min(target.due, now + check.interval))
            targets[key] = target
            heap.append((target.due, key))
        heapq.heapify(heap)
        self.targets = targets
        self._heap = heap

    def _stale(self) -> bool:
        registry = self.registry
        return registry.version != self._version or id(registry.farms) != self._farms_id

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Probe until cancelled."""
        self._poller = Poller(asyncio.get_running_loop())
        try:
            while True:
                if self._stale():
                    self.sync()
                delay = self._start_due()
                await self._sleep(delay)
        finally:
            for task in list(self._tasks):
                task.cancel()
            for _, _, attempt in self._deadlines:
                attempt.cancel()
            self._deadlines.clear()
            self._poller.close()
            self._poller = None

    def _start_due(self) -> float:
        """Start the due probes; returns how long to sleep before the next one is due."""
        now = self.monotonic()
        deadlines = self._deadlines
        while deadlines and (deadlines[0][2].finished or deadlines[0][0] <= now):
            attempt = heapq.heappop(deadlines)[2]
            if not attempt.finished:
                attempt.timed_out()
        heap = self._heap
        while heap and self._open + len(self._tasks) < self.concurrency:
            due, key = heap[0]
            target = self.targets.get(key)
            if target is None or target.due != due:
                heapq.heappop(heap)  # removed or rescheduled: a stale entry
                continue
            if due > now + BATCH_WINDOW:
                return min(due - now, self._next_timeout(now))
            heapq.heappop(heap)
            if target.running:
                # The previous probe is still out (a timeout as long as the interval): the next
                # one starts when it ends.
                target.overdue = True
                continue
            if now - due > 1.0:
                self.stats.late += 1
            self._launch(key, target, now)
        return self._next_timeout(now)

    def _next_timeout(self, now: float) -> float:
        """How long until the next timeout is due, batched like the starts (so a timeout
        is enforced at most BATCH_WINDOW late); IDLE_WAKE at most."""
        deadlines = self._deadlines
        if not deadlines:
            return IDLE_WAKE
        return min(deadlines[0][0] + BATCH_WINDOW - now, IDLE_WAKE)

    def _launch(self, key: Key, target: Target, now: float) -> None:
        check = target.check
        target.running = True
        stretch = 1.0 - JITTER + 2 * JITTER * self._random()
        target.due = now + check.interval * stretch
        heapq.heappush(self._heap, (target.due, key))
        if check.type in ("tcp", "http"):
            assert self._poller is not None
            attempt = Attempt(
                self._poller, check, key[2], self._attempted, (key, target, perf_counter())
            )
            self._open += 1
            self._sequence += 1
            heapq.heappush(self._deadlines, (now + check.timeout, self._sequence, attempt))
            attempt.start(self._source_for(key[2]))
            return
        task = asyncio.get_running_loop().create_task(self._probe(key, target))
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _attempted(self, attempt: Attempt, ok: bool, error: str | None) -> None:
        key, target, started = attempt.context  # type: ignore[misc]
        self._open -= 1
        self._freed()
        self._result(key, target, ok, perf_counter() - started, error)

    def _finished(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._freed()

    def _freed(self) -> None:
        if self._full and self._wake is not None:
            _resolve(self._wake)  # a slot is free: due probes are waiting for it

    async def _sleep(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self._full = self.in_flight >= self.concurrency
        self._wake = wake = loop.create_future()
        handle = loop.call_later(max(delay, 0.0), _resolve, wake)
        try:
            await wake
        finally:
            handle.cancel()
            self._wake = None

    async def _probe(self, key: Key, target: Target) -> None:
        check = target.check
        address = key[2]
        context = None
        if check.type in ("tls", "https"):
            if self._context is None:
                self._context = client_context()
            context = self._context
        started = time.perf_counter()
        try:
            async with asyncio.timeout(check.timeout):
                ok, error = await probe(check, address, self._source_for(address), context)
        except TimeoutError:
            ok, error = False, f"timeout after {check.timeout:g} s"
        except Exception as exc:  # a bug in one probe must not stop the prober
            log.exception("probe of %s failed", address)
            ok, error = False, f"internal error: {exc}"
        self._result(key, target, ok, time.perf_counter() - started, error)

    def _result(
        self, key: Key, target: Target, ok: bool, latency: float, error: str | None
    ) -> None:
        target.running = False
        if target.overdue:
            target.overdue = False
            target.due = self.monotonic()
            heapq.heappush(self._heap, (target.due, key))
            if self._wake is not None:
                _resolve(self._wake)
        self._record(key, target, ok, latency, error)

    def _source_for(self, address: str) -> str | None:
        source = self.source
        if source is None or (":" in source) != (":" in address):
            return None
        return source

    def _record(
        self, key: Key, target: Target, ok: bool, latency: float, error: str | None
    ) -> None:
        farm_name, host_name, address = key
        if self.targets.get(key) is not target:
            self.stats.discarded += 1  # the host went away (or its check changed) meanwhile
            return
        farm = self.registry.farms.get(farm_name)
        host = farm.hosts.get(host_name) if farm is not None else None
        if host is None or host.probe is None:
            self.stats.discarded += 1
            return
        tracker = host.probe.trackers.get(address)
        if tracker is None:
            self.stats.discarded += 1
            return
        check = target.check
        self.stats.count(farm_name, host_name, check.type, ok, latency)
        if not tracker.record(ok, latency, error, self.registry.clock(), check.rise, check.fall):
            return
        # The address turned: the host's verdict here may have too (computed only now, as
        # results that change nothing are by far the most).
        before = host.probe.local
        after = host.probe.local = host.probe.local_verdict()
        farm.changed()
        if after is not None and after != before:
            transition = (farm_name, host_name, after)
            self.stats.transitions[transition] = self.stats.transitions.get(transition, 0) + 1
            how = "" if ok else f": {error}"
            log.log(
                logging.WARNING if after == "down" else logging.INFO,
                "check: host %s of %s is %s here (%s %s:%d%s)",
                host_name,
                farm_name,
                after,
                check.type,
                address,
                check.target_port,
                how,
                extra={
                    "fields": {
                        "event": "check",
                        "farm": farm_name,
                        "host": host_name,
                        "address": address,
                        "result": after,
                        **({"error": error} if error else {}),
                    }
                },
            )
        if self.store is not None:
            self.store.check_changed(farm_name, host_name)
        if self.on_change is not None:
            self.on_change(farm_name, host_name)

    def status(self) -> dict[str, Any]:
        return {
            "targets": len(self.targets),
            "in_flight": self.in_flight,
            "concurrency": self.concurrency,
            "source": self.source,
            "late": self.stats.late,
        }


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
