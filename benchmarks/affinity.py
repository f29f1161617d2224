"""Keyed farms: how few keys move, how even bounded loads keep hosts, how fast assignments are.

    .venv/bin/python benchmarks/affinity.py [--quick] [--seconds S]

Four parts, each printed with its target:

1. **Keys moved** when one host of 8 (capacity 1 each) is added or removed, over 100,000 keys,
   from the ring the ``consistent-hash`` policy walks (``Ring.order``): the fraction that moved
   against the ideal 1/n (1/9 when a ninth host comes, 1/8 when one of eight goes; every one of
   the eight removals is tried and the worst shown). Target: <= 1.2 x ideal.
2. **Bounded loads under Zipf keys.** 10,000 keys with Zipf(s = 1.1) popularity; 200,000
   connections arrive one by one and are held (never closed), each routed by the policy itself
   (``consistent_hash.choose``, c = 1.25) from the hosts' connection counts, charged one each.
   Shown: the largest host against the mean, the bound ``c x mean + one connection``, and the
   share of connections that reached their key's own host; beside it a plain consistent hash
   (every connection to its key's ring place, no bound). A second run assigns each key once
   with all its connections (a room that moves as a whole): the bound is then
   ``c x mean + the heaviest key's load``.
3. **Assignment API.** A real ``lbdns serve`` (rate limit off) with a least-load farm of 8 hosts
   that reported 0 connections; a pipelined HTTP/1.1 client on loopback asks
   ``GET /v1/farms/<farm>/assign`` for ``--seconds``. Shown: assignments per second of the
   server's own CPU time (utime + stime from /proc: "on one core"), the wall-clock rate, and the
   peak/mean of the connections assigned per host. Targets: >= 5,000/s, peak/mean <= 1.02. The
   same with ``?key=`` (a keyed farm) is shown for reference.
4. **Query path cost** in process: microseconds per answer of ``Answerer.respond`` for a plain
   farm name, a key label of a keyed farm and a client-subnet farm (bytes in, bytes out, the
   repeated-query path a busy server takes), so the cost a keyed farm adds is visible.

Loopback only; every loop is bounded in count and time. Figures vary on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import tempfile
import time
from bisect import bisect_left
from collections import Counter
from itertools import accumulate
from pathlib import Path

from lbdns.balance.policy import Ask, Candidate
from lbdns.balance.policy import consistent_hash as ch
from lbdns.testing.process import LbdnsProcess, http_json, load_note

HOSTS = [f"h{i}" for i in range(8)]
C = 1.25


# -- 1. keys moved ---------------------------------------------------------------------------


def keys_moved(keys: int) -> None:
    positions = [ch.key_hash(f"key-{i}") for i in range(keys)]
    base = ch.Ring.build([(h, 1.0) for h in HOSTS])
    home = [base.order(p, 1)[0] for p in positions]
    grown = ch.Ring.build([(h, 1.0) for h in [*HOSTS, "h8"]])
    moved = sum(1 for p, h in zip(positions, home, strict=True) if grown.order(p, 1)[0] != h)
    added = moved / keys / (1 / 9)
    worst = 0.0
    for gone in HOSTS:
        ring = ch.Ring.build([(h, 1.0) for h in HOSTS if h != gone])
        moved = sum(1 for p, h in zip(positions, home, strict=True) if ring.order(p, 1)[0] != h)
        worst = max(worst, moved / keys / (1 / 8))
    print(f"1. keys moved, {keys:,} keys, 8 hosts (target <= 1.2 x ideal 1/n)")
    print(f"   host added:           {added:.3f} x ideal 1/9")
    print(f"   host removed (worst): {worst:.3f} x ideal 1/8")


# -- 2. bounded loads under Zipf keys ----------------------------------------------------------


def zipf_keys(count: int, s: float, draws: int, rng: random.Random) -> list[int]:
    weights = [1.0 / (k + 1) ** s for k in range(count)]
    cumulative = list(accumulate(weights))
    total = cumulative[-1]
    return [bisect_left(cumulative, rng.random() * total) for _ in range(draws)]


def bounded_loads(keys: int, connections: int) -> None:
    rng = random.Random(7)
    ring = ch.Ring.build([(h, 1.0) for h in HOSTS])
    positions = [ch.key_hash(f"room-{k}") for k in range(keys)]
    homes = [ring.order(p, 1)[0] for p in positions]
    arrivals = zipf_keys(keys, 1.1, connections, rng)

    loads = dict.fromkeys(HOSTS, 0.0)
    at_home = 0
    for k in arrivals:
        candidates = tuple(Candidate(h, 1.0, loads[h]) for h in HOSTS)
        ask = Ask(1, 0, rng, 1.0, 1, positions[k], ring, C)
        chosen = ch.choose(candidates, ask)[0].name
        loads[chosen] += 1.0
        at_home += chosen == homes[k]
    plain = Counter(homes[k] for k in arrivals)
    mean = connections / len(HOSTS)
    top = max(loads.values())
    print(
        f"2. Zipf s=1.1, {keys:,} keys, {connections:,} held connections routed one by one, "
        f"c={C} (target: max <= c x mean + one connection)"
    )
    print(
        f"   bounded: max/mean {top / mean:.3f}, max {top:,.0f} <= bound "
        f"{C * mean + 1:,.0f}: {'yes' if top <= C * mean + 1 else 'NO'}; "
        f"{at_home / connections:.1%} of connections on their key's own host"
    )
    print(f"   plain consistent hash: max/mean {max(plain.values()) / mean:.3f}")

    # Each key assigned once with all its connections (a room moves as a whole).
    per_key = Counter(arrivals)
    order = list(per_key)
    rng.shuffle(order)
    loads = dict.fromkeys(HOSTS, 0.0)
    for k in order:
        weight = float(per_key[k])
        candidates = tuple(Candidate(h, 1.0, loads[h]) for h in HOSTS)
        ask = Ask(1, 0, rng, weight, 1, positions[k], ring, C)
        loads[ch.choose(candidates, ask)[0].name] += weight
    heaviest = max(per_key.values())
    top = max(loads.values())
    bound = C * mean + heaviest
    print(
        f"   whole keys: max/mean {top / mean:.3f}, max {top:,.0f} <= c x mean + heaviest key "
        f"({heaviest:,}) = {bound:,.0f}: {'yes' if top <= bound else 'NO'}"
    )


# -- 3. assignment API ------------------------------------------------------------------------

ZONE = """\
zone: bench.test.
soa: {mname: ns1.bench.test., rname: hostmaster.bench.test.}
ns: [ns1.bench.test.]
records: {ns1: {A: 192.0.2.53}}
farms:
  app:
    ttl: 30
    hosts: {HOSTS}
  rooms:
    ttl: 30
    policy: consistent-hash
    hosts: {HOSTS}
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def pipelined(address: str, paths: list[str], seconds: float, depth: int) -> list[bytes]:
    """GET each path in turn, ``depth`` requests in flight on one keep-alive connection, until
    the paths or the time run out; the response bodies."""
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    bodies: list[bytes] = []
    deadline = time.monotonic() + seconds
    sent = 0

    def send(count: int) -> int:
        batch = paths[sent : sent + count]
        writer.write(
            b"".join(f"GET {p} HTTP/1.1\r\nHost: {address}\r\n\r\n".encode() for p in batch)
        )
        return len(batch)

    in_flight = send(depth)
    sent += in_flight
    try:
        while in_flight:
            status = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            if not status.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"assignment failed: {status!r}")
            bodies.append(await reader.readexactly(length))
            in_flight -= 1
            if time.monotonic() < deadline and sent < len(paths):
                more = send(1)
                sent += more
                in_flight += more
    finally:
        writer.close()
    return bodies


