"""The cost of one least-load answer in process: a resolver on the one-record path against a
busy resolver on the split path (herd > 2), for the same farm, in one run.

    .venv/bin/python benchmarks/split_path.py [--calls N] [--repeats R]

``Farm.choose`` is called in a loop with a fake clock (no sockets, no kernel time: the Python
cost of choosing and charging an answer, the part a busy resolver used to multiply). The two
paths are measured alternately, best of ``--repeats`` for each, so drift on a shared machine
reaches both. Reports keep arriving every 1,000 calls so loads stay near each other and the
split search has real choices to make.
"""

from __future__ import annotations

import argparse
import random
import time

from dnslib import QTYPE

from lbdns.balance.farm import Farm
from lbdns.balance.host import Report
from lbdns.zone.parse import parse_text

FARMS = {
    "4 hosts, equal capacity": {"a": 1, "b": 1, "c": 1, "d": 1},
    "3 hosts, capacity 1/2/2 (the example farm)": {"web1": 1, "web2": 2, "web3": 2},
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_farm(hosts: dict[str, int], clock: Clock) -> Farm:
    lines = "\n".join(
        f"      {name}: {{a: 192.0.2.{10 + i}, capacity: {cap}}}"
        for i, (name, cap) in enumerate(hosts.items())
    )
    text = (
        "zone: t.\nsoa: {}\nns: [ns1]\nrecords: {ns1: {A: 192.0.2.1}}\nfarms:\n"
        f"  f:\n    ttl: 5\n    split: 4\n    hosts:\n{lines}\n"
    )
    return Farm(parse_text(text).farms["f.t."], clock=clock, rng=random.Random(1))


def report_all(farm: Farm, clock: Clock, seq: int) -> None:
    for host in farm.hosts.values():
        host.report = Report(seq, clock.now, 1.0, True, {"connections": 50.0})
    farm.changed()


def timed(farm: Farm, clock: Clock, client: str, calls: int) -> float:
    """Microseconds per ``Farm.choose`` for ``client``."""
    choose = farm.choose
    seq = 0
    started = time.perf_counter()
    for i in range(calls):
        clock.now += 0.0001
        if i % 1000 == 0:
            seq += 1
            report_all(farm, clock, seq)
        choose(QTYPE.A, client)
    return (time.perf_counter() - started) * 1e6 / calls


def busy(farm: Farm, clock: Clock, client: str) -> float:
    """Let ``client`` come back after its cache expired a few times: a herd above 2."""
    for seq in range(1, 5):
        report_all(farm, clock, seq)
        farm.choose(QTYPE.A, client)
        clock.now += 6.0
    report_all(farm, clock, 5)
    farm.choose(QTYPE.A, client)
    return farm.last.herd


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=100_000, help="calls per measurement")
    p.add_argument("--repeats", type=int, default=5, help="measurements per path (best kept)")
    args = p.parse_args(argv)
    print(f"split_path: Farm.choose, best of {args.repeats} x {args.calls:,} calls per path")
    for label, hosts in FARMS.items():
        clock = Clock()
        farm = make_farm(hosts, clock)
        herd = busy(farm, clock, "10.0.0.1")
        paths = {
            "one record (first-seen resolver, herd 1)": "10.1.1.1",
            f"split search (busy resolver, herd {herd:.1f})": "10.0.0.1",
        }
        best = {name: float("inf") for name in paths}
        for repeat in range(args.repeats):
            for name, client in paths.items():
                if client != "10.0.0.1":
                    client = f"10.1.{repeat}.1"  # first seen: the one-record path
                best[name] = min(best[name], timed(farm, clock, client, args.calls))
        one, split = best.values()
        print(f"{label}:")
        for name, value in best.items():
            print(f"  {name:<44}{value:>7.2f} us per answer")
        print(f"  split / one record: {split / one:.2f}x")
        records = {len(c) for c in [farm.choose(QTYPE.A, "10.0.0.1")]}
        print(f"  (the busy resolver's last answer named {records.pop()} record(s))")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
