"""Latency of admin API changes against a real ``lbdns serve`` with the embedded store.

    .venv/bin/python benchmarks/admin_changes.py [--changes N] [--hosts N]

Starts ``lbdns serve`` on loopback with a farm of ``--hosts`` hosts and a fresh data dir, then
times, over HTTP on one keep-alive connection:

* ``PUT`` of a new host (validation, hosts.json written with fsync, registry updated), and the
  first DNS query after it that names the new host (the farm's other hosts are disabled first,
  so the new host is the only answer);
* ``POST .../drain`` and ``POST .../enable`` of a host;
* ``POST /v1/reload`` of the zone file (parse of every file, swap, overlay applied again).

p50/p99/max per operation, in milliseconds. Loopback only; every loop is bounded in count.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import tempfile
import time
from pathlib import Path

import dns.message
import dns.query

from lbdns.testing.process import LbdnsProcess

ROOT = Path(__file__).resolve().parent.parent

FARM = "app.bench.test."


def zone(hosts: int) -> str:
    lines = [
        "zone: bench.test.",
        "soa: {mname: ns1.bench.test., rname: hostmaster.bench.test.}",
        "ns: [ns1.bench.test.]",
        "records: {ns1: {A: 192.0.2.53}}",
        "farms:",
        "  app:",
        "    ttl: 1",
        "    hosts:",
    ]
    for i in range(hosts):
        lines.append(f"      h{i}: {{a: 10.0.{i // 250}.{i % 250 + 1}, labels: {{role: web}}}}")
    return "\n".join(lines) + "\n"


def percentiles(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"p50 {statistics.median(ms):7.2f} ms  p99 {p99:7.2f} ms  max {ms[-1]:7.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--hosts", type=int, default=100)
    args = parser.parse_args()
    changes = max(1, min(args.changes, 5000))
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "zones").mkdir()
        (tmp / "zones" / "bench.test.yaml").write_text(zone(max(1, min(args.hosts, 5000))))
        server = LbdnsProcess(tmp, zones=tmp / "zones", extra=("--data-dir", str(tmp / "data")))
        server.start()
        try:
            run(server, changes)
        finally:
            server.stop()


def run(server: LbdnsProcess, changes: int) -> None:
    host, port = server.http_url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)

    def call(method: str, path: str, body=None) -> dict:
        data = None if body is None else json.dumps(body)
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        payload = json.loads(response.read() or b"null")
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {payload}")
        return payload

    call("POST", f"/v1/farms/{FARM}/hosts:disable?selector=role=web")
    put, to_answer, drain, enable = [], [], [], []
    for i in range(changes):
        address = f"10.9.{i // 250}.{i % 250 + 1}"
        start = time.perf_counter()
        call("PUT", f"/v1/farms/{FARM}/hosts/n{i}", {"a": address})
        put.append(time.perf_counter() - start)
        query = dns.message.make_query(FARM, "A")
        response = dns.query.udp(query, server.host, port=server.port, timeout=3)
        answered = {rr.address for rrset in response.answer for rr in rrset}
        to_answer.append(time.perf_counter() - start)
        if address not in answered:
            raise RuntimeError(f"n{i} not answered after its PUT: {answered}")
        start = time.perf_counter()
        call("POST", f"/v1/farms/{FARM}/hosts/n{i}/drain")
        drain.append(time.perf_counter() - start)
        start = time.perf_counter()
        call("POST", f"/v1/farms/{FARM}/hosts/n{i}/disable")
        enable.append(time.perf_counter() - start)
    reload = []
    for _ in range(min(changes, 50)):
        start = time.perf_counter()
        call("POST", "/v1/reload")
        reload.append(time.perf_counter() - start)
    hosts = len(call("GET", f"/v1/farms/{FARM}")["hosts"])
    print(f"{changes} changes, farm of {hosts} hosts, embedded store with fsync")
    print(f"PUT new host            {percentiles(put)}")
    print(f"PUT -> answered by DNS  {percentiles(to_answer)}")
    print(f"POST drain              {percentiles(drain)}")
    print(f"POST disable            {percentiles(enable)}")
    print(f"POST reload             {percentiles(reload)}")


if __name__ == "__main__":
    main()
