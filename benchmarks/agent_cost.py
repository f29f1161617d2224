"""What ``lbdns agent`` costs on a busy host: CPU at a 1 s interval with 10,000 connections.

    .venv/bin/python benchmarks/agent_cost.py [--connections 10000] [--seconds 30]

The benchmark opens N established TCP connections on loopback to a port it listens on (the
server ends are held by a child process, the client ends by this one, so each stays within the
open-file limit, which it raises to the hard limit), starts a real ``lbdns serve`` and a real
``lbdns agent`` reporting to it every interval, and prints:

* the agent's CPU use (user + system, from /proc/<pid>/stat) over ``--seconds`` after a warm-up,
  as a percentage of one core;
* the time one connection count takes with each method (netlink socket diagnostics and
  /proc/net/tcp), and one whole measurement (all metrics), median and 90th percentile, run back
  to back; for netlink also the part that is the kernel's walk of its connection table (a count
  on a port no socket uses: no record is built), and both once per interval as the agent runs
  them, when the sockets are no longer in the CPU caches (the figure the agent's CPU follows).

On loopback the client ends are sockets of this host too, so the kernel walks twice the sockets a
real server with N remote clients has: the figures are an upper bound. Connections are closed
with RST so no TIME_WAIT sockets are left to skew a following run. Figures, and where the time
goes: docs/agent.md, "Cost".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lbdns.agent import config as agent_config
from lbdns.agent import ebpf
from lbdns.agent.main import Agent
from lbdns.agent.measure import NetlinkCounter, ProcCounter
from lbdns.testing.process import LbdnsProcess

ROOT = Path(__file__).resolve().parent.parent

MAX_CONNECTIONS = 15_000
HOLDER = r"""
import socket, sys
listen = socket.socket()
listen.bind(("127.0.0.1", 0))
listen.listen(4096)
print(listen.getsockname()[1], flush=True)
held = []
n = int(sys.argv[1])
listen.settimeout(60)
while len(held) < n:
    held.append(listen.accept()[0])
