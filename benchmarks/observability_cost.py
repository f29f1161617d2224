"""What observability and hardening cost the DNS path: Answerer.respond per query, in process,
with the query log off (the default), and on at a rate limit that suppresses almost every line;
with response rate limiting off (the default) and on (at a rate that never limits, so every
answer is charged), cookies on (the default) and off; plus the cost of the plain counters the
metrics read, and of one sampled latency observation.

    .venv/bin/python benchmarks/observability_cost.py [--seconds 1.0]

Prints microseconds per query (best of 5 rounds). Not run in CI.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import Counter
from pathlib import Path

import dns.message

from lbdns.dnsserver.cookie import Cookies, CookieSettings
from lbdns.dnsserver.latency import LatencyHistogram
from lbdns.dnsserver.querylog import QueryLog
from lbdns.dnsserver.rrl import RateLimiter, RrlSettings
from lbdns.dnsserver.wire import Answerer
from lbdns.registry import Registry
from lbdns.zone.parse import load_folder

ZONES = Path(__file__).resolve().parent.parent / "zones"


def per_query(call, seconds: float) -> float:
    best = float("inf")
    for _ in range(5):
        n = 0
        started = time.perf_counter()
        deadline = started + seconds / 5
        while True:
            for _ in range(1000):
                call()
            n += 1000
            now = time.perf_counter()
            if now >= deadline:
                break
        best = min(best, (now - started) / n)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    args = parser.parse_args()
    logging.getLogger("lbdns.query").addHandler(logging.NullHandler())
    logging.getLogger("lbdns.query").propagate = False
    registry = Registry()
    registry.load_zones(load_folder(ZONES))
    answerer = Answerer(registry)
    queries = {
        "static": dns.message.make_query("mail.example.test.", "A").to_wire(),
        "farm": dns.message.make_query("chat.example.test.", "A").to_wire(),
    }
    for name, wire in queries.items():
        answerer.respond(wire, "127.0.0.1")  # build the template once
        answerer.query_log = None
        off = per_query(lambda w=wire: answerer.respond(w, "127.0.0.1"), args.seconds)
        answerer.query_log = QueryLog(answerer, 1.0, 100.0)
        on = per_query(lambda w=wire: answerer.respond(w, "127.0.0.1"), args.seconds)
        answerer.query_log = None
        print(f"{name:6} respond: query log off {off:.2f} us, on (rate-limited) {on:.2f} us")
    # The query mix of benchmarks/dns_speed.py in miniature, with EDNS as dnsperf -e sends it.
    mix = [
        dns.message.make_query(name, qtype, use_edns=0, payload=1232).to_wire()
        for name, qtype in (
            ("chat.example.test.", "A"),
            ("chat.example.test.", "AAAA"),
            ("www.example.test.", "A"),
            ("mail.example.test.", "A"),
            ("example.test.", "SOA"),
            ("nothing.example.test.", "A"),
        )
    ]

    def respond_mix() -> None:
        for wire in mix:
            answerer.respond(wire, "127.0.0.1")

    setups = {
        "rrl off, cookies off": (None, None),
        "rrl off, cookies on (default)": (None, Cookies(CookieSettings())),
        "rrl on, cookies on": (
            RateLimiter(RrlSettings(enabled=True, rate=1e9)),
            Cookies(CookieSettings()),
        ),
    }
    for label, (rrl, cookies) in setups.items():
        answerer.rrl, answerer.cookies = rrl, cookies
        respond_mix()
        cost = per_query(respond_mix, args.seconds) / len(mix)
        print(f"query mix respond, {label:30} {cost:.2f} us")
    answerer.rrl = answerer.cookies = None
    counter: Counter[int] = Counter()
    inc = per_query(lambda: counter.__setitem__(1, counter[1] + 1), args.seconds)
    histogram = LatencyHistogram()
    clock = time.perf_counter
    observe = per_query(lambda: histogram.observe(clock() - clock()), args.seconds)
    print(f"one Counter increment {inc * 1000:.0f} ns; one timed sample {observe * 1000:.0f} ns")


if __name__ == "__main__":
    main()
