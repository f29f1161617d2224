"""How long a change in the main process takes to reach every DNS worker (``workers: N``).

    .venv/bin/python benchmarks/worker_freshness.py [--workers N] [--rounds R] [--json FILE]

Starts ``lbdns serve`` with ``workers: N`` and ``explain_queries: true`` on loopback and, for
each of ``--rounds`` changes, times from sending the change until every worker shows it in its
own CH TXT explanation (which ends with ``worker I of N pid P``: the process that answered). The
workers are polled over UDP from new sockets (the kernel's SO_REUSEPORT hash picks the worker)
until each has answered with the change. Three kinds of change, in turn:

* a report (``POST /v1/report``) with a new connection count for one host;
* an admin change (``POST .../disable``, then ``.../enable``);
* a drain (``POST .../drain``, then ``.../enable``).

Printed per kind: p50, p90, p99 and max, in milliseconds, next to the 50 ms budget. The time
includes the HTTP request and the polling (one UDP round trip per poll), so it is an upper
bound on the relay itself. Loopback only; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import dns.message
import dns.query

from lbdns.testing.process import LbdnsProcess, http_json

FARM = "chat.example.test."
BUDGET_MS = 50.0
WORKER = re.compile(r"^worker (\d+) of (\d+) pid (\d+)$")


def poll_until_every_worker(process: LbdnsProcess, check, workers: int, limit: float) -> float:
    """Seconds until ``check(lines)`` holds in a reply from each of the workers."""
    started = time.perf_counter()
    query = dns.message.make_query(f"_lbdns.{FARM}", "TXT", rdclass="CH")
    done: set[int] = set()
    while len(done) < workers:
        if time.perf_counter() - started > limit:
            raise RuntimeError(f"not every worker saw the change within {limit} s ({done})")
        reply = dns.query.udp(query, process.host, port=process.port, timeout=2)
        lines = [b"".join(r.strings).decode() for rrset in reply.answer for r in rrset]
        match = WORKER.match(lines[-1])
        if match and check(lines):
            done.add(int(match.group(1)))
    return time.perf_counter() - started


def host_line(lines: list[str], host: str) -> str:
    return next((line for line in lines if line.startswith(f"{host} ")), "")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=100, help="changes of each kind (default 100)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    results: dict[str, list[float]] = {"report": [], "admin": [], "drain": []}
    with tempfile.TemporaryDirectory(prefix="lbdns-wfresh-") as folder:
        tmp = Path(folder)
        config = tmp / "lbdns.yaml"
        config.write_text("explain_queries: true\n")
        extra = ("--data-dir", str(tmp / "data"))
        with LbdnsProcess(tmp, config=config, extra=extra, workers=args.workers) as process:
            api = process.http_url
            host_url = f"{api}/v1/farms/{FARM}/hosts/web2"
            for i in range(args.rounds):
                connections = 10 + i
                report = {"farm": FARM, "host": "web1", "seq": i + 1, "interval": 5}
                report["metrics"] = {"connections": connections}
                sent = time.perf_counter()
                http_json(f"{api}/v1/report", report)
                poll_until_every_worker(
                    process,
                    lambda lines, c=connections: f"score={c:.3g} " in host_line(lines, "web1"),
                    args.workers,
                    5.0,
                )
                results["report"].append(time.perf_counter() - sent)
                for kind, action, shown in (
                    ("admin", "disable", " disabled "),
                    ("drain", "drain", " draining "),
                ):
                    sent = time.perf_counter()
                    http_json(f"{host_url}/{action}", {})
                    poll_until_every_worker(
                        process,
                        lambda lines, s=shown: s in host_line(lines, "web2"),
                        args.workers,
                        5.0,
                    )
                    results[kind].append(time.perf_counter() - sent)
                    http_json(f"{host_url}/enable", {})
                    poll_until_every_worker(
                        process,
                        lambda lines, s=shown: s not in host_line(lines, "web2"),
                        args.workers,
                        5.0,
                    )
    print(
        f"worker_freshness: {args.workers} workers, {args.rounds} changes of each kind, from the "
        "HTTP request until every worker's own CH TXT explanation shows it (ms)"
    )
    print(f"  {'change':<8}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}   budget {BUDGET_MS:g} ms")
    summary = {}
    for kind, values in results.items():
        ms = [v * 1000 for v in values]
        row = {
            "p50": statistics.median(ms),
            "p90": percentile(ms, 0.9),
            "p99": percentile(ms, 0.99),
            "max": max(ms),
        }
        summary[kind] = row
        verdict = "met" if row["p99"] <= BUDGET_MS else "MISSED"
        print(
            f"  {kind:<8}{row['p50']:>8.1f}{row['p90']:>8.1f}{row['p99']:>8.1f}{row['max']:>8.1f}"
            f"   p99 {verdict}"
        )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
