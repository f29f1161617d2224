"""What the servers' health checks cost, and how fast they take a failed host out of answers.

    .venv/bin/python benchmarks/probe_cost.py [--hosts 1000] [--seconds 20] [--types tcp,http]
                                              [--failures 500,stop,hang] [--skip-cost]

Part 1, cost: a child process listens on ``--hosts`` loopback addresses (127.1.x.y, one port;
it accepts, answers HTTP 200 to a request, and closes), and a real ``lbdns serve`` checks one
host on each at the default interval of 2 s. Printed per check type: the server's CPU (user +
system from /proc/<pid>/stat) over ``--seconds`` after a warm-up, the same server's CPU with
``checks: false`` (the idle baseline: status sampler, timers), the difference per 1,000 hosts as
a percentage of one core, and the probes per second it sent (from /metrics). Target: below 5 %.

Part 2, failover: a farm of two hosts with real HTTP listeners and the default check (interval
2 s, timeout 1 s, rise 2, fall 3). A client asks the server every 10 ms. For each failure kind
(``500``: the application answers 500; ``stop``: the listener is closed, connections are
refused; ``hang``: it accepts and never answers), printed: the time from the failure to the last
answer that named the failed host, against the bound fall x interval + timeout (the jitter adds
up to 10 % of each interval), and the time from the repair to its first answer again (rise).
Resolvers keep an answer for its TTL on top of this (the farm's ``ttl``, ``cache_time``).

All traffic stays on loopback; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

from lbdns.testing.backend import Backend
from lbdns.testing.process import LbdnsProcess, free_port, http_request, wait_for

LISTENER = r"""
import asyncio, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"

async def serve(reader, writer):
    try:
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 16384:
            chunk = await reader.read(4096)
            if not chunk:
                break
            data += chunk
        if data:
            writer.write(RESPONSE)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()