print("held", flush=True)
sys.stdin.read()  # until the parent closes our stdin
"""


def raise_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            sys.exit(f"need {needed} open files, the hard limit is {hard}: lower --connections")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def open_connections(n: int) -> tuple[subprocess.Popen, int, list[socket.socket]]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        preexec_fn=lambda: raise_file_limit(n + 64),
    )
    port = int(holder.stdout.readline())
    clients = []
    deadline = time.monotonic() + 120
    for _ in range(n):
        if time.monotonic() > deadline:
            raise SystemExit("opening connections took over 120 s")
        clients.append(socket.create_connection(("127.0.0.1", port), timeout=10))
    if holder.stdout.readline().strip() != b"held":
        raise SystemExit("the holder process did not accept every connection")
    return holder, port, clients


def close_connections(holder: subprocess.Popen, clients: list[socket.socket]) -> None:
    linger = struct.pack("ii", 1, 0)
    for sock in clients:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        sock.close()
    holder.stdin.close()
    holder.wait(timeout=30)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timings(func, runs: int) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(0.9 * (len(samples) - 1))]


def spaced_cpu(func, runs: int, gap: float) -> float:
    """Median CPU milliseconds of ``func`` run once per ``gap`` seconds, as the agent runs it:
    between two counts the kernel's socket structures leave the CPU caches."""
    samples = []
    for _ in range(runs):
        time.sleep(gap)
        start = time.process_time()
        func()
        samples.append((time.process_time() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument(
        "--seconds",
        type=float,
        default=65.0,
        help="measured time of each agent run (default 65: it includes one eBPF recount)",
    )
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--method", default="auto", choices=("auto", "ebpf", "netlink", "proc"))
    parser.add_argument(
        "--methods",
        default="auto,netlink",
        help="agent runs, one per counting method (default auto,netlink)",
    )
    parser.add_argument("--runs", type=int, default=20, help="timed runs of one measurement")
    args = parser.parse_args()
    n = max(1, min(args.connections, MAX_CONNECTIONS))
    seconds = max(5.0, min(args.seconds, 600.0))
    raise_file_limit(n + 256)

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        print(f"opening {n} loopback connections ...", flush=True)
        started = time.monotonic()
        holder, port, clients = open_connections(n)
        print(f"  done in {time.monotonic() - started:.1f} s")
        server = None
        agent_proc = None
        try:
            netlink = NetlinkCounter([port])
            proc = ProcCounter([port])
            counted = netlink.count(), proc.count()
            print(f"  counted: netlink {counted[0]}, /proc {counted[1]} (expected {n})")
            nl_med, nl_p90 = timings(netlink.count, args.runs)
            # Port 1 matches no socket: the kernel walks its connection table, builds no record.
            walk = NetlinkCounter([1])
            walk_med, walk_p90 = timings(walk.count, args.runs)
            nl_cold = spaced_cpu(netlink.count, 5, args.interval)
            walk_cold = spaced_cpu(walk.count, 5, args.interval)
            walk.close()
            pr_med, pr_p90 = timings(proc.count, max(3, args.runs // 4))
            try:
                started = time.perf_counter()
                counter = ebpf.EbpfCounter([port], NetlinkCounter([port]), recount_every=1e9)
                eb_start = (time.perf_counter() - started) * 1000
                eb_count = counter.count()
                eb_med, eb_p90 = timings(counter.count, args.runs)
                counter.close()
                eb_line = (
                    f"median {eb_med * 1000:6.1f} us  p90 {eb_p90 * 1000:6.1f} us "
                    f"(counted {eb_count}; loading it and the first full count: {eb_start:.1f} ms)"
                )
            except ebpf.Unavailable as exc:
                eb_line = f"unavailable: {exc}"
            netlink.close()

            config_text = (
                f"farm: chat.example.test.\nhost: web1\ninterval: {args.interval}\n"
                f"connections: {{ports: [{port}], method: {args.method}}}\n"
            )
            path = tmp / "agent.yaml"
            path.write_text(config_text)
            config = agent_config.load(path, need_servers=False)

            async def whole() -> tuple[float, float]:
                agent = Agent(config, push=False)
                await agent.open()
                samples = []
                for _ in range(args.runs):
                    start = time.perf_counter()
                    await agent.measure()
                    samples.append((time.perf_counter() - start) * 1000)
                await agent.close()
                samples.sort()
                return statistics.median(samples), samples[int(0.9 * (len(samples) - 1))]

            all_med, all_p90 = asyncio.run(whole())

            server = LbdnsProcess(tmp).start()
            url = server.http_url
            runs = []
            for method in args.methods.split(","):
                text = config_text.replace(f"method: {args.method}", f"method: {method}")
                path.write_text(text + f"servers: [{url}]\n")
                agent_log = tmp / f"agent-{method}.log"
                with open(agent_log, "wb") as out:
                    agent_proc = subprocess.Popen(
                        [sys.executable, "-m", "lbdns", "agent", "-c", str(path)],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        cwd=ROOT,
                    )
                warmup = max(3.0, 3 * args.interval)
                print(
                    f"agent ({method}) running: {warmup:g} s warm-up, then {seconds:g} s "
                    "measured ...",
                    flush=True,
                )
                time.sleep(warmup)
                cpu0, wall0 = cpu_seconds(agent_proc.pid), time.monotonic()
                time.sleep(seconds)
                cpu1, wall1 = cpu_seconds(agent_proc.pid), time.monotonic()
                if agent_proc.poll() is not None:
                    raise SystemExit(agent_log.read_text())
                agent_proc.terminate()
                agent_proc.wait(timeout=15)
                agent_proc = None
                chosen = re.search(r"port\(s\) [\d, ]+ with (\w+)", agent_log.read_text())
                runs.append(
                    (method, chosen.group(1) if chosen else "?", cpu1 - cpu0, wall1 - wall0)
                )
            print()
            print(f"connections: {n} established on loopback; interval {args.interval:g} s")
            print(
                f"{'one connection count, netlink':<40} median {nl_med:6.2f} ms  p90 {nl_p90:6.2f} ms"
            )
            print(
                f"{'  of which the table walk (no match)':<40} median {walk_med:6.2f} ms  p90 {walk_p90:6.2f} ms"
            )
            print(
                f"{'the same, one per interval (CPU)':<40} median {nl_cold:6.2f} ms, "
                f"table walk {walk_cold:.2f} ms"
            )
            print(
                f"{'one connection count, /proc/net/tcp':<40} median {pr_med:6.2f} ms  p90 {pr_p90:6.2f} ms"
            )
            print(f"{'one connection count, eBPF':<40} {eb_line}")
            print(
                f"{'one whole measurement (' + args.method + ')':<40} median {all_med:6.2f} ms  p90 {all_p90:6.2f} ms"
            )
            for method, chosen, cpu, wall in runs:
                label = f"agent CPU, {method} ({chosen})"
                print(
                    f"{label:<40} {100 * cpu / wall:.2f}% of one core "
                    f"({cpu:.2f} s CPU in {wall:.1f} s)  target < 1%"
                )
        finally:
            if agent_proc is not None:
                agent_proc.terminate()
                agent_proc.wait(timeout=15)
            if server is not None:
                server.stop()
            close_connections(holder, clients)


if __name__ == "__main__":
    main()
