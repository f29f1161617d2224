"""DNS speed: lbdns against NSD serving the same zone, measured with dnsperf in one run.

    .venv/bin/python benchmarks/dns_speed.py [--rounds N] [--duration S] [--workers 1|2]
                                             [--quick] [--keyed] [--json FILE]

The figure to lead with is the **server CPU time per query at the same offered rate**
(``dnsperf -Q``, 60k and 100k queries a second by default): a maximum-QPS ratio near 1 may only
mean that the load generator filled its core, so the generator's own CPU is printed beside every
run. CPU comes from ``/proc/PID/stat`` (utime + stime of the server's whole process tree; the
fields are read after the last ``)``, since NSD's process names, ``nsd: server 1``, hold spaces).

Both servers are started once, on free loopback ports, pinned to their CPU(s); dnsperf runs
pinned to another CPU when there is one. ``--workers N`` runs lbdns with ``workers: N`` and NSD
with ``server-count: N``. Each round, for both servers (alternating which goes first, so that
noise from the rest of the machine spreads over both):

1. a pause longer than the farm's TTL (``--pause``): a resolver that comes back after its cache
   expired is what raises its herd estimate, so every round after the first pause is answered
   for a *busy client* (herd > 2: the split search of least-load on every answer). The herd of
   the last answer is read from ``GET /v1/farms/{farm}/explain`` after each run and printed;
2. a saturating run (many outstanding queries): max QPS, CPU per query, generator CPU;
3. a run at each fixed offered rate (``--rates``): CPU per query, average latency, lost queries;
4. a run at half of NSD's max QPS of this round, the same rate for both: average and
   99th-percentile latency (per-query latencies from ``dnsperf -v``) and lost queries.

Then every round, the median of the rounds, the ratios lbdns/NSD and the targets. NSD gets the
zone as an RFC 1035 zone file written from the same YAML; a farm name becomes a static RRset of
as many records as lbdns puts in an answer (the first hosts), so both servers send answers of the
same size. NSD's response rate limiting is turned off.

``--keyed`` adds a farm ``rooms`` with ``policy: consistent-hash`` (the hosts of the first farm)
and ``KEYED_NAMES`` key labels under it (``room<i>.rooms``, A and AAAA) to the mix, a quarter of
the queries; NSD answers those names from a static wildcard ``*.rooms`` of the same size.

``--baseline-tree DIR`` and/or ``--baseline-config FILE`` add a third server, ``base``: lbdns
from another source tree (a worktree of an earlier commit) or with another config, measured in
the same rounds, so a before/after or on/off comparison shares the machine's noise. Its rows
are printed beside the others, then lbdns/base per round and the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lbdns.zone.model import Zone
from lbdns.zone.parse import load_file

ROOT = Path(__file__).resolve().parent.parent

NSD = "/usr/sbin/nsd"
DNSPERF = "dnsperf"
# lbdns/NSD: max QPS at least, CPU per query at fixed rates at most, p99 at half NSD's max at most
TARGETS = {"qps": 0.9, "cpu": 1.5, "p99": 1.2}
BUSY_HERD = 2.0  # above this herd estimate least-load runs its split search on every answer
GENERATOR_BOUND = 0.9  # dnsperf busier than this share of a core: it, not the server, is the limit

# The query file, in order: half farm names (A, AAAA, and one through a CNAME), half static names
# (an address, MX at the apex, SRV) and names that do not exist. A and AAAA of the farm name
# follow each other, as a resolver asks them.
QUERY_MIX = (
    ("chat", "A"),
    ("chat", "AAAA"),
    ("mail", "A"),
    ("www", "A"),
    ("nope", "A"),
    ("@", "MX"),
    ("chat", "A"),
    ("chat", "AAAA"),
    ("_sip._tcp", "SRV"),
    ("chat", "A"),
    ("x.nope", "AAAA"),
    ("mail", "A"),
)

KEYED_FARM = "rooms"
KEYED_NAMES = 32


# -- setup --------------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port free for both UDP and TCP at the time of asking."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free loopback port")


def absolute(owner: str, origin: str) -> str:
    return origin if owner == "@" else f"{owner}.{origin}"


def query_file(zone: Zone, path: Path, keyed: bool = False) -> int:
    mix = list(QUERY_MIX)
    if keyed:
        # The standard mix four times, with a key label (A, then AAAA) after every third query.
        mix = []
        for i in range(KEYED_NAMES):
            mix.extend(QUERY_MIX[(3 * i) % len(QUERY_MIX) : (3 * i) % len(QUERY_MIX) + 3])
            mix.append((f"room{i}.{KEYED_FARM}", "A" if i % 2 == 0 else "AAAA"))
    lines = [f"{absolute(owner, zone.origin)} {qtype}" for owner, qtype in mix]
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


def keyed_zone(source: Path, target: Path) -> None:
    """``source`` with a keyed farm ``rooms`` of the first farm's hosts, written to ``target``."""
    data = yaml.safe_load(source.read_text())
    first = next(iter(data["farms"].values()))
    data["farms"][KEYED_FARM] = {
        "ttl": first.get("ttl", 5),
        "policy": "consistent-hash",
        "hosts": first["hosts"],
    }
    target.write_text(yaml.safe_dump(data, sort_keys=False))


