"""Freshness and ingest throughput of several lbdns servers sharing one Redis.

    .venv/bin/python benchmarks/freshness.py [--rounds N] [--ingest-seconds S] [--json FILE]

Starts a ``redis-server`` (no persistence) and two ``lbdns serve --state redis://…`` processes,
A and B, on free loopback ports. Then:

* **report freshness**: a report accepted by A (``POST /v1/report``) that makes another host the
  least loaded, until B's DNS answer for the farm changes (B polled over UDP as fast as it
  answers). p50/p90/p99/max over ``--rounds`` changes;
* **API freshness**: the same for an admin change on A (disable / enable a host);
* **ingest throughput**: single reports (``POST /v1/report``, 32 in flight) and batches of 100
  (``POST /v1/reports``) sent to A for ``--ingest-seconds``, with the Redis store and, for
  comparison, with the embedded store (``memory://``). Printed as reports per second of wall
  time and per second of the lbdns process's CPU time (utime + stime from /proc), the latter
  being the "reports/s at one core" figure.

Loopback only; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import dns.message
import dns.query

from lbdns.testing.process import LbdnsProcess
from lbdns.testing.redis import RedisProcess

ROOT = Path(__file__).resolve().parent.parent

FRESH = "fresh.bench.test."
INGEST = "load.bench.test."
INGEST_HOSTS = 64


def zone_text() -> str:
    hosts = "\n".join(
        f"      h{i:02d}: {{a: 10.1.{i // 250}.{i % 250 + 1}}}" for i in range(INGEST_HOSTS)
    )
    return f"""\
zone: bench.test.
ttl: 300
soa: {{mname: ns1.bench.test., rname: hostmaster.bench.test.}}
ns: [ns1.bench.test., ns2.bench.test.]
records:
  ns1: {{A: 192.0.2.53}}
  ns2: {{A: 192.0.2.54}}
