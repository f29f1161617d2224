"""Random-name floods: what a name costs lbdns under a wildcard and under NXDOMAIN, and what the
flood does to everyone else's latency.

    .venv/bin/python benchmarks/flood.py [--rate Q/S] [--duration S] [--rounds N] [--json FILE]

One ``lbdns serve`` on the example zones (``*.apps.example.test`` is a wildcard). Per kind of
flood and round, dnsperf sends ``--rate`` queries a second for ``--duration`` seconds from
127.0.0.1, every name new (``<random>.apps.example.test`` for the wildcard flood,
``<random>.example.test`` for the NXDOMAIN one), so neither cache helps. Meanwhile a probe
thread bound to 127.0.1.1 asks a farm name and a static name in turn every 5 ms. Printed per
kind: the offered and answered rate, the lbdns process's CPU per answered query (utime + stime
from /proc, so the figure includes the kernel's socket work) and the probe's p50/p99/lost.

Targets (issue 20): a wildcard name costs at most 1.2 x an NXDOMAIN name; probe p99 <= 5 ms.
Run it with nothing else busy on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from lbdns.testing.process import EXAMPLE_ZONES, LbdnsProcess, load_note

DNSPERF = "dnsperf"
PROBE_NAMES = ("chat.example.test.", "mail.example.test.")  # a farm name, a static name
_SUMMARY = {
    "sent": r"Queries sent:\s+(\d+)",
    "completed": r"Queries completed:\s+(\d+)",
    "lost": r"Queries lost:\s+(\d+)",
}


def wire_query(name: str, qid: int, qtype: int = 1, edns: bool = False) -> bytes:
    labels = b"".join(bytes((len(part),)) + part.encode() for part in name.rstrip(".").split("."))
    additional = 1 if edns else 0
    packet = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, additional)
    packet += labels + b"\x00" + struct.pack("!HH", qtype, 1)
    if edns:
        packet += b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
    return packet


class Probe(threading.Thread):
    """A client in another network: one query every ``interval`` seconds, its round trip kept."""

    def __init__(self, server: tuple[str, int], source: str = "127.0.1.1", interval=0.005):
        super().__init__(daemon=True)
        self.server = server
        self.source = source
        self.interval = interval
        self.latencies: list[float] = []
        self.lost = 0
        self.truncated = 0  # TC=1 replies: not an answer (a rate limit's slip)
        self.stopping = threading.Event()

    def run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((self.source, 0))
            sock.settimeout(1.0)
            qid = 0
            while not self.stopping.is_set():
                qid = (qid + 1) & 0xFFFF
                packet = wire_query(PROBE_NAMES[qid % 2], qid)
                started = time.perf_counter()
                sock.sendto(packet, self.server)
                try:
                    while True:
                        reply = sock.recv(4096)
                        if reply[:2] == packet[:2]:
                            break
                    if reply[2] & 0x02:
                        self.truncated += 1
                    else:
                        self.latencies.append(time.perf_counter() - started)
                except TimeoutError:
                    self.lost += 1
                self.stopping.wait(self.interval)

    def summary(self) -> dict:
        ordered = sorted(self.latencies)
        if not ordered:
            return {
                "probes": self.lost + self.truncated,
                "probe_lost": self.lost + self.truncated,
                "p50_ms": None,
                "p99_ms": None,
            }
        return {
            "probes": len(ordered) + self.lost + self.truncated,
            "probe_lost": self.lost + self.truncated,  # no answer, or an empty TC=1 one
            "p50_ms": round(statistics.median(ordered) * 1000, 3),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
        }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_dnsperf(
    server: tuple[str, int],
    queries: Path,
    rate: int,
    duration: float,
    source: str = "127.0.0.1",
    edns: bool = False,
    once: bool = True,
) -> dict:
    """dnsperf at ``rate`` for ``duration``: sent, completed, lost and the average sizes.
    ``once``: go through the query file at most once (for files of names never to repeat)."""
    command = [
        DNSPERF,
        "-s",
        server[0],
        "-p",
        str(server[1]),
        "-a",
        source,
        "-d",
        str(queries),
        "-l",
        f"{duration:g}",
        *(["-n", "1"] if once else []),
        "-Q",
        str(rate),
        "-q",
        "2000",
        "-t",
        "1",
        "-b",
        "4096",
        "-O",
        "suppress=timeouts,congestion,sendfailed,sockready,unexpected",
    ]
    if edns:
        command.append("-e")
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 30)
    if done.returncode != 0:
        raise RuntimeError(f"dnsperf failed ({done.returncode}):\n{done.stderr}{done.stdout}")
    result: dict = {}
    for key, pattern in _SUMMARY.items():
        match = re.search(pattern, done.stdout)
        if match is None:
            raise RuntimeError(f"no {key!r} in dnsperf's output:\n{done.stdout[-2000:]}")
        result[key] = int(match.group(1))
    match = re.search(r"Average packet size:\s+request (\d+), response (\d+)", done.stdout)
    result["request_size"], result["response_size"] = (
        (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    )
    return result


def _send_flood(address, packet: bytes, rate: int, duration: float, source: str, out) -> None:
    """The body of ``python_flood``'s sender process."""
    sent = received = received_bytes = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        sock.bind((source, 0))
        sock.setblocking(False)
        started = time.monotonic()
        end = started + duration
        step = max(1, rate // 1000)  # send in slices of a millisecond's worth
        while True:
            now = time.monotonic()
            if now >= end:
                break
            due = int((now - started) * rate)
            while sent < due:
                for _ in range(min(step, due - sent)):
                    try:
                        sock.sendto(
                            packet[:0] + bytes((sent >> 8 & 0xFF, sent & 0xFF)) + packet[2:],
                            address,
                        )
                    except BlockingIOError:
                        pass
                    sent += 1
            while True:
                try:
                    received_bytes += len(sock.recv(65535))
                    received += 1
                except BlockingIOError:
                    break
            time.sleep(0.0005)
        drain_until = time.monotonic() + 0.5
        while time.monotonic() < drain_until:
            try:
                received_bytes += len(sock.recv(65535))
                received += 1
            except BlockingIOError:
                time.sleep(0.005)
    out.put(
        {
            "sent": sent,
            "sent_bytes": sent * len(packet),
            "received": received,
            "received_bytes": received_bytes,
        }
    )


def python_flood(address, packet: bytes, rate: int, duration: float, source: str) -> dict:
    """Send ``packet`` (its ID varied) at ``rate`` a second for ``duration`` seconds from
    ``source`` in a process of its own, reading every reply; the counts and octets both ways.
    Unlike dnsperf it keeps no state per query, so dropped replies cost it nothing."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    out = context.Queue()
    process = context.Process(
        target=_send_flood, args=(address, packet, rate, duration, source, out)
    )
    process.start()
    result = out.get(timeout=duration + 30)
    process.join(10)
    return result


def flood_file(path: Path, kind: str, count: int, rng: random.Random) -> None:
    suffix = ".apps.example.test." if kind == "wildcard" else ".example.test."
    with open(path, "w") as out:
        for _ in range(count):
            label = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=12))
            out.write(f"{label}{suffix} A\n")


def measure(server: LbdnsProcess, queries: Path, rate: int, duration: float) -> dict:
    address = server.dns[0]
    probe = Probe(address)
    probe.start()
    time.sleep(0.2)
    before = cpu_seconds(server.proc.pid)
    flood = run_dnsperf(address, queries, rate, duration)
    cpu = cpu_seconds(server.proc.pid) - before
    probe.stopping.set()
    probe.join()
    answered = max(1, flood["completed"])
    return {
        "offered_qps": round(flood["sent"] / duration),
        "answered_qps": round(flood["completed"] / duration),
        "lost": flood["lost"],
        "cpu_us_per_query": round(cpu / answered * 1e6, 1),
        **probe.summary(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=10_000, help="flood queries per second")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per flood")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    if shutil.which(DNSPERF) is None:
        print("needs dnsperf (apt-get install dnsperf)", file=sys.stderr)
        return 2
    rng = random.Random(20)
    results: dict[str, list[dict]] = {"wildcard": [], "nxdomain": []}
    with tempfile.TemporaryDirectory(prefix="lbdns-flood-") as work:
        tmp = Path(work)
        count = int(args.rate * args.duration * 1.2) + 100
        with LbdnsProcess(tmp, zones=EXAMPLE_ZONES, http=None) as server:
            for round_number in range(args.rounds):
                kinds = (
                    ("wildcard", "nxdomain") if round_number % 2 == 0 else ("nxdomain", "wildcard")
                )
                for kind in kinds:
                    queries = tmp / f"{kind}.txt"
                    flood_file(queries, kind, count, rng)  # new names every round
                    results[kind].append(measure(server, queries, args.rate, args.duration))
    print(f"random-name floods at {args.rate} q/s for {args.duration:g} s, {args.rounds} rounds")
    print(f"(medians of the rounds; {load_note()})")
    header = f"{'flood':10} {'offered':>8} {'answered':>8} {'lost':>6} {'CPU/query':>10}"
    print(header + f" {'probe p50':>10} {'probe p99':>10} {'probe lost':>10}")
    summary = {}
    for kind, rounds in results.items():
        row = {
            key: statistics.median(r[key] for r in rounds)
            for key in rounds[0]
            if rounds[0][key] is not None
        }
        summary[kind] = row
        print(
            f"{kind:10} {row['offered_qps']:>8.0f} {row['answered_qps']:>8.0f} {row['lost']:>6.0f}"
            f" {row['cpu_us_per_query']:>8.1f}us {row.get('p50_ms', float('nan')):>8.3f}ms"
            f" {row.get('p99_ms', float('nan')):>8.3f}ms {row['probe_lost']:>10.0f}"
        )
    ratio = summary["wildcard"]["cpu_us_per_query"] / max(
        0.1, summary["nxdomain"]["cpu_us_per_query"]
    )
    print(f"wildcard / NXDOMAIN CPU per name: {ratio:.2f} (target <= 1.2)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": vars(args) | {"json": str(args.json)},
                    "rounds": results,
                    "median": summary,
                    "ratio": ratio,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