def nsd_zone_text(zone: Zone) -> str:
    """The zone as an RFC 1035 zone file; farm names as static RRsets of the first hosts."""
    lines = [f"$ORIGIN {zone.origin}", zone.soa.toZone()]
    for rrsets in zone.rrsets.values():
        for rtype, rrs in rrsets.items():
            if rtype == 6:  # the SOA is written first, once
                continue
            lines += [rr.toZone() for rr in rrs]
    for name, farm in zone.farms.items():
        for attribute, rtype in (("a", "A"), ("aaaa", "AAAA")):
            addresses = [a for host in farm.hosts for a in getattr(host, attribute)]
            lines += [f"{name} {farm.ttl} IN {rtype} {a}" for a in addresses[: farm.answers]]
            if farm.keyed:  # every key label: one host, from a static wildcard
                lines += [f"*.{name} {farm.ttl} IN {rtype} {a}" for a in addresses[:1]]
    return "\n".join(lines) + "\n"


def nsd_conf(work: Path, port: int, origin: str, zonefile: Path, servers: int = 1) -> str:
    return f"""server:
  server-count: {servers}
  ip-address: 127.0.0.1
  port: {port}
  do-ip6: no
  username: ""
  chroot: ""
  zonesdir: "{work}"
  pidfile: "{work}/nsd.pid"
  database: ""
  xfrdfile: "{work}/xfrd.state"
  xfrdir: "{work}"
  zonelistfile: "{work}/zone.list"
  verbosity: 0
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: "{origin}"
  zonefile: "{zonefile}"
"""


