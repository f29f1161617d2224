"""The cost of one least-load answer in process for busy resolvers: the one-record path (the
farm's ``split: 1``) against the split search (``split: 4``), same hosts, same resolvers, one run.

    .venv/bin/python benchmarks/split_path.py [--calls N] [--repeats R]

``Farm.choose`` is called in a loop with a fake clock (no sockets, no kernel time: the Python
cost of choosing and charging an answer). ``RESOLVERS`` resolvers take turns, each asking again
6 s after its previous query with a 5 s TTL: a resolver that comes back after its cache expired,
whose herd estimate is about 6, so every answer of the ``split: 4`` farm goes through the split
search. Hosts report every 6 s of fake time. The two farms are measured alternately, best of
``--repeats`` each, so drift on a shared machine reaches both.
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
RESOLVERS = 1000
GAP = 6.0  # seconds between two queries of one resolver (the TTL is 5 s)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_farm(hosts: dict[str, int], clock: Clock, split: int) -> Farm:
    lines = "\n".join(
        f"      {name}: {{a: 192.0.2.{10 + i}, capacity: {cap}}}"
        for i, (name, cap) in enumerate(hosts.items())
    )
    text = (
        "zone: t.\nsoa: {}\nns: [ns1]\nrecords: {ns1: {A: 192.0.2.1}}\nfarms:\n"
        f"  f:\n    ttl: 5\n    split: {split}\n    hosts:\n{lines}\n"
    )
    return Farm(parse_text(text).farms["f.t."], clock=clock, rng=random.Random(1))


def report_all(farm: Farm, clock: Clock, seq: int) -> None:
    for host in farm.hosts.values():
        host.report = Report(seq, clock.now, 2.0, True, {"connections": 50.0})
    farm.changed()


def timed(farm: Farm, clock: Clock, calls: int, seq: list[int]) -> tuple[float, float, float]:
    """(microseconds per ``Farm.choose``, mean herd, mean records per answer)."""
    choose = farm.choose
    names = [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(RESOLVERS)]
    step = GAP / RESOLVERS
    herds = records = 0.0
    started = time.perf_counter()
    for i in range(calls):
        clock.now += step
        if i % RESOLVERS == 0:
            seq[0] += 1
            report_all(farm, clock, seq[0])
        choose(QTYPE.A, names[i % RESOLVERS])
        if i % 64 == 0:  # sampled, so the sampling costs little
            last = farm.last
            herds += last.herd
            records += len(last.chosen)
    elapsed = time.perf_counter() - started
    samples = (calls + 63) // 64
    return elapsed * 1e6 / calls, herds / samples, records / samples


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=100_000, help="calls per measurement")
    p.add_argument("--repeats", type=int, default=5, help="measurements per path (best kept)")
    args = p.parse_args(argv)
    print(
        f"split_path: Farm.choose, best of {args.repeats} x {args.calls:,} calls per path, "
        f"{RESOLVERS} resolvers each asking every {GAP:g} s (TTL 5 s)"
    )
    for label, hosts in FARMS.items():
        farms = {}
        for split in (1, 4):
            clock = Clock()
            farm = make_farm(hosts, clock, split)
            seq = [0]
            timed(farm, clock, 3 * RESOLVERS, seq)  # every resolver known, with a gap: busy
            farms[split] = (farm, clock, seq)
        best = {1: (float("inf"), 0.0, 0.0), 4: (float("inf"), 0.0, 0.0)}
        for _ in range(args.repeats):
            for split, (farm, clock, seq) in farms.items():
                result = timed(farm, clock, args.calls, seq)
                if result[0] < best[split][0]:
                    best[split] = result
        print(f"{label}:")
        for split, (us, herd, records) in best.items():
            path = "one record (split: 1)" if split == 1 else "split search (split: 4)"
            print(f"  {path:<28}{us:>7.2f} us per answer   herd {herd:.1f}, {records:.2f} records")
        print(f"  split / one record: {best[4][0] / best[1][0]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
