"""Python work per query, counted: bytecode instructions that ``Answerer.respond`` executes for
each query of the DNS speed mix (``benchmarks/dns_speed.py``), in process, from one client as
dnsperf asks, with the UDP loop and the farms' answers in Python (``udp_compiled: false``);
with ``--compiled`` also those that stay in Python when the compiled UDP loop and the farms'
compiled answers serve the query.

    .venv/bin/python benchmarks/query_work.py [--keyed] [--baseline-tree DIR | --rrl] [--compiled]

A count, not a time: it is the same on a quiet and on a busy machine, so a change to the query
path can be compared with another tree (``--baseline-tree``, e.g. a ``git worktree`` of an
earlier commit) where timings would drown in the machine's noise. It weighs every instruction
alike (a dict lookup and a stack push count one each) and misses work done in C, so it says
where Python work was added or removed, not how many microseconds that is; ``dns_speed.py``
measures those. Each query of the mix is answered a few thousand times first (the repeated
queries' caches, the farm's learned direct asker), then counted once per occurrence in the mix.
The farm's clock steps 10 µs a reading and its random source is seeded, so two runs of one tree
count the same. Not run in CI (a smoke test runs it).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WARM = 3000  # queries answered before counting
ROUNDS = 100  # times the mix is counted


def measure(keyed: bool, rrl: bool = False, compiled: bool = False) -> dict[str, float]:
    """Instructions per query by category of the mix, and over the whole mix ("mix"). With
    ``compiled``, those Python runs per query when the compiled UDP loop serves it (over a
    loopback socket): what is left of ``respond`` once repeated queries are answered in C."""
    import dns.flags
    import dns.message

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import dns_speed

    from lbdns.dnsserver.wire import Answerer
    from lbdns.registry import Registry
    from lbdns.zone.parse import load_file, load_folder

    work = Path(tempfile.mkdtemp(prefix="query-work-"))
    source = next((dns_speed.ROOT / "zones").glob("*.yaml"))
    if keyed:
        dns_speed.keyed_zone(source, work / source.name)
    else:
        (work / source.name).write_text(source.read_text())
    # A clock that steps 10 us per reading and a seeded random source: the farm's choices and
    # its time buckets then go the same way in every run, and so does the count.
    ticks = itertools.count()
    registry = Registry(clock=lambda: 1_000_000.0 + next(ticks) * 1e-5, rng=random.Random(1))
    # As ``udp_compiled`` sets it: the farms' compiled answers with the compiled loop only, so
    # that the first column counts the Python of both (what another tree is compared on).
    registry.compiled = compiled
    registry.load_zones(load_folder(work))
    mix = work / "queries.txt"
    dns_speed.query_file(load_file(work / source.name), mix, keyed)
    names = [line.split() for line in mix.read_text().splitlines() if line]
    wires = []
    for name, qtype in names:
        query = dns.message.make_query(name, qtype, use_edns=True, payload=4096)
        query.flags = dns.flags.RD
        wires.append(query.to_wire())
    categories = [
        ("key label" if name.startswith("room") else name.split(".")[0] or "@") + f" {qtype}"
        for name, qtype in names
    ]
    answerer = Answerer(registry)
    if rrl:
        # As the server sets them up with rrl on (at a rate that never limits, so every answer
        # is charged) and cookies on.
        from lbdns.dnsserver.cookie import Cookies, CookieSettings
        from lbdns.dnsserver.rrl import RateLimiter, RrlSettings

        answerer.rrl = RateLimiter(RrlSettings(enabled=True, rate=1e9))
        answerer.cookies = Cookies(CookieSettings())
    respond = answerer.respond
    for i in range(WARM):
        wire = wires[i % len(wires)]
        respond(i.to_bytes(2, "big") + wire[2:], "127.0.0.1", False)

    count = 0

    def tracer(frame, event, arg):
        nonlocal count
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        if event == "opcode":
            count += 1
        return tracer

    answer = _respond_traced(respond)
    if compiled:
        answer = _through_the_compiled_loop(answerer)

    totals: dict[str, int] = defaultdict(int)
    seen: dict[str, int] = defaultdict(int)
    for i in range(ROUNDS * len(wires)):
        wire = wires[i % len(wires)]
        query = (WARM + i).to_bytes(4, "big")[-2:] + wire[2:]
        count = 0
        answer(query, tracer)
        category = categories[i % len(wires)]
        totals[category] += count
        seen[category] += 1
    result = {c: totals[c] / seen[c] for c in sorted(totals, key=lambda c: -totals[c] / seen[c])}
    result["mix"] = sum(totals.values()) / sum(seen.values())
    return result


def _respond_traced(respond):
    def answer(query: bytes, tracer) -> None:
        sys.settrace(tracer)
        respond(query, "127.0.0.1", False)
        sys.settrace(None)

    return answer


def _through_the_compiled_loop(answerer):
    """``answer(query, tracer)``: the query sent over loopback to a socket the compiled loop
    serves, traced while the loop answers it (the loop's per-batch call, made once for up to
    64 queries, is left out)."""
    import select
    import socket

    from lbdns.dnsserver import _udpfast

    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    batch = _udpfast.Batch(server.fileno(), server.family)
    address = server.getsockname()

    def answer(query: bytes, tracer) -> None:
        client.sendto(query, address)
        select.select([server], [], [], 1.0)
        cache = answerer.udp_cache()
        sys.settrace(tracer)
        n, _, _ = batch.serve(answerer.respond, cache)
        sys.settrace(None)
        assert n == 1
        client.recv(65535)

    answer.sockets = (server, client)  # alive as long as the function
    return answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keyed", action="store_true", help="a consistent-hash farm in the mix")
    parser.add_argument("--baseline-tree", type=Path, help="another lbdns tree to compare with")
    parser.add_argument(
        "--rrl",
        action="store_true",
        help="rate limiting (never limiting) and cookies on, beside both off in the same tree",
    )
    parser.add_argument(
        "--compiled",
        action="store_true",
        help="also count what stays in Python when the compiled UDP loop serves each query",
    )
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one tree, JSON
    args = parser.parse_args()
    if args.json:
        print(json.dumps(measure(args.keyed, args.rrl, args.compiled)))
        return
    if args.rrl and args.baseline_tree:
        parser.error("--rrl compares two setups of this tree: no --baseline-tree with it")
    runs = [("lbdns", ROOT, args.rrl, False)]
    if args.compiled:
        runs.append(("compiled", ROOT, args.rrl, True))
    if args.baseline_tree or args.rrl:
        runs.append(("base", (args.baseline_tree or ROOT).resolve(), False, False))
    results = {}
    for label, tree, rrl, compiled in runs:
        command = [sys.executable, str(Path(__file__).resolve()), "--json"]
        if args.keyed:
            command.append("--keyed")
        if rrl:
            command.append("--rrl")
        if compiled:
            command.append("--compiled")
        # The tree's own package first; this script (and the mix) from here for both.
        env = {**os.environ, "PYTHONPATH": str(tree)}
        done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tree)
        if done.returncode:
            raise SystemExit(f"query_work: {label} ({tree}) failed:\n{done.stderr}")
        results[label] = json.loads(done.stdout)
    mix = "keyed mix" if args.keyed else "mix"
    print(f"Python bytecode instructions per query, {mix} of benchmarks/dns_speed.py, one client")
    if args.compiled:
        print(
            "compiled: what stays in Python when the compiled UDP loop and the farms' compiled"
            " answers serve the query"
        )
    header = f"{'query':22} {'lbdns':>8}"
    if "compiled" in results:
        header += f" {'compiled':>9}"
    if "base" in results:
        header += f" {'base':>8} {'lbdns/base':>11}"
        if args.rrl:
            print("lbdns: rate limiting (never limiting) and cookies on; base: both off")
        else:
            print(f"base: {args.baseline_tree}")
    print(header)
    for category, value in results["lbdns"].items():
        line = f"{category:22} {value:8.1f}"
        if "compiled" in results:
            line += f" {results['compiled'].get(category, float('nan')):9.1f}"
        if "base" in results and category in results["base"]:
            base = results["base"][category]
            line += f" {base:8.1f} {value / base:10.3f}x"
        print(line)


if __name__ == "__main__":
    main()
