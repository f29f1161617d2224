"""DNS speed: lbdns against NSD serving the same zone, measured with dnsperf in one run.

    .venv/bin/python benchmarks/dns_speed.py [--rounds N] [--duration S] [--quick] [--json FILE]
                                             [--keyed]

Both servers are started once, on free loopback ports, pinned to one CPU; dnsperf runs pinned to
another, so a server never competes with the load generator for a core. Each round measures
both servers, alternating which goes first, so that noise from the rest of the machine (drift,
other jobs) spreads over both. Per server and round:

* a saturating run (many outstanding queries): QPS, average latency, lost queries, and the
  server's CPU time per answered query (utime + stime of its whole process tree, from /proc);
* a run at half of the QPS just measured (``dnsperf -Q``): lost queries and the average and
  99th-percentile latency, from the per-query latencies dnsperf prints with ``-v``.

The table shows the median of the rounds, the ratios lbdns/NSD and the issue's targets.
NSD gets the zone as an RFC 1035 zone file written from the same YAML; a farm name becomes a
static RRset of as many records as lbdns puts in an answer (the first hosts), so both servers
send answers of the same size. NSD's response rate limiting is turned off.

``--keyed`` adds a farm ``rooms`` with ``policy: consistent-hash`` (the hosts of the first farm)
and ``KEYED_NAMES`` key labels under it (``room<i>.rooms``, A and AAAA) to the mix, a quarter of
the queries; NSD answers those names from a static wildcard ``*.rooms`` of the same size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lbdns.zone.model import Zone
from lbdns.zone.parse import load_file

ROOT = Path(__file__).resolve().parent.parent

NSD = "/usr/sbin/nsd"
DNSPERF = "dnsperf"
TARGETS = {"qps": 0.9, "cpu": 1.5}  # lbdns/NSD: QPS at least, CPU per query at most

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
    import yaml

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


def nsd_conf(work: Path, port: int, origin: str, zonefile: Path) -> str:
    return f"""server:
  server-count: 1
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


def probe(port: int, origin: str) -> bool:
    """True once something answers a SOA query for the zone on the port."""
    wire = b"".join(bytes([len(label)]) + label.encode() for label in origin.split(".") if label)
    query = struct.pack("!HHHHHH", 0x4242, 0, 1, 0, 0, 0) + wire + b"\x00\x00\x06\x00\x01"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        try:
            sock.sendto(query, ("127.0.0.1", port))
            return sock.recv(4096)[:2] == b"\x42\x42"
        except OSError:
            return False


@dataclass
class DnsServer:
    name: str
    command: Callable[[int], list[str]]  # the command line for a port
    ready: str  # what the server logs once it listens, {port} standing for its port
    log: Path
    port: int = 0
    proc: subprocess.Popen | None = None
    rounds: list[dict] = field(default_factory=list)

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


def dnsperf(
    args: argparse.Namespace, port: int, queries: Path, duration: float, rate: float = 0
) -> dict:
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
        str(min(args.outstanding, args.paced_outstanding) if rate else args.outstanding),
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
        command += ["-Q", str(int(rate)), "-v"]
    # The per-query lines of -v go to a file: a pipe that fills up would stall dnsperf and
    # inflate the latencies it measures.
    output = args.work / "dnsperf.out"
    with open(output, "w") as out:
        done = subprocess.run(
            command, stdout=out, stderr=subprocess.PIPE, text=True, timeout=duration + 30
        )
    stdout = output.read_text()
    if done.returncode != 0:
        raise RuntimeError(f"dnsperf failed ({done.returncode}):\n{done.stderr}{stdout[-2000:]}")
    result: dict = {}
    for key, pattern in _SUMMARY.items():
        match = re.search(pattern, stdout)
        if match is None:
            raise RuntimeError(f"no {key!r} in dnsperf's output:\n{stdout[-2000:]}")
        result[key] = float(match.group(1))
    match = _RCODES.search(stdout)
    result["rcodes"] = re.sub(r" \([\d.]+%\)", "", match.group(1)) if match else ""
    if rate:
        latencies = sorted(
            float(line.rsplit(None, 1)[1]) for line in stdout.splitlines() if line.startswith("> ")
        )
        result["p99_latency"] = (
            latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0
        )
    return result