farms:
  fresh:
    ttl: 5
    policy: lowest-score
    hosts:
      h0: {{a: 10.0.0.1}}
      h1: {{a: 10.0.0.2}}
  load:
    ttl: 5
    hosts:
{hosts}
"""


class Api:
    """A keep-alive HTTP/1.1 connection to one server's API."""

    def __init__(self, url: str):
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=5)

    def call(self, method: str, path: str, body=None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        self.conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        response = self.conn.getresponse()
        payload = json.loads(response.read())
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {payload}")
        return payload


def answer(server: LbdnsProcess) -> str:
    message = dns.message.make_query(FRESH, "A")
    response = dns.query.udp(message, server.host, port=server.port, timeout=2)
    return ",".join(sorted(rr.address for rrset in response.answer for rr in rrset))


def wait_change(server: LbdnsProcess, expected: str, start: float, limit: float = 2.0) -> float:
    """Seconds from ``start`` until ``server`` answers ``expected`` (polling over UDP)."""
    while True:
        if answer(server) == expected:
            return time.perf_counter() - start
        if time.perf_counter() - start > limit:
            raise RuntimeError(f"B did not answer {expected} within {limit} s")


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "n": len(ordered),
        "p50_ms": round(pick(0.50) * 1000, 2),
        "p90_ms": round(pick(0.90) * 1000, 2),
        "p99_ms": round(pick(0.99) * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
    }


def freshness(a: LbdnsProcess, b: LbdnsProcess, rounds: int) -> dict[str, dict]:
    api = Api(a.http_url)
    seq = {"h0": 0, "h1": 0}

    def report(host: str, connections: int) -> None:
        seq[host] += 1
        api.call(
            "POST",
            "/v1/report",
            {
                "farm": FRESH,
                "host": host,
                "seq": seq[host],
                "interval": 3600,
                "metrics": {"connections": connections},
            },
        )

    report("h1", 50)
    report("h0", 100)
    wait_change(b, "10.0.0.2", time.perf_counter())
    by_report = []
    for i in range(rounds):
        low = i % 2 == 0  # h0 becomes the least loaded, then the most, and so on
        start = time.perf_counter()
        report("h0", 0 if low else 100)
        by_report.append(wait_change(b, "10.0.0.1" if low else "10.0.0.2", start))
    report("h0", 0)
    wait_change(b, "10.0.0.1", time.perf_counter())
    by_api = []
    for i in range(rounds):
        action = "disable" if i % 2 == 0 else "enable"
        start = time.perf_counter()
        api.call("POST", f"/v1/farms/{FRESH}/hosts/h0/{action}")
        by_api.append(wait_change(b, "10.0.0.2" if action == "disable" else "10.0.0.1", start))
    return {
        "report_A_to_answer_B": percentiles(by_report),
        "api_A_to_answer_B": percentiles(by_api),
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def ingest(url: str, pid: int, seconds: float, batch: int) -> dict[str, float]:
    import aiohttp

    seqs = [0] * INGEST_HOSTS
    sent = 0
    errors = 0
    deadline = time.perf_counter() + seconds

    def body(i: int) -> dict:
        host = i % INGEST_HOSTS
        seqs[host] += 1
        return {
            "farm": INGEST,
            "host": f"h{host:02d}",
            "seq": seqs[host],
            "interval": 1.0,
            "metrics": {"connections": i % 997, "cpu": 0.5},
        }

    async def worker(session: aiohttp.ClientSession, n: int) -> None:
        nonlocal sent, errors
        i = n
        while time.perf_counter() < deadline:
            if batch == 1:
                path, payload = "/v1/report", body(i)
            else:
                path, payload = "/v1/reports", {"reports": [body(i + k) for k in range(batch)]}
            async with session.post(url + path, json=payload) as response:
                await response.read()
                if response.status == 200:
                    sent += batch
                else:
                    errors += 1
            i += 32 * batch

    cpu0 = cpu_seconds(pid)
    wall0 = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session, n * batch) for n in range(32 if batch == 1 else 4)))
    wall = time.perf_counter() - wall0
    cpu = cpu_seconds(pid) - cpu0
    return {
        "reports": sent,
        "errors": errors,
        "per_second": round(sent / wall),
        "per_cpu_second": round(sent / cpu) if cpu > 0 else 0,
        "server_cpu_share": round(cpu / wall, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--ingest-seconds", type=float, default=5.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rounds = max(2, min(args.rounds, 5000))
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="lbdns-fresh-") as tmp_name:
        tmp = Path(tmp_name)
        zones = tmp / "zones"
        zones.mkdir()
        (zones / "bench.test.yaml").write_text(zone_text())
        with RedisProcess(tmp / "redis") as redis:
            extra = ("--state", redis.url)
            a = LbdnsProcess(tmp, zones=zones, extra=extra).start()
            b = LbdnsProcess(tmp, zones=zones, extra=extra).start()
            memory = LbdnsProcess(tmp, zones=zones, extra=("--data-dir", str(tmp / "data"))).start()
            try:
                results["freshness"] = freshness(a, b, rounds)
                throughput = {}
                for name, server in (("redis", a), ("memory", memory)):
                    for batch in (1, 100):
                        key = f"{name}, {'single' if batch == 1 else 'batch of 100'}"
                        throughput[key] = asyncio.run(
                            ingest(server.http_url, server.proc.pid, args.ingest_seconds, batch)
                        )
                results["ingest"] = throughput
            finally:
                for server in (a, b, memory):
                    server.stop()
    print(f"freshness across two servers ({rounds} changes each, Redis on loopback):")
    for name, row in results["freshness"].items():  # type: ignore[union-attr]
        print(
            f"  {name:22s} p50 {row['p50_ms']:7.2f} ms  p90 {row['p90_ms']:7.2f} ms  "
            f"p99 {row['p99_ms']:7.2f} ms  max {row['max_ms']:7.2f} ms"
        )
    print(f"ingest throughput ({args.ingest_seconds:g} s each):")
    for name, row in results["ingest"].items():  # type: ignore[union-attr]
        print(
            f"  {name:28s} {row['per_second']:7d} reports/s  {row['per_cpu_second']:7d} per "
            f"lbdns CPU-second  (lbdns at {row['server_cpu_share']:.2f} cores, "
            f"{row['errors']} errors)"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