def ask(port: int, name: str, qtype: int = 6) -> bytes | None:
    """One UDP query (SOA unless told) from 127.0.0.1; the reply, or None."""
    wire = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".") if label)
    query = (
        struct.pack("!HHHHHH", 0x4242, 0, 1, 0, 0, 0)
        + wire
        + b"\x00"
        + struct.pack("!HH", qtype, 1)
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        try:
            sock.sendto(query, ("127.0.0.1", port))
            reply = sock.recv(4096)
        except OSError:
            return None
    return reply if reply[:2] == b"\x42\x42" else None


def probe(port: int, origin: str) -> bool:
    """True once something answers a SOA query for the zone on the port."""
    return ask(port, origin) is not None


@dataclass
class DnsServer:
    name: str
    command: Callable[[int], list[str]]  # the command line for a port
    ready: str  # what the server logs once it listens, {port} standing for its port
    log: Path
    port: int = 0
    proc: subprocess.Popen | None = None
    rounds: list[dict] = field(default_factory=list)
    explain: Callable[[], float | None] | None = None  # the last answer's herd (lbdns only)

    def start(self, origin: str, env: dict[str, str] | None = None, cwd: Path | None = None):
        """Start on a free port; another free port if someone took that one in the meantime."""
        for attempt in range(3):
            self.port = free_port()
            try:
                return self._start(origin, env, cwd)
            except RuntimeError:
                self.stop()
                if attempt == 2:
                    raise

    def _start(self, origin: str, env: dict[str, str] | None, cwd: Path | None) -> None:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(self.port), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log.read_text(errors='replace')}")
            # Its own ready line first: a probe alone could be answered by whoever else holds
            # the port, while this server fails to bind it.
            text = self.log.read_text(errors="replace")
            if self.ready.format(port=self.port) in text and probe(self.port, origin):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer:\n{self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cpu_seconds(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the server and its children (NSD serves from one)."""
        assert self.proc is not None
        stats = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                text = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            fields = text[text.rindex(")") + 2 :].split()
            # after the command: state ppid ... utime (11) stime (12), in clock ticks
            stats[int(entry.name)] = (int(fields[1]), int(fields[11]), int(fields[12]))
        tree = {self.proc.pid}
        grew = True
        while grew:
            grew = False
            for pid, (ppid, _, _) in stats.items():
                if ppid in tree and pid not in tree:
                    tree.add(pid)
                    grew = True
        tick = os.sysconf("SC_CLK_TCK")
        found = [stats[pid] for pid in tree if pid in stats]
        return sum(s[1] for s in found) / tick, sum(s[2] for s in found) / tick


# -- measuring ----------------------------------------------------------------------------------

_SUMMARY = {
    "sent": r"Queries sent:\s+(\d+)",
    "completed": r"Queries completed:\s+(\d+)",
    "lost": r"Queries lost:\s+(\d+)",
    "qps": r"Queries per second:\s+([\d.]+)",
    "avg_latency": r"Average Latency \(s\):\s+([\d.]+)",
}
_RCODES = re.compile(r"Response codes:\s+(.*)")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def dnsperf(
    args: argparse.Namespace,
    port: int,
    queries: Path,
    duration: float,
    rate: float = 0,
    latencies: bool = False,
) -> dict:
    """One dnsperf run; its own CPU time (the generator's) is in ``generator_cpu``."""
    command = [
        *args.client_pin,
        DNSPERF,
        "-s",
        "127.0.0.1",
        "-p",
        str(port),
        "-d",
        str(queries),
        "-l",
        f"{duration:g}",
        "-c",
        str(args.clients),
        "-q",
        str(args.paced_outstanding if rate else args.outstanding),
        "-t",
        "2",
        "-b",
        "2048",
        "-O",
        "suppress=timeouts,congestion,sendfailed,sockready,unexpected",
    ]
    if args.edns:
        command.append("-e")
    if rate:
        command += ["-Q", str(int(rate))]
    if latencies:
        command.append("-v")
    # The per-query lines of -v go to a file: a pipe that fills up would stall dnsperf and
    # inflate the latencies it measures.
    output = args.work / "dnsperf.out"
    generator_before = _children_cpu()
    # Generous: dnsperf sharing its CPU with the servers (two workers on two cores) and writing
    # a -v line per query can run well past its -l.
    with open(output, "w") as out:
        done = subprocess.run(
            command, stdout=out, stderr=subprocess.PIPE, text=True, timeout=3 * duration + 60
        )
    generator_cpu = _children_cpu() - generator_before
    stdout = output.read_text()
    if done.returncode != 0:
        raise RuntimeError(f"dnsperf failed ({done.returncode}):\n{done.stderr}{stdout[-2000:]}")
    result: dict = {"generator_cpu": generator_cpu}
    for key, pattern in _SUMMARY.items():
        match = re.search(pattern, stdout)
        if match is None:
            raise RuntimeError(f"no {key!r} in dnsperf's output:\n{stdout[-2000:]}")
        result[key] = float(match.group(1))
    match = _RCODES.search(stdout)
    result["rcodes"] = re.sub(r" \([\d.]+%\)", "", match.group(1)) if match else ""
    if latencies:
        values = sorted(
            float(line.rsplit(None, 1)[1]) for line in stdout.splitlines() if line.startswith("> ")
        )
        result["p99_latency"] = (
            values[min(len(values) - 1, int(len(values) * 0.99))] if values else 0.0
        )
    return result


def run(
    args: argparse.Namespace,
    server: DnsServer,
    queries: Path,
    duration: float,
    rate: float = 0,
    latencies: bool = False,
) -> dict:
    """One dnsperf run against ``server`` with the server's CPU per answered query."""
    user, system = server.cpu_seconds()
    result = dnsperf(args, server.port, queries, duration, rate, latencies)
    user_after, system_after = server.cpu_seconds()
    user, system = user_after - user, system_after - system
    answered = max(1.0, result["completed"])
    out = {
        "offered": rate or None,
        "qps": result["qps"],
        "completed": int(result["completed"]),
        "lost": int(result["lost"]),
        "avg_latency_us": result["avg_latency"] * 1e6,
        "cpu_us_per_query": (user + system) * 1e6 / answered,
        "user_us_per_query": user * 1e6 / answered,
        "kernel_us_per_query": system * 1e6 / answered,
        "server_busy": (user + system) / duration,
        "generator_busy": result["generator_cpu"] / duration,
        "rcodes": result["rcodes"],
    }
    if latencies:
        out["p99_latency_us"] = result["p99_latency"] * 1e6
    if server.explain is not None:
        out["herd"] = server.explain()
    return out


def last_herd(dns_port: int, http_port: int, farm: str) -> float | None:
    """The herd estimate lbdns holds for the benchmark's client (127.0.0.1) on ``farm``.

    The last answer of a run may have been "sticky" (an A after its AAAA or the reverse, same
    host, no herd), so first an AAAA query for the farm, then an A, from the same address as
    dnsperf's, until one is charged and ``last_answer.herd`` of the explain endpoint shows the
    estimate. (Within the cache time, these queries do not change it.) With several workers the
    endpoint shows the main process's last answer, and a query from a new socket reaches it only
    sometimes: a few more tries.
    """
    url = f"http://127.0.0.1:{http_port}/v1/farms/{farm}/explain"
    herd = None
    for qtype in (28, 1) * 16:
        ask(dns_port, farm, qtype)
        with urllib.request.urlopen(url, timeout=5) as reply:
            last = json.load(reply).get("last_answer")
        herd = None if last is None else float(last["herd"])
        if herd:
            break
    return herd


def worker_queries(http_port: int) -> dict[str, float]:
    """Queries received per lbdns worker so far (``lbdns_dns_worker_queries_total``)."""
    url = f"http://127.0.0.1:{http_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    return {
        worker: float(count)
        for worker, count in re.findall(
            r'^lbdns_dns_worker_queries_total\{worker="(\d+)"\} (\S+)$', text, re.M
        )
    }


def shares(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    counts = {w: after[w] - before.get(w, 0.0) for w in after}
    total = sum(counts.values())
    return {w: c / total for w, c in sorted(counts.items())} if total else {}


# -- reporting ----------------------------------------------------------------------------------


def _rate_label(rate: float) -> str:
    return f"{rate / 1000:g}k/s"


def rows(args: argparse.Namespace) -> list[tuple[str, str, str, str]]:
    """(run, figure, label, format) of the median table, the figure to lead with first."""
    out = []
    for rate in args.rates:
        out.append(
            (f"at {rate}", "cpu_us_per_query", f"CPU us/query at {_rate_label(rate)}", "{:.2f}")
        )
    out += [
        ("max", "qps", "max QPS", "{:,.0f}"),
        ("max", "cpu_us_per_query", "server CPU us/query", "{:.2f}"),
        ("max", "user_us_per_query", "  in the process (user)", "{:.2f}"),
        ("max", "kernel_us_per_query", "  in the kernel (system)", "{:.2f}"),
        ("max", "server_busy", "server CPU busy at max", "{:.0%}"),
        ("max", "generator_busy", "dnsperf CPU busy at max", "{:.0%}"),
        ("max", "lost", "lost at max", "{:.0f}"),
    ]
    for rate in args.rates:
        label = _rate_label(rate)
        out += [
            (f"at {rate}", "qps", f"answered q/s at {label}", "{:,.0f}"),
            (f"at {rate}", "avg_latency_us", f"avg latency at {label} (us)", "{:.0f}"),
            (f"at {rate}", "lost", f"lost at {label}", "{:.0f}"),
            (f"at {rate}", "generator_busy", f"dnsperf CPU busy at {label}", "{:.0%}"),
        ]
    out += [
        ("half", "qps", "q/s at half NSD max", "{:,.0f}"),
        ("half", "avg_latency_us", "avg latency at half (us)", "{:.0f}"),
        ("half", "p99_latency_us", "p99 latency at half (us)", "{:.0f}"),
        ("half", "lost", "lost at half NSD max", "{:.0f}"),
    ]
    return out


def median(server: DnsServer, which: str, key: str) -> float:
    return statistics.median(r[which][key] for r in server.rounds)


def _ratio(mine: float, theirs: float) -> float | None:
    return mine / theirs if theirs else None


def report(args: argparse.Namespace, lbdns: DnsServer, nsd: DnsServer) -> dict:
    rates = args.rates
    print()
    print("every round (CPU in us per answered query; busy = share of one core):")
    heading = f"{'round':<6}{'server':<7}{'herd':>6}{'max QPS':>10}{'us/q':>7}{'gen':>6}"
    for rate in rates:
        heading += f"{'us/q@' + _rate_label(rate):>13}{'lost':>6}{'gen':>6}"
    heading += f"{'half q/s':>10}{'p99 us':>8}{'lost':>6}"
    print(heading)
    shown = [lbdns, nsd] + ([args.base] if args.base else [])
    for index in range(args.rounds):
        for server in shown:
            r = server.rounds[index]
            herd = r["max"].get("herd")
            line = (
                f"{index + 1:<6}{server.name:<7}{'-' if herd is None else f'{herd:.1f}':>6}"
                f"{r['max']['qps']:>10,.0f}{r['max']['cpu_us_per_query']:>7.2f}"
                f"{r['max']['generator_busy']:>6.0%}"
            )
            for rate in rates:
                at = r[f"at {rate}"]
                line += (
                    f"{at['cpu_us_per_query']:>13.2f}{at['lost']:>6}{at['generator_busy']:>6.0%}"
                )
            half = r["half"]
            line += f"{half['qps']:>10,.0f}{half['p99_latency_us']:>8.0f}{half['lost']:>6}"
            print(line)
    if args.workers > 1:
        print()
        print("lbdns queries per worker (share of the round's queries):")
        for index, r in enumerate(lbdns.rounds):
            spread = ", ".join(f"worker {w} {v:.0%}" for w, v in r["worker_share"].items())
            print(f"  round {index + 1}: {spread}")
    print()
    print("lbdns/NSD per round:")
    per_round = []
    for index in range(args.rounds):
        mine, theirs = lbdns.rounds[index], nsd.rounds[index]
        ratios = {"qps": _ratio(mine["max"]["qps"], theirs["max"]["qps"])}
        for rate in rates:
            key = f"at {rate}"
            ratios[f"cpu {key}"] = _ratio(
                mine[key]["cpu_us_per_query"], theirs[key]["cpu_us_per_query"]
            )
        ratios["p99 half"] = _ratio(
            mine["half"]["p99_latency_us"], theirs["half"]["p99_latency_us"]
        )
        per_round.append(ratios)
        herd = mine["max"].get("herd")
        busy = "busy client" if herd is not None and herd > BUSY_HERD else "one-record path"
        text = ", ".join(
            f"{key} {'-' if value is None else f'{value:.2f}x'}" for key, value in ratios.items()
        )
        print(
            f"  round {index + 1} ({busy}, herd {herd if herd is None else round(herd, 2)}): {text}"
        )
    if args.base is not None:
        summary_base = compare_base(args, lbdns, args.base)
    print()
    print(f"median of {args.rounds} round(s):")
    print(f"  {'':<30}{'lbdns':>10}{'NSD':>10}{'lbdns/NSD':>11}")
    summary: dict = {"lbdns": {}, "nsd": {}, "ratio": {}, "per_round": per_round}
    for which, key, label, fmt in rows(args):
        mine, theirs = median(lbdns, which, key), median(nsd, which, key)
        ratio = _ratio(mine, theirs)
        name = f"{which} {key}"
        summary["lbdns"][name], summary["nsd"][name], summary["ratio"][name] = mine, theirs, ratio
        shown = f"{ratio:.2f}x" if ratio is not None else "-"
        print(f"  {label:<30}{fmt.format(mine):>10}{fmt.format(theirs):>10}{shown:>11}")
    print()
    herds = [r["max"].get("herd") for r in lbdns.rounds]
    busy_rounds = [i + 1 for i, h in enumerate(herds) if h is not None and h > BUSY_HERD]
    cpu_ratios = [r[f"cpu at {rate}"] for r in per_round for rate in rates]
    p99_ratios = [r["p99 half"] for r in per_round]
    half_lost = sum(r["half"]["lost"] for r in lbdns.rounds)
    verdicts = {
        f"CPU/query <= {TARGETS['cpu']}x NSD at "
        + " and ".join(_rate_label(rate) for rate in rates)
        + " (every round)": all(x is not None and x <= TARGETS["cpu"] for x in cpu_ratios),
        f"max QPS >= {TARGETS['qps']}x NSD (medians)": (summary["ratio"]["max qps"] or 0.0)
        >= TARGETS["qps"],
        f"p99 at half NSD max <= {TARGETS['p99']}x NSD (median of the rounds' ratios)": (
            statistics.median(x for x in p99_ratios if x is not None) <= TARGETS["p99"]
            if any(x is not None for x in p99_ratios)
            else False
        ),
        "no lost queries at half NSD max (all rounds)": half_lost == 0,
        f"a busy-client round (herd > {BUSY_HERD:g}) was measured": bool(busy_rounds),
    }
    if args.workers > 1:
        least = 0.7 / args.workers  # 35 % each of two workers
        verdicts[f"each of {args.workers} workers >= {least:.0%} of the queries (every round)"] = (
            all(
                len(r["worker_share"]) == args.workers and min(r["worker_share"].values()) >= least
                for r in lbdns.rounds
            )
        )
    print("targets:")
    for text, ok in verdicts.items():
        print(f"  {'met ' if ok else 'MISSED'}  {text}")
    if not busy_rounds:
        print(
            "  (no busy-client round: dnsperf re-asks the same names from one address at once, "
            "and a client that re-asks within the TTL is a direct asker with a herd of 1, not a "
            "caching resolver; benchmarks/split_path.py measures the split path in process)"
        )
    bound = [
        f"{server.name} round {i + 1}"
        for server in (lbdns, nsd)
        for i, r in enumerate(server.rounds)
        if r["max"]["generator_busy"] >= GENERATOR_BOUND
    ]
    if bound:
        print(
            f"generator-bound max runs (dnsperf >= {GENERATOR_BOUND:.0%} of a core): "
            + ", ".join(bound)
            + "; their max QPS is dnsperf's limit, not the server's"
        )
    short = [
        f"{server.name} at {_rate_label(rate)} round {i + 1} ({r[f'at {rate}']['qps']:,.0f} q/s)"
        for server in (lbdns, nsd)
        for i, r in enumerate(server.rounds)
        for rate in rates
        if r[f"at {rate}"]["qps"] < 0.97 * rate
    ]
    if short:
        print(
            "offered rate not reached (CPU per query then compares unequal loads): "
            + "; ".join(short)
        )
    lb_rcodes, nsd_rcodes = lbdns.rounds[-1]["max"]["rcodes"], nsd.rounds[-1]["max"]["rcodes"]
    print(f"response codes (last round): lbdns {lb_rcodes}; NSD {nsd_rcodes}")
    summary["targets"] = verdicts
    summary["busy_rounds"] = busy_rounds
    if args.base is not None:
        summary["base"] = summary_base
    return summary


def compare_base(args: argparse.Namespace, lbdns: DnsServer, base: DnsServer) -> dict:
    """lbdns against the baseline server of the same rounds: per round, then the medians."""
    print()
    print("lbdns/base per round (below 1.00x: lbdns cheaper or faster than base):")
    keys = [(f"at {rate}", "cpu_us_per_query", f"cpu at {rate}") for rate in args.rates]
    keys += [("max", "qps", "max qps"), ("max", "cpu_us_per_query", "cpu at max")]
    keys += [("half", "p99_latency_us", "p99 half")]
    per_round = []
    for index in range(args.rounds):
        mine, theirs = lbdns.rounds[index], base.rounds[index]
        ratios = {label: _ratio(mine[w][k], theirs[w][k]) for w, k, label in keys}
        per_round.append(ratios)
        text = ", ".join(f"{k} {'-' if v is None else f'{v:.3f}x'}" for k, v in ratios.items())
        print(f"  round {index + 1}: {text}")
    medians = {label: _ratio(median(lbdns, w, k), median(base, w, k)) for w, k, label in keys}
    text = ", ".join(f"{k} {'-' if v is None else f'{v:.3f}x'}" for k, v in medians.items())
    print(f"  medians: {text}")
    return {"per_round": per_round, "medians": medians}


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    nsd_version = subprocess.run([NSD, "-v"], capture_output=True, text=True)
    dnsperf_version = subprocess.run([DNSPERF, "-h"], capture_output=True, text=True)
    version = re.search(r"Version (\S+)", dnsperf_version.stdout + dnsperf_version.stderr)
    try:
        import uvloop

        loop = f"uvloop {uvloop.__version__}"
    except ImportError:
        loop = "asyncio"
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loop": loop,
        "nsd": (nsd_version.stdout + nsd_version.stderr).split("\n", 1)[0].strip(),
        "dnsperf": version.group(1) if version else "?",
        "load_average": os.getloadavg(),
    }


def knows_workers(tree: Path) -> bool:
    """Whether the lbdns of ``tree`` has the ``workers`` setting (a tree from before it would
    refuse the key; it served from one process)."""
    config = tree / "lbdns" / "config.py"
    return config.exists() and "workers" in config.read_text()


def busiest_farm(zone: Zone) -> str:
    """The farm the query mix asks most often (the one whose herd is printed)."""
    counts: dict[str, int] = {}
    for owner, _ in QUERY_MIX:
        name = absolute(owner, zone.origin)
        if name in zone.farms:
            counts[name] = counts.get(name, 0) + 1
    return max(counts, key=counts.get) if counts else next(iter(zone.farms), "")


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, help="rounds per server (default 3, quick 1)")
    p.add_argument(
        "--duration", type=float, help="seconds of each dnsperf run (default 8, quick 2)"
    )
    p.add_argument("--quick", action="store_true", help="fewer, shorter runs (about 30 s)")
    p.add_argument(
        "--rates",
        default="60000,100000",
        help="fixed offered rates, queries a second, comma-separated (default 60000,100000)",
    )
    p.add_argument(
        "--pause",
        type=float,
        help="seconds of silence before each round (default: the longest farm TTL + 1 s)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="lbdns workers (config 'workers') and NSD server-count (default 1)",
    )
    p.add_argument(
        "--clients",
        type=int,
        help="dnsperf -c (default 4; 8 per worker with --workers > 1: the kernel spreads "
        "queries over the workers by socket, and 4 sockets split 3:1 as often as 2:2)",
    )
    p.add_argument("--outstanding", type=int, default=400, help="dnsperf -q (default 400)")
    p.add_argument(
        "--paced-outstanding",
        type=int,
        default=300,
        help="dnsperf -q for the runs at a fixed rate (default 300: more than rate x latency "
        "needs, so the rate is met; more only adds dnsperf's own queueing to the latencies)",
    )
    p.add_argument("--no-edns", dest="edns", action="store_false", help="plain DNS queries")
    p.add_argument("--zone", type=Path, default=ROOT / "zones" / "example.test.yaml")
    p.add_argument(
        "--lbdns-config", type=Path, help="a config file for lbdns (e.g. udp_batch: false)"
    )
    p.add_argument(
        "--server-cpus",
        help="CPUs for the servers, comma-separated (default: the first --workers CPUs)",
    )
    p.add_argument(
        "--client-cpu", type=int, help="CPU for dnsperf (default: the next CPU after the servers')"
    )
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, zone files)")
    p.add_argument(
        "--keyed", action="store_true", help="a consistent-hash farm's key labels in the mix"
    )
    p.add_argument(
        "--baseline-tree",
        type=Path,
        help="also run lbdns from this source tree (e.g. a git worktree of an earlier commit) "
        "as server 'base', in the same rounds: a same-run before/after",
    )
    p.add_argument(
        "--baseline-config",
        type=Path,
        help="also run lbdns with this config as server 'base' (with --baseline-tree: that "
        "tree with this config), e.g. rate limiting and cookies off against on",
    )
    args = p.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (2.0 if args.quick else 8.0)
    args.rates = [int(r) for r in str(args.rates).split(",") if r.strip()]
    args.warm_up = min(1.0, args.duration)
    if args.clients is None:
        args.clients = 4 if args.workers == 1 else 8 * args.workers
    if args.workers < 1:
        p.error("--workers must be at least 1")
    return args