def measure(args: argparse.Namespace, server: DnsServer, queries: Path) -> dict:
    user, system = server.cpu_seconds()
    full = dnsperf(args, server.port, queries, args.duration)
    user_after, system_after = server.cpu_seconds()
    user, system = user_after - user, system_after - system
    cpu = user + system
    answered = max(1.0, full["completed"])
    half = dnsperf(args, server.port, queries, args.half_duration, rate=full["qps"] / 2)
    return {
        "qps": full["qps"],
        "avg_latency_us": full["avg_latency"] * 1e6,
        "lost": int(full["lost"]),
        "cpu_us_per_query": cpu * 1e6 / answered,
        "user_us_per_query": user * 1e6 / answered,
        "kernel_us_per_query": system * 1e6 / answered,
        "cpu_busy": cpu / args.duration,
        "rcodes": full["rcodes"],
        "half_qps": half["qps"],
        "half_lost": int(half["lost"]),
        "half_avg_latency_us": half["avg_latency"] * 1e6,
        "half_p99_latency_us": half["p99_latency"] * 1e6,
    }


# -- reporting ----------------------------------------------------------------------------------

ROWS = (
    # key, label, format, better
    ("qps", "max QPS", "{:,.0f}", "high"),
    ("cpu_us_per_query", "server CPU us/query", "{:.2f}", "low"),
    ("user_us_per_query", "  in the process (user)", "{:.2f}", "low"),
    ("kernel_us_per_query", "  in the kernel (system)", "{:.2f}", "low"),
    ("cpu_busy", "server CPU busy at max", "{:.0%}", ""),
    ("avg_latency_us", "avg latency at max (us)", "{:.0f}", "low"),
    ("lost", "lost at max", "{:.0f}", "low"),
    ("half_lost", "lost at 50% of max", "{:.0f}", "low"),
    ("half_avg_latency_us", "avg latency at 50% (us)", "{:.0f}", "low"),
    ("half_p99_latency_us", "p99 latency at 50% (us)", "{:.0f}", "low"),
)


def median(server: DnsServer, key: str) -> float:
    return statistics.median(r[key] for r in server.rounds)