async def main():
    servers = []
    for i in range(count):
        servers.append(await asyncio.start_server(serve, f"127.1.{i // 250}.{i % 250 + 1}", port,
                                                  backlog=64))
    print("listening", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""

HEAD = """\
zone: probe.bench.
soa: {mname: ns1, rname: hostmaster}
ns: [ns1]
records:
  ns1: {A: 127.0.0.1}
farms:
"""
FARM = "web.probe.bench."
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS  # utime, stime


def probes_sent(server: LbdnsProcess) -> float:
    status, body, _ = http_request(f"{server.http_url}/metrics")
    assert status == 200
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("lbdns_probes_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def many_hosts_zone(folder: Path, count: int, kind: str, port: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [HEAD, "  web:\n", f"    check: {{type: {kind}, port: {port}}}\n", "    hosts:\n"]
    for i in range(count):
        lines.append(f"      h{i}: {{a: 127.1.{i // 250}.{i % 250 + 1}}}\n")
    (folder / "probe.bench.yaml").write_text("".join(lines))
    return folder


def measure_cpu(tmp: Path, zones: Path, checks: bool, seconds: float) -> tuple[float, float, float]:
    """(CPU share of one core, its user-space part, probes per second) of a server over
    ``seconds``."""
    config = tmp / f"lbdns-{'on' if checks else 'off'}.yaml"
    config.write_text(f"checks: {'true' if checks else 'false'}\n")
    with LbdnsProcess(tmp, zones=zones, config=config) as server:
        assert server.proc is not None
        time.sleep(3.0)  # the first interval spreads the first probes; then the steady state
        probes0 = probes_sent(server) if checks else 0.0
        (user0, system0), t0 = cpu_seconds(server.proc.pid), time.monotonic()
        time.sleep(seconds)
        (user1, system1), t1 = cpu_seconds(server.proc.pid), time.monotonic()
        probes1 = probes_sent(server) if checks else 0.0
    elapsed = t1 - t0
    total = user1 - user0 + system1 - system0
    return total / elapsed, (user1 - user0) / elapsed, (probes1 - probes0) / elapsed


def loopback_floor(port: int, hosts: int, count: int = 4000) -> float:
    """CPU seconds of one blocking connect + reset on loopback, in a plain loop: the kernel's
    work for both ends of the handshake (charged to the connecting process on loopback) plus
    the least Python can do. A probe cannot cost less here."""
    linger = struct.pack("ii", 1, 0)
    before = os.times()
    for i in range(count):
        n = i % hosts
        sock = socket.socket()
        sock.connect((f"127.1.{n // 250}.{n % 250 + 1}", port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        sock.close()
        if i % 100 == 99:
            time.sleep(0.02)  # let the listener keep up (its accept queue is 64 deep)
    after = os.times()
    return (after.user - before.user + after.system - before.system) / count


def cost(hosts: int, seconds: float, kinds: list[str]) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        listener = subprocess.Popen(
            [sys.executable, "-c", LISTENER, str(port), str(hosts)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert listener.stdout is not None
            if listener.stdout.readline().strip() != "listening":
                raise SystemExit("the listener process did not start")
            print(f"cost: {hosts} hosts, one address each, interval 2 s, {seconds:g} s windows")
            print(f"{'type':6} {'CPU with checks':>16} {'without':>8} {'per 1,000 hosts':>16} "
                  f"{'probes/s':>9}")  # fmt: skip
            for kind in kinds:
                zones = many_hosts_zone(tmp / f"zones-{kind}", hosts, kind, port)
                with_checks, user, rate = measure_cpu(tmp, zones, True, seconds)
                without, user_without, _ = measure_cpu(tmp, zones, False, seconds)
                per_thousand = (with_checks - without) * 1000 / hosts
                per_probe = (with_checks - without) / rate if rate else 0.0
                user_probe = (user - user_without) / rate if rate else 0.0
                print(
                    f"{kind:6} {with_checks * 100:15.2f}% {without * 100:7.2f}% "
                    f"{per_thousand * 100:15.2f}% {rate:9.1f}   ({per_probe * 1e6:.0f} us a probe, "
                    f"{user_probe * 1e6:.0f} of them in user space)"
                )
            floor = loopback_floor(port, hosts)
            print(
                f"floor: a blocking connect + reset on loopback costs {floor * 1e6:.0f} us of CPU "
                f"(both ends' kernel work), {floor * 500 * 100:.2f}% of a core at 500 a second"
            )
        finally:
            listener.kill()
            listener.wait()


class Asker(threading.Thread):
    """Asks for the farm every 10 ms and keeps when each address was last answered."""

    def __init__(self, server: LbdnsProcess, limit: float):
        super().__init__(daemon=True)
        self.server = server
        self.deadline = time.monotonic() + limit
        self.last: dict[str, float] = {}
        self.first_after: dict[str, float] = {}
        self.stop_event = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stop_event.is_set() and time.monotonic() < self.deadline:
            try:
                reply = self.server.query(FARM)
            except Exception:  # a lost datagram: ask again
                continue
            now = time.monotonic()
            with self.lock:
                for rrset in reply.answer:
                    for rr in rrset:
                        self.last[rr.address] = now
            time.sleep(0.01)

    def last_answer(self, address: str) -> float | None:
        with self.lock:
            return self.last.get(address)


def host_state(server: LbdnsProcess, name: str) -> str:
    status, body, _ = http_request(f"{server.http_url}/v1/farms/{FARM}/hosts/{name}")
    assert status == 200, body
    return json.loads(body)["state"]


def failover(kinds: list[str]) -> None:
    interval, timeout, rise, fall = 2.0, 1.0, 2, 3
    print()
    print(f"failover: interval {interval:g} s, timeout {timeout:g} s, rise {rise}, fall {fall}")
    print(f"{'failure':8} {'last answer after':>18} {'bound':>6} {'back after repair':>18}")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        b1 = Backend("127.0.0.21").start()
        b2 = Backend("127.0.0.22").start()
        folder = tmp / "zones"
        folder.mkdir()
        farm = f"""\
          web:
            ttl: 1
            check: {{type: http, port: {b1.port}}}
            hosts:
              h1: {{a: 127.0.0.21}}
              h2: {{a: 127.0.0.22, check: {{port: {b2.port}}}}}
        """
        (folder / "probe.bench.yaml").write_text(
            HEAD + textwrap.indent(textwrap.dedent(farm), "  ")
        )
        try:
            with LbdnsProcess(tmp, zones=folder) as server:
                wait_for(lambda: host_state(server, "h1") == "up", 10, 0.05, "h1 up")
                wait_for(lambda: host_state(server, "h2") == "up", 10, 0.05, "h2 up")
                for kind in kinds:
                    asker = Asker(server, limit=60)
                    asker.start()
                    wait_for(lambda a=asker: a.last_answer("127.0.0.21"), 5, 0.01, "an answer")
                    failed_at = time.monotonic()
                    if kind == "500":
                        b1.mode = "error"
                    elif kind == "hang":
                        b1.mode = "hang"
                    else:
                        b1.stop()
                    bound = fall * interval + timeout
                    wait_for(lambda: host_state(server, "h1") == "down", bound * 2, 0.05, "down")
                    time.sleep(0.5)  # answers that were already on their way
                    last = asker.last_answer("127.0.0.21") or failed_at
                    out = last - failed_at
                    repaired_at = time.monotonic()
                    asker.last.pop("127.0.0.21", None)
                    if kind == "stop":
                        b1.start()
                    b1.mode = "ok"
                    wait_for(lambda a=asker: a.last_answer("127.0.0.21"), 20, 0.01, "back")
                    back = (asker.last_answer("127.0.0.21") or repaired_at) - repaired_at
                    asker.stop_event.set()
                    asker.join()
                    print(f"{kind:8} {out:17.2f}s {bound:5.1f}s {back:17.2f}s")
        finally:
            b1.stop()
            b2.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--types", default="tcp,http")
    parser.add_argument("--failures", default="500,stop,hang")
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--skip-failover", action="store_true")
    args = parser.parse_args()
    if not 1 <= args.hosts <= 5000 or not 1 <= args.seconds <= 120:
        raise SystemExit("--hosts is 1 to 5000, --seconds 1 to 120")
    if not args.skip_cost:
        cost(args.hosts, args.seconds, [k for k in args.types.split(",") if k])
    if not args.skip_failover:
        failover([k for k in args.failures.split(",") if re.fullmatch(r"500|stop|hang", k)])


if __name__ == "__main__":
    main()