def assignment_api(seconds: float) -> None:
    hosts = "{" + ", ".join(f"{h}: {{a: 10.0.0.{i + 1}}}" for i, h in enumerate(HOSTS)) + "}"
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        (tmp / "zones").mkdir()
        (tmp / "zones" / "bench.test.yaml").write_text(ZONE.replace("{HOSTS}", hosts))
        (tmp / "lbdns.yaml").write_text(json.dumps({"assign_rate": 0}))
        server = LbdnsProcess(tmp, zones=tmp / "zones", config=tmp / "lbdns.yaml")
        server.start()
        try:
            assert server.http_url and server.proc
            for farm in ("app.bench.test.", "rooms.bench.test."):
                for seq, host in enumerate(HOSTS):
                    body = {
                        "farm": farm,
                        "host": host,
                        "seq": seq + 1,
                        "interval": 3600.0,
                        "metrics": {"connections": 0},
                    }
                    status, reply = http_json(server.http_url + "/v1/report", body)
                    assert status == 200, reply
            address = server.http_url.removeprefix("http://")
            print(
                f"3. assignment API, {seconds:g} s each, one pipelined keep-alive connection "
                "(targets: >= 5,000/s of server CPU, peak/mean <= 1.02)"
            )
            for label, paths in (
                ("no key, least-load", ["/v1/farms/app.bench.test./assign"] * 200_000),
                (
                    "?key=, consistent-hash",
                    [f"/v1/farms/rooms.bench.test./assign?key=k{i}" for i in range(200_000)],
                ),
            ):
                cpu = cpu_seconds(server.proc.pid)
                wall = time.monotonic()
                bodies = asyncio.run(pipelined(address, paths, seconds, depth=32))
                wall = time.monotonic() - wall
                cpu = cpu_seconds(server.proc.pid) - cpu
                counts = Counter(json.loads(b)["host"] for b in bodies)
                mean = len(bodies) / len(HOSTS)
                print(
                    f"   {label:24} {len(bodies) / cpu:8,.0f}/s of server CPU "
                    f"({len(bodies) / wall:,.0f}/s wall, {len(bodies):,} assignments), "
                    f"peak/mean {max(counts.values()) / mean:.4f}"
                )
        finally:
            server.stop()