def report(args: argparse.Namespace, lbdns: DnsServer, nsd: DnsServer) -> dict:
    print()
    print(f"{'round':<6}{'server':<7}{'QPS':>10}{'us/q':>7}{'busy':>6}{'lost':>6}"
          f"{'50%:lost':>10}{'avg us':>8}{'p99 us':>8}")  # fmt: skip
    for index in range(args.rounds):
        for server in (lbdns, nsd):
            r = server.rounds[index]
            print(
                f"{index + 1:<6}{server.name:<7}{r['qps']:>10,.0f}{r['cpu_us_per_query']:>7.2f}"
                f"{r['cpu_busy']:>6.0%}{r['lost']:>6}{r['half_lost']:>10}"
                f"{r['half_avg_latency_us']:>8.0f}{r['half_p99_latency_us']:>8.0f}"
            )
    print()
    print(f"median of {args.rounds} round(s):")
    print(f"  {'':<26}{'lbdns':>10}{'NSD':>10}{'lbdns/NSD':>11}")
    summary: dict = {"lbdns": {}, "nsd": {}, "ratio": {}}
    for key, label, fmt, _ in ROWS:
        mine, theirs = median(lbdns, key), median(nsd, key)
        ratio = f"{mine / theirs:.2f}x" if theirs else "-"
        summary["lbdns"][key], summary["nsd"][key] = mine, theirs
        summary["ratio"][key] = mine / theirs if theirs else None
        print(f"  {label:<26}{fmt.format(mine):>10}{fmt.format(theirs):>10}{ratio:>11}")
    print()
    qps_ratio = summary["ratio"]["qps"] or 0.0
    cpu_ratio = summary["ratio"]["cpu_us_per_query"] or float("inf")
    half_lost = sum(r["half_lost"] for r in lbdns.rounds)
    verdicts = {
        f"QPS >= {TARGETS['qps']}x NSD": qps_ratio >= TARGETS["qps"],
        f"CPU/query <= {TARGETS['cpu']}x NSD": cpu_ratio <= TARGETS["cpu"],
        "no lost queries at 50% of max (all rounds)": half_lost == 0,
    }
    print("targets:")
    for text, ok in verdicts.items():
        print(f"  {'met ' if ok else 'MISSED'}  {text}")
    lb_rcodes, nsd_rcodes = lbdns.rounds[-1]["rcodes"], nsd.rounds[-1]["rcodes"]
    print(f"response codes (last round): lbdns {lb_rcodes}; NSD {nsd_rcodes}")
    summary["targets"] = verdicts
    return summary


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


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, help="rounds per server (default 5, quick 2)")
    p.add_argument("--duration", type=float, help="seconds per saturating run (default 8, quick 3)")
    p.add_argument("--quick", action="store_true", help="fewer, shorter rounds (about 30 s)")
    p.add_argument("--clients", type=int, default=4, help="dnsperf -c (default 4)")
    p.add_argument("--outstanding", type=int, default=400, help="dnsperf -q (default 400)")
    p.add_argument(
        "--paced-outstanding",
        type=int,
        default=100,
        help="dnsperf -q for the run at 50%% (default 100: enough for the rate, and more only "
        "adds dnsperf's own queueing to the latencies)",
    )
    p.add_argument("--no-edns", dest="edns", action="store_false", help="plain DNS queries")
    p.add_argument("--zone", type=Path, default=ROOT / "zones" / "example.test.yaml")
    p.add_argument(
        "--lbdns-config", type=Path, help="a config file for lbdns (e.g. udp_batch: false)"
    )
    p.add_argument("--server-cpu", type=int, default=0, help="CPU for the servers (default 0)")
    p.add_argument("--client-cpu", type=int, default=1, help="CPU for dnsperf (default 1)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, zone files)")
    p.add_argument(
        "--keyed", action="store_true", help="a consistent-hash farm's key labels in the mix"
    )
    args = p.parse_args(argv)
    args.rounds = args.rounds or (2 if args.quick else 5)
    args.duration = args.duration or (3.0 if args.quick else 8.0)
    args.half_duration = max(0.5, round(args.duration / 2, 1))
    args.warm_up = min(1.0, args.half_duration)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in (NSD, DNSPERF):
        if shutil.which(tool) is None:
            print(f"dns_speed: {tool} not found (Debian packages nsd, dnsperf)", file=sys.stderr)
            return 2
    cpus = sorted(os.sched_getaffinity(0))
    pinned = (
        shutil.which("taskset") is not None
        and args.server_cpu in cpus
        and args.client_cpu in cpus
        and args.server_cpu != args.client_cpu
    )
    server_pin = ["taskset", "-c", str(args.server_cpu)] if pinned else []
    args.client_pin = ["taskset", "-c", str(args.client_cpu)] if pinned else []

    info = machine()
    work = args.work = Path(tempfile.mkdtemp(prefix="lbdns-speed-"))
    zones_dir = work / "zones"
    zones_dir.mkdir()
    if args.keyed:
        keyed_zone(args.zone, zones_dir / args.zone.name)
    else:
        shutil.copy(args.zone, zones_dir / args.zone.name)
    zone = load_file(zones_dir / args.zone.name)
    queries = work / "queries.txt"
    names = query_file(zone, queries, args.keyed)
    zonefile = work / "zone.db"
    zonefile.write_text(nsd_zone_text(zone))
    conf = work / "nsd.conf"

    def nsd_command(port: int) -> list[str]:
        conf.write_text(nsd_conf(work, port, zone.origin, zonefile))
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
            "off",
            "--data-dir",
            str(work / "data"),
            *(["-c", str(args.lbdns_config.resolve())] if args.lbdns_config else []),
        ]

    nsd = DnsServer("NSD", nsd_command, "nsd started", work / "nsd.out")
    lbdns = DnsServer("lbdns", lbdns_command, "ready dns=127.0.0.1:{port} ", work / "lbdns.out")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    print(
        f"dns_speed: {args.rounds} round(s) of {args.duration:g} s at max rate + "
        f"{args.half_duration:g} s at 50% per server; dnsperf {info['dnsperf']} -c {args.clients} "
        f"-q {args.outstanding}{' with EDNS0' if args.edns else ', no EDNS'}; "
        f"{names} queries in the mix ({zone.origin})"
    )
    if pinned:
        print(
            f"pinned with taskset: servers on CPU {args.server_cpu}, dnsperf on CPU "
            f"{args.client_cpu}, so neither server competes with the load generator"
        )
    else:
        print("NOT pinned (taskset missing or fewer than 2 CPUs): figures mix server and client")
    print(
        f"machine: {info['cpus']} x {info['cpu']}, Linux {info['kernel']}, Python "
        f"{info['python']} ({info['loop']}), {info['nsd']}; load average "
        + " ".join(f"{x:.2f}" for x in info["load_average"])
    )
    started = time.monotonic()
    try:
        nsd.start(zone.origin, cwd=work)
        lbdns.start(zone.origin, env=env, cwd=work)
        for server in (lbdns, nsd):  # warm caches and the template table
            dnsperf(args, server.port, queries, args.warm_up)
        for index in range(args.rounds):
            order = (lbdns, nsd) if index % 2 == 0 else (nsd, lbdns)
            for server in order:
                server.rounds.append(measure(args, server, queries))
            print(f"  round {index + 1}/{args.rounds} done", flush=True)
    finally:
        lbdns.stop()
        nsd.stop()
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    summary = report(args, lbdns, nsd)
    print(f"took {time.monotonic() - started:.0f} s")
    if args.json:
        summary.update(machine=info, rounds={"lbdns": lbdns.rounds, "nsd": nsd.rounds})
        summary["targets"] = {text: ok for text, ok in summary["targets"].items()}
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