def pinning(args: argparse.Namespace) -> tuple[list[str], list[str], str]:
    """taskset prefixes for the servers and for dnsperf, and a sentence saying how."""
    cpus = sorted(os.sched_getaffinity(0))
    if shutil.which("taskset") is None:
        return [], [], "NOT pinned (taskset missing): figures mix servers and generator"
    if args.server_cpus:
        servers = [int(c) for c in args.server_cpus.split(",")]
    else:
        servers = cpus[: args.workers]
    rest = [c for c in cpus if c not in servers]
    client = args.client_cpu if args.client_cpu is not None else (rest[0] if rest else None)
    server_list = ",".join(map(str, servers))
    if client is None or client in servers:
        how = (
            f"servers on CPU {server_list}; dnsperf NOT on a CPU of its own (too few CPUs): "
            "it competes with the servers, max QPS is shared with it"
        )
        return ["taskset", "-c", server_list], [], how
    how = (
        f"pinned with taskset: servers on CPU {server_list}, dnsperf on CPU {client}, so no "
        "server competes with the load generator"
    )
    return ["taskset", "-c", server_list], ["taskset", "-c", str(client)], how


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in (NSD, DNSPERF):
        if shutil.which(tool) is None:
            print(f"dns_speed: {tool} not found (Debian packages nsd, dnsperf)", file=sys.stderr)
            return 2
    server_pin, args.client_pin, pinned = pinning(args)

    work = args.work = Path(tempfile.mkdtemp(prefix="lbdns-speed-"))
    zones_dir = work / "zones"
    zones_dir.mkdir()
    if args.keyed:
        keyed_zone(args.zone, zones_dir / args.zone.name)
    else:
        shutil.copy(args.zone, zones_dir / args.zone.name)
    zone = load_file(zones_dir / args.zone.name)
    farm = busiest_farm(zone)
    ttl = max((f.ttl for f in zone.farms.values()), default=0)
    pause = args.pause if args.pause is not None else ttl + 1.0
    info = machine()
    queries = work / "queries.txt"
    names = query_file(zone, queries, args.keyed)
    zonefile = work / "zone.db"
    zonefile.write_text(nsd_zone_text(zone))
    conf = work / "nsd.conf"
    settings = yaml.safe_load(args.lbdns_config.read_text()) if args.lbdns_config else {}
    settings = dict(settings or {})
    # Always written: lbdns's own default is one worker per CPU, NSD's one server.
    settings["workers"] = args.workers
    lbdns_conf = work / "lbdns.yaml"
    lbdns_conf.write_text(yaml.safe_dump(settings))
    http_port = free_port()

    def nsd_command(port: int) -> list[str]:
        conf.write_text(nsd_conf(work, port, zone.origin, zonefile, args.workers))
        return [*server_pin, NSD, "-d", "-c", str(conf)]

    def lbdns_command(port: int) -> list[str]:
        return [
            *server_pin,
            sys.executable,
            "-m",
            "lbdns",
            "serve",
            "--zones",
            str(zones_dir),
            "--dns",
            f"127.0.0.1:{port}",
            "--http",
            f"127.0.0.1:{http_port}",
            "--data-dir",
            str(work / "data"),
            "-c",
            str(lbdns_conf),
        ]

    base_http_port = free_port()
    base_tree = (args.baseline_tree or ROOT).resolve()
    base_conf = work / "base.yaml"
    base_settings = (
        dict(yaml.safe_load(args.baseline_config.read_text()) or {})
        if args.baseline_config
        else {k: v for k, v in settings.items() if k != "workers"}
    )
    if knows_workers(base_tree):
        # As for lbdns (the default may be every CPU), unless the baseline config sets it:
        # --workers 2 with a baseline config of workers: 1 compares two workers with one in
        # the same rounds.
        base_settings.setdefault("workers", args.workers)
    elif args.workers != 1:
        raise SystemExit(f"dns_speed: --workers {args.workers}: the baseline tree has no workers")
    base_conf.write_text(yaml.safe_dump(base_settings))

    def base_command(port: int) -> list[str]:
        command = lbdns_command(port)
        command[command.index(f"127.0.0.1:{http_port}")] = f"127.0.0.1:{base_http_port}"
        command[command.index(str(work / "data"))] = str(work / "base-data")
        command[-1] = str(base_conf)
        return command

    nsd = DnsServer("NSD", nsd_command, "nsd started", work / "nsd.out")
    lbdns = DnsServer("lbdns", lbdns_command, "ready dns=127.0.0.1:{port} ", work / "lbdns.out")
    lbdns.explain = lambda: last_herd(lbdns.port, http_port, farm)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = None
    if args.baseline_tree or args.baseline_config:
        base = DnsServer("base", base_command, "ready dns=127.0.0.1:{port} ", work / "base.out")
        base.explain = lambda: last_herd(base.port, base_http_port, farm)
    args.base = base
    servers = [lbdns, nsd] + ([base] if base else [])

    print(
        f"dns_speed: {args.rounds} round(s); per server and round a {pause:g} s pause (farm TTL "
        f"{ttl} s), {args.duration:g} s at max rate, {args.duration:g} s at each of "
        + ", ".join(f"{r:,}" for r in args.rates)
        + f" q/s and at half NSD's max; workers {args.workers} (NSD server-count "
        f"{args.workers}); dnsperf {info['dnsperf']} -c {args.clients} -q {args.outstanding} "
        f"(-q {args.paced_outstanding} when paced){' with EDNS0' if args.edns else ', no EDNS'}; "
        f"{names} queries in the mix ({zone.origin}), herd read from farm {farm}"
    )
    print(pinned)
    print(
        f"machine: {info['cpus']} x {info['cpu']}, Linux {info['kernel']}, Python "
        f"{info['python']} ({info['loop']}), {info['nsd']}; load average "
        + " ".join(f"{x:.2f}" for x in info["load_average"])
    )
    if base is not None:
        print(
            f"base: lbdns from {base_tree}"
            + (f" with {args.baseline_config}" if args.baseline_config else "")
            + " (same rounds; its rows are 'base')"
        )
    print("rerun: " + " ".join([sys.executable, *sys.argv]), flush=True)
    started = time.monotonic()
    try:
        nsd.start(zone.origin, cwd=work)
        lbdns.start(zone.origin, env=env, cwd=work)
        if base is not None:
            base.start(zone.origin, env={**os.environ, "PYTHONPATH": str(base_tree)}, cwd=work)
        for server in servers:  # warm caches and the template table
            dnsperf(args, server.port, queries, args.warm_up)
        for index in range(args.rounds):
            time.sleep(pause)  # longer than the TTL: the client comes back after its cache expired
            order = servers if index % 2 == 0 else servers[::-1]
            results = {server.name: {} for server in order}
            counted = worker_queries(http_port)
            for server in order:
                results[server.name]["max"] = run(args, server, queries, args.duration)
            for rate in args.rates:
                for server in order:
                    results[server.name][f"at {rate}"] = run(
                        args, server, queries, args.duration, rate
                    )
            half = results[nsd.name]["max"]["qps"] / 2
            for server in order:
                results[server.name]["half"] = run(
                    args, server, queries, args.duration, half, latencies=True
                )
            if args.workers > 1:
                time.sleep(1.2)  # the workers send their counters every second
            results[lbdns.name]["worker_share"] = shares(counted, worker_queries(http_port))
            for server in order:
                server.rounds.append(results[server.name])
            herd = results[lbdns.name]["max"].get("herd")
            print(f"  round {index + 1}/{args.rounds} done (lbdns herd {herd})", flush=True)
    finally:
        for server in servers:
            server.stop()
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    summary = report(args, lbdns, nsd)
    print(f"took {time.monotonic() - started:.0f} s")
    if args.json:
        summary.update(machine=info, rounds={server.name: server.rounds for server in servers})
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