# -- 4. query path cost -----------------------------------------------------------------------


def query_cost(rounds: int) -> None:
    import dns.edns
    import dns.message

    from lbdns.dnsserver.wire import Answerer
    from lbdns.registry import Registry
    from lbdns.zone.parse import parse_text

    hosts = "{" + ", ".join(f"{h}: {{a: 10.0.0.{i + 1}}}" for i, h in enumerate(HOSTS)) + "}"
    text = (
        ZONE.replace("{HOSTS}", hosts)
        + f"  subnet:\n    ttl: 30\n    policy: consistent-hash\n    key: client-subnet\n    hosts: {hosts}\n"
    )
    registry = Registry()
    zone = parse_text(text, "bench.test.yaml")
    registry.load_zones({zone.origin: zone})
    answerer = Answerer(registry)
    ecs = dns.edns.ECSOption("198.51.100.0", 24)
    cases = {
        "plain farm (least-load)": dns.message.make_query("app.bench.test.", "A").to_wire(),
        "key label (consistent-hash)": dns.message.make_query(
            "room7.rooms.bench.test.", "A"
        ).to_wire(),
        "client subnet, from ECS": dns.message.make_query(
            "subnet.bench.test.", "A", use_edns=0, options=[ecs]
        ).to_wire(),
    }
    print(f"4. query path, in process, {rounds:,} repeated queries each (no target: for scale)")
    for label, query in cases.items():
        for _ in range(100):
            answerer.respond(query, "192.0.2.7")
        start = time.perf_counter()
        for _ in range(rounds):
            answerer.respond(query, "192.0.2.7")
        elapsed = time.perf_counter() - start
        print(f"   {label:30} {elapsed / rounds * 1e6:6.2f} us/query")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, about 10 s")
    parser.add_argument("--seconds", type=float, default=5.0, help="per assignment run")
    args = parser.parse_args()
    seconds = min(max(args.seconds, 0.5), 60.0)
    if args.quick:
        keys_moved(20_000)
        bounded_loads(10_000, 40_000)
        assignment_api(min(seconds, 1.0))
        query_cost(20_000)
    else:
        keys_moved(100_000)
        bounded_loads(10_000, 200_000)
        assignment_api(seconds)
        query_cost(200_000)
    print(f"rates vary from run to run; {load_note()}")


if __name__ == "__main__":
    main()
