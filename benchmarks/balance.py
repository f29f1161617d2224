"""Balance quality: how evenly lbdns spreads long-lived connections, against a real lbdns.

    .venv/bin/python benchmarks/balance.py              # both cases, all policies (~2-3 min)
    .venv/bin/python benchmarks/balance.py --quick      # small case, short phases (< 30 s)
    .venv/bin/python benchmarks/balance.py --hard       # TTL 30, reports 5 s, Zipf 1.3, first
    .venv/bin/python benchmarks/balance.py --direct     # a dig loop at lbdns, and unbound

Regime flags: ``--ttl``, ``--report`` (seconds between agent reports), ``--zipf`` (exponent of
the resolvers' popularity), ``--pick random|first`` (the record a client uses), ``--hard`` (all
four at the hard end), ``--steady`` (seconds measured). Each run prints the TTLs answered and
the queries per client (what shorter TTLs cost).

One ``lbdns serve`` subprocess serves one farm per policy (least-load, lowest-score,
weighted-round-robin, round-robin), each its own simulated world driven by the same kind of
traffic; the ideal least-connections proxy is simulated beside them in the same run.

* **Resolvers**: ``--resolvers`` of them with Zipf popularity (the biggest carries about 20 % of
  the clients), each asking over UDP from its own loopback address 127.0.x.y and caching each
  answer for the TTL.
* **Clients**: a Poisson stream; each asks its resolver, takes one of the records at random and
  holds a connection for an exponential time (mean 60 s) to that host.
* **Agents**: every R seconds one ``POST /v1/reports`` with each host's real connection count
  and its counter of accepted connections.
* **Events**: a host added (``PUT /v1/farms/{farm}/hosts/{host}``), a host failing (its
  connections vanish and its agent stops), a host drained (``POST .../drain``).

``--time-scale`` multiplies every time (holding time, TTL, report interval, phases) and divides
the arrival rate, so the same experiment runs faster: 0.1 turns 60 s connections into 6 s.
Reported figures are in unscaled seconds. Peak/mean is max over active hosts of
load/capacity divided by total load / total capacity, sampled over the steady phase.

Arrivals are sent once per tick of the event loop (4 ms asked, a little more measured), so a
resolver whose clients come faster than a few ticks apart has its time between queries, and so
its herd, measured in steps of a tick. Each case prints the busiest resolver's time between
clients in ticks and flags it COARSE below 5: a faster time scale compresses those gaps too,
and the figures of such a run are the benchmark's resolution as much as lbdns's.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import heapq
import json
import math
import random
import socket
import struct
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from lbdns.testing.process import LbdnsProcess

ROOT = Path(__file__).resolve().parent.parent

POLICIES = ("least-load", "lowest-score", "weighted-round-robin", "round-robin")
SLUG = {
    "least-load": "ll",
    "lowest-score": "ls",
    "weighted-round-robin": "wrr",
    "round-robin": "rr",
}
IDEAL = "ideal-proxy"


@dataclass
class Case:
    name: str
    capacities: tuple[float, ...]
    added_capacity: float
    resolvers: int


SMALL = Case("capacities 1,1,2,4", (1, 1, 2, 4), 2, 80)
LARGE = Case("16 hosts", tuple([1, 1, 2, 4] * 4), 2, 200)


@dataclass
class Phases:
    warm: float = 30.0
    steady: float = 300.0
    add: float = 60.0
    fail: float = 40.0
    drain: float = 40.0


@dataclass
class World:
    """One farm and its simulated clients."""

    name: str  # policy or IDEAL
    farm: str | None
    capacities: list[float]
    prefix: str  # first three octets of the hosts' addresses
    counts: list[int] = field(default_factory=list)
    accepted: list[int] = field(default_factory=list)
    epoch: list[int] = field(default_factory=list)
    active: list[bool] = field(default_factory=list)  # counted in peak/mean
    failed: list[bool] = field(default_factory=list)
    reporting: list[bool] = field(default_factory=list)
    seq: int = 0
    cache: dict[int, tuple[float, list[int]]] = field(default_factory=dict)
    waiting: dict[int, list[float]] = field(default_factory=dict)  # resolver -> client times
    asked: dict[int, float] = field(default_factory=dict)  # resolver -> query sent at
    samples: list[float] = field(default_factory=list)
    lost: int = 0  # clients whose resolver got no usable answer
    failed_sent: int = 0
    drained_sent: int = 0
    drained_late: int = 0
    added_at: float | None = None
    added_fair: float | None = None
    queries: int = 0
    clients: int = 0  # arrivals that asked a resolver (for queries per client)
    ttls: Counter = field(default_factory=Counter)  # answered TTL -> answers

    def add_host(self, capacity: float) -> int:
        self.capacities.append(capacity)
        for column in (self.counts, self.accepted, self.epoch):
            column.append(0)
        self.active.append(True)
        self.failed.append(False)
        self.reporting.append(True)
        return len(self.capacities) - 1

    def address(self, i: int) -> str:
        return f"{self.prefix}.{i + 10}"

    def ratio(self) -> float:
        cap = sum(c for c, a in zip(self.capacities, self.active, strict=True) if a)
        total = sum(n for n, a in zip(self.counts, self.active, strict=True) if a)
        if not total:
            return 1.0
        mean = total / cap
        peak = max(
            n / c for n, c, a in zip(self.counts, self.capacities, self.active, strict=True) if a
        )
        return peak / mean


def zipf_weights(n: int, exponent: float) -> list[float]:
    """Zipf weights 1/k^s, normalised (s = 1.1: the biggest of 200 has about 20 %)."""
    weights = [1 / k**exponent for k in range(1, n + 1)]
    total = sum(weights)
    return [w / total for w in weights]


def zone_text(worlds: list[World], ttl: int, cache_time: float) -> str:
    farms = []
    for world in worlds:
        if world.farm is None:
            continue
        hosts = "\n".join(
            f"      h{i}: {{a: {world.address(i)}, capacity: {c:g}}}"
            for i, c in enumerate(world.capacities)
        )
        label = world.farm.split(".")[0]
        farms.append(
            f"  {label}:\n    ttl: {ttl}\n    policy: {world.name}\n"
            f"    cache_time: {cache_time:g}\n    hosts:\n{hosts}"
        )
    return (
        "zone: bench.test.\nsoa: {}\nns: [ns1]\nrecords:\n  ns1: {A: 192.0.2.53}\nfarms:\n"
        + "\n".join(farms)
        + "\n"
    )


def dns_query(qid: int, name: str) -> bytes:
    wire = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0, 1, 0, 0, 0) + wire + b"\x00\x01\x00\x01"


def parse_answer(data: bytes) -> tuple[int, list[str], int]:
    qid, flags, qd, an = struct.unpack_from("!HHHH", data)
    pos = 12
    for _ in range(qd):
        while data[pos]:
            pos += 1 + data[pos]
        pos += 5
    out = []
    ttl = 0
    for _ in range(an):
        while True:
            length = data[pos]
            if length >= 0xC0:
                pos += 2
                break
            pos += 1 + length
            if not length:
                break
        rtype, _, rr_ttl, rdlength = struct.unpack_from("!HHIH", data, pos)
        pos += 10
        if rtype == 1 and rdlength == 4:
            out.append(socket.inet_ntoa(data[pos : pos + 4]))
            ttl = rr_ttl
        pos += rdlength
    return qid, out, ttl


class Resolvers(asyncio.DatagramProtocol):
    """Sockets on 127.0.x.y, one per resolver, sharing one receive callback."""

    def __init__(self, bench: Bench):
        self.bench = bench

    def datagram_received(self, data: bytes, addr) -> None:
        self.bench.on_answer(data)


class Bench:
    def __init__(self, case: Case, args: argparse.Namespace, policies: tuple[str, ...]):
        self.case = case
        self.args = args
        self.scale = args.time_scale
        self.rng = random.Random(args.seed)
        self.hold = 60.0 * self.scale
        self.cache_time = args.ttl * self.scale
        self.interval = args.report * self.scale
        total_capacity = sum(case.capacities)
        # Arrival rate so that the steady state holds per_capacity connections per capacity unit.
        self.rate = args.per_capacity * total_capacity / self.hold
        self.weights = zipf_weights(case.resolvers, args.zipf)
        self.top_gap = 1.0 / (self.rate * self.weights[0])  # the busiest resolver's, wall time
        self.cumulative = []
        acc = 0.0
        for w in self.weights:
            acc += w
            self.cumulative.append(acc)
        self.worlds: list[World] = []
        for i, policy in enumerate((*policies, IDEAL)):
            farm = None if policy == IDEAL else f"{SLUG[policy]}.bench.test."
            world = World(policy, farm, [], f"10.0.{i + 1}")
            for c in case.capacities:
                world.add_host(c)
            self.worlds.append(world)
        self.heap: list[tuple[float, int, int, int]] = []
        self.pending: dict[int, tuple[int, int]] = {}  # query id -> (world, resolver)
        self.next_id = 0
        self.transports: list[asyncio.DatagramTransport] = []
        self.dns: tuple[str, int] | None = None
        self.http: str | None = None
        self.drain_at = math.inf

    # -- lbdns ------------------------------------------------------------------------------

    def start_lbdns(self, folder: Path) -> LbdnsProcess:
        zones = folder / "zones"
        zones.mkdir()
        (zones / "bench.yaml").write_text(zone_text(self.worlds, self.args.ttl, self.cache_time))
        server = LbdnsProcess(folder, zones=zones).start(timeout=20)
        self.dns = server.dns[0]
        self.http = server.http_url
        return server

    async def open_resolvers(self) -> None:
        loop = asyncio.get_running_loop()
        for r in range(self.case.resolvers):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((f"127.0.{1 + r // 250}.{2 + r % 250}", 0))
            sock.setblocking(False)
            transport, _ = await loop.create_datagram_endpoint(lambda: Resolvers(self), sock=sock)
            self.transports.append(transport)

    # -- clients ----------------------------------------------------------------------------

    def prefill(self, now: float) -> None:
        """Start from the balanced steady state so the measurement needs no long ramp."""
        for w, world in enumerate(self.worlds):
            for i, capacity in enumerate(world.capacities):
                level = self.args.per_capacity * capacity
                for _ in range(int(level)):
                    self.connect(w, i, now, count_accept=False)

    def connect(self, w: int, host: int, now: float, count_accept: bool = True) -> None:
        world = self.worlds[w]
        if world.failed[host]:
            world.failed_sent += 1
            return
        if not world.active[host]:  # draining
            world.drained_sent += 1
            if now > self.drain_at + self.cache_time:
                world.drained_late += 1
        world.counts[host] += 1
        if count_accept:
            world.accepted[host] += 1
        end = now + self.rng.expovariate(1.0 / self.hold)
        heapq.heappush(self.heap, (end, w, host, world.epoch[host]))

    def arrive(self, w: int, now: float) -> None:
        world = self.worlds[w]
        if world.farm is None:  # the ideal proxy: straight to the least-loaded host
            best, best_load, ties = -1, 0.0, 0
            for i, c in enumerate(world.capacities):
                if world.failed[i] or not world.active[i]:
                    continue
                load = world.counts[i] / c
                if best < 0 or load < best_load - 1e-12:
                    best, best_load, ties = i, load, 1
                elif load <= best_load + 1e-12:
                    ties += 1
                    if self.rng.random() * ties < 1:
                        best = i
            self.connect(w, best, now)
            return
        r = bisect.bisect_left(self.cumulative, self.rng.random() * self.cumulative[-1])
        r = min(r, len(self.weights) - 1)
        world.clients += 1
        cached = world.cache.get(r)
        if cached is not None and cached[0] > now:
            self.connect(w, self.pick(cached[1]), now)
            return
        waiting = world.waiting.setdefault(r, [])
        waiting.append(now)
        sent = world.asked.get(r)
        if sent is None or now - sent > 1.0:
            self.ask(w, r, now)

    def ask(self, w: int, r: int, now: float) -> None:
        world = self.worlds[w]
        self.next_id = (self.next_id + 1) & 0xFFFF
        self.pending[self.next_id] = (w, r)
        world.asked[r] = now
        world.queries += 1
        self.transports[r].sendto(dns_query(self.next_id, world.farm), self.dns)

    def on_answer(self, data: bytes) -> None:
        now = time.monotonic() - self.t0
        try:
            qid, addresses, ttl = parse_answer(data)
        except (struct.error, IndexError):
            return
        target = self.pending.pop(qid, None)
        if target is None:
            return
        w, r = target
        world = self.worlds[w]
        world.asked.pop(r, None)
        hosts = [int(a.rsplit(".", 1)[1]) - 10 for a in addresses if a.startswith(world.prefix)]
        clients = world.waiting.pop(r, [])
        if not hosts:
            world.lost += len(clients)
            return
        # The resolver keeps the answer for the TTL it was given (scaled like every time).
        world.cache[r] = (now + ttl * self.scale, hosts)
        world.ttls[ttl] += 1
        for _ in clients:
            self.connect(w, self.pick(hosts), now)

    def pick(self, hosts: list[int]) -> int:
        """The record a client uses: one at random, or the first (--pick)."""
        return hosts[0] if self.args.pick == "first" else self.rng.choice(hosts)

    def depart(self, now: float) -> None:
        heap = self.heap
        while heap and heap[0][0] <= now:
            _, w, host, epoch = heapq.heappop(heap)
            world = self.worlds[w]
            if world.epoch[host] == epoch:
                world.counts[host] -= 1

    # -- agents and events ------------------------------------------------------------------

    async def report(self, session: aiohttp.ClientSession) -> None:
        reports = []
        for world in self.worlds:
            if world.farm is None:
                continue
            world.seq += 1
            for i in range(len(world.capacities)):
                if not world.reporting[i]:
                    continue
                reports.append(
                    {
                        "farm": world.farm,
                        "host": f"h{i}",
                        "seq": world.seq,
                        "interval": self.interval,
                        "healthy": True,
                        "metrics": (
                            {"connections": world.counts[i], "accepted": world.accepted[i]}
                            if self.args.accepted
                            else {"connections": world.counts[i]}
                        ),
                    }
                )
        async with session.post(f"{self.http}/v1/reports", json={"reports": reports}) as resp:
            if resp.status != 200:
                raise SystemExit(f"reports refused: {resp.status} {await resp.text()}")

    async def add_host(self, session: aiohttp.ClientSession, now: float) -> None:
        for world in self.worlds:
            i = world.add_host(self.case.added_capacity)
            world.added_at = now
            if world.farm is not None:
                world.reporting[i] = False  # until lbdns knows it
                body = {"a": world.address(i), "capacity": self.case.added_capacity}
                url = f"{self.http}/v1/farms/{world.farm}/hosts/h{i}"
                async with session.put(url, json=body) as resp:
                    if resp.status >= 300:
                        raise SystemExit(f"adding a host failed: {resp.status} {await resp.text()}")
                world.reporting[i] = True

    async def dump_explain(self, session: aiohttp.ClientSession) -> None:
        for world in self.worlds:
            if world.farm is not None and world.name == "least-load":
                async with session.get(f"{self.http}/v1/farms/{world.farm}/explain") as resp:
                    self.args.explain.write_text(await resp.text())

    def fail_host(self, victim: int) -> None:
        for world in self.worlds:
            world.failed[victim] = True
            world.active[victim] = False
            world.reporting[victim] = False
            world.counts[victim] = 0
            world.epoch[victim] += 1

    async def drain_host(self, session: aiohttp.ClientSession, victim: int) -> None:
        for world in self.worlds:
            world.active[victim] = False
            if world.farm is not None:
                url = f"{self.http}/v1/farms/{world.farm}/hosts/h{victim}/drain"
                async with session.post(url, json={}) as resp:
                    if resp.status >= 300:
                        raise SystemExit(f"drain failed: {resp.status} {await resp.text()}")

    # -- the run ----------------------------------------------------------------------------

    async def run(self, phases: Phases) -> None:
        await self.open_resolvers()
        scale = self.scale
        t_steady = phases.warm * scale
        t_add = t_steady + phases.steady * scale
        t_fail = t_add + phases.add * scale
        self.drain_at = t_drain = t_fail + phases.fail * scale
        t_end = t_drain + phases.drain * scale
        victim_fail = 2  # a capacity-2 host
        victim_drain = 1
        self.t0 = time.monotonic()
        self.prefill(0.0)
        tick = 0.004
        last = 0.0
        ticks = 0
        next_report = 0.0
        added = failed = drained = False
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            report_task: asyncio.Task | None = None
            while True:
                now = time.monotonic() - self.t0
                if now >= t_end:
                    break
                self.depart(now)
                elapsed = now - last
                last = now
                for w in range(len(self.worlds)):
                    for _ in range(_poisson(self.rng, self.rate * elapsed)):
                        self.arrive(w, now)
                if now >= next_report and (report_task is None or report_task.done()):
                    if report_task is not None:
                        report_task.result()
                    next_report = now + self.interval
                    report_task = asyncio.ensure_future(self.report(session))
                if t_steady <= now < t_add:
                    for world in self.worlds:
                        world.samples.append(world.ratio())
                if not added and now >= t_add:
                    added = True
                    if self.args.explain:
                        await self.dump_explain(session)
                    await self.add_host(session, now)
                if added and not failed:
                    for world in self.worlds:
                        if world.added_fair is None:
                            self.check_fair(world, now)
                if not failed and now >= t_fail:
                    failed = True
                    self.fail_host(victim_fail)
                if not drained and now >= t_drain:
                    drained = True
                    await self.drain_host(session, victim_drain)
                ticks += 1
                await asyncio.sleep(tick)
            if report_task is not None:
                await report_task
        # Arrivals are sent once a tick: a resolver whose clients come faster than the ticks
        # shows lbdns gaps of whole ticks, so its idle time (and its herd) is measured coarsely.
        self.mean_tick = last / ticks if ticks else tick
        for transport in self.transports:
            transport.close()

    def check_fair(self, world: World, now: float) -> None:
        i = len(world.capacities) - 1
        cap = sum(c for c, a in zip(world.capacities, world.active, strict=True) if a)
        total = sum(n for n, a in zip(world.counts, world.active, strict=True) if a)
        if total and world.counts[i] / world.capacities[i] >= 0.9 * total / cap:
            world.added_fair = now - world.added_at


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_case(case: Case, args: argparse.Namespace, phases: Phases) -> list[dict]:
    policies = tuple(args.policies)
    bench = Bench(case, args, policies)
    with tempfile.TemporaryDirectory(prefix="lbdns-balance-") as tmp:
        servers = bench.start_lbdns(Path(tmp))
        try:
            asyncio.run(bench.run(phases))
        finally:
            servers.stop()
    resolution = bench.top_gap / bench.mean_tick
    print(
        f"{case.name}: the busiest resolver gets a client every {bench.top_gap * 1e3:.1f} ms of "
        f"wall time, {resolution:.1f} ticks of {bench.mean_tick * 1e3:.1f} ms"
        + (
            ""
            if resolution >= 5
            else " -- COARSE: its time between queries is a few ticks, so its herd is measured in "
            "steps of a tick; a larger --time-scale resolves it"
        ),
        flush=True,
    )
    rows = []
    for world in bench.worlds:
        samples = world.samples
        rows.append(
            {
                "case": case.name,
                "policy": world.name,
                "mean_peak_to_mean": sum(samples) / len(samples) if samples else float("nan"),
                "p99_peak_to_mean": percentile(samples, 0.99),
                "added_90pct_s": (
                    world.added_fair / args.time_scale if world.added_fair is not None else None
                ),
                "sent_to_failed": world.failed_sent,
                "sent_to_drained_after_ttl": world.drained_late,
                "lost": world.lost,
                "queries": world.queries,
                "queries_per_client": world.queries / world.clients if world.clients else None,
                "ttls": dict(sorted(world.ttls.items())),
            }
        )
    return rows


def print_table(rows: list[dict]) -> None:
    header = (
        f"{'case':<20} {'policy':<22} {'avg peak/mean':>13} {'p99':>7} "
        f"{'added 90% (s)':>13} {'to failed':>9} {'to drained':>10} {'q/client':>8}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        added = row["added_90pct_s"]
        per_client = row["queries_per_client"]
        print(
            f"{row['case']:<20} {row['policy']:<22} {row['mean_peak_to_mean']:>13.3f} "
            f"{row['p99_peak_to_mean']:>7.3f} "
            f"{(f'{added:.1f}' if added is not None else 'never'):>13} "
            f"{row['sent_to_failed']:>9} {row['sent_to_drained_after_ttl']:>10} "
            f"{(f'{per_client:.3f}' if per_client is not None else '-'):>8}"
        )
    print("\nTTLs answered (TTL: share of answers):")
    for row in rows:
        ttls = row["ttls"]
        total = sum(ttls.values())
        if not total:
            continue
        spread = ", ".join(f"{t}: {n / total:.0%}" for t, n in ttls.items() if n / total >= 0.005)
        print(f"  {row['case']:<20} {row['policy']:<22} {spread}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--time-scale", type=float, default=0.1)
    parser.add_argument("--ttl", type=int, default=5, help="farm TTL, seconds")
    parser.add_argument("--report", type=float, default=1.0, help="report interval, seconds")
    parser.add_argument(
        "--per-capacity", type=float, default=100, help="steady connections per capacity unit"
    )
    parser.add_argument("--case", choices=("small", "large", "both"), default="both")
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--no-accepted",
        dest="accepted",
        action="store_false",
        help="agents report connections only, no counter of accepted connections",
    )
    parser.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent of resolvers")
    parser.add_argument(
        "--pick",
        choices=("random", "first"),
        default="random",
        help="which record a client uses (first: resolvers keep the order lbdns gave)",
    )
    parser.add_argument(
        "--hard",
        action="store_true",
        help="the hard regime: TTL 30 s, reports every 5 s, Zipf 1.3, clients use the first record",
    )
    parser.add_argument(
        "--steady", type=float, help="seconds of the measured steady phase (unscaled)"
    )
    parser.add_argument(
        "--direct",
        action="store_true",
        help="the direct-asker scenario instead: real apps, agents with health checks, a dig "
        "loop at 2 and 20 queries/s, and unbound",
    )
    parser.add_argument("--quick", action="store_true", help="small case, short phases")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--explain", type=Path, help="write least-load's explain here")
    args = parser.parse_args(argv)
    if args.direct:
        import direct  # the benchmarks folder: sys.path[0] when run as a script

        result = direct.run()
        direct.print_report(result)
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
        return 0
    if args.hard:
        args.ttl, args.report, args.zipf, args.pick = 30, 5.0, 1.3, "first"
    phases = Phases()
    cases = {"small": [SMALL], "large": [LARGE], "both": [SMALL, LARGE]}[args.case]
    if args.quick:
        phases = Phases(warm=10, steady=50, add=30, fail=20, drain=20)
        cases = [SMALL]
    if args.steady is not None:
        phases.steady = args.steady
    rows: list[dict] = []
    for case in cases:
        rows.extend(run_case(case, args, phases))
    print(
        f"TTL {args.ttl} s, reports every {args.report:g} s, Zipf {args.zipf:g}, clients use "
        f"{'the first' if args.pick == 'first' else 'a random'} record, connections of mean "
        f"60 s, {args.per_capacity:g} connections per capacity unit, time scale "
        f"{args.time_scale:g}"
    )
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
