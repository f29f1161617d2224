"""The balance benchmark with its queries split across two lbdns servers sharing one Redis.

    .venv/bin/python benchmarks/balance_cluster.py [--split resolver|query] [balance.py options]

Runs ``benchmarks/balance.py`` unchanged except for the servers: a ``redis-server`` and two
``lbdns serve --state redis://…`` processes, A and B. The agents report to A and the events (a
host added, drained) go to A's API; the DNS queries are split:

* ``--split resolver`` (default): each simulated resolver sticks to one server (even-numbered
  ones to A, odd ones to B), as real resolvers mostly stay with the fastest NS;
* ``--split query``: every query goes to A or B at random.

Compare its table with ``balance.py`` run with the same options, back to back: the issue asks the
figures to stay within 0.02 of the single-server ones. p99 varies by about ±0.01 between runs, so
compare several pairs (docs/cluster.md has the figures).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import balance

from lbdns.testing.process import LbdnsProcess
from lbdns.testing.redis import RedisProcess

ROOT = Path(__file__).resolve().parent.parent


class Group:
    """The processes of one run, stopped together (what ``balance.run_case`` stops)."""

    def __init__(self, redis: RedisProcess, servers: list[LbdnsProcess]):
        self.redis = redis
        self.servers = servers

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        self.redis.stop()


class ClusterBench(balance.Bench):
    split = "resolver"

    def start_lbdns(self, folder: Path) -> Group:  # type: ignore[override]
        zones = folder / "zones"
        zones.mkdir()
        (zones / "bench.yaml").write_text(
            balance.zone_text(self.worlds, self.args.ttl, self.cache_time)
        )
        group = Group(RedisProcess(folder / "redis").start(), [])
        try:
            for _ in ("a", "b"):
                server = LbdnsProcess(folder, zones=zones, extra=("--state", group.redis.url))
                group.servers.append(server.start(timeout=20))
        except BaseException:
            group.stop()
            raise
        self.dns_servers = [server.dns[0] for server in group.servers]
        self.dns = self.dns_servers[0]
        self.http = group.servers[0].http_url
        return group

    def ask(self, w: int, r: int, now: float) -> None:
        if self.split == "resolver":
            self.dns = self.dns_servers[r % 2]
        else:
            self.dns = self.dns_servers[self.rng.randrange(2)]
        super().ask(w, r, now)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--split", choices=("resolver", "query"), default="resolver")
    args, rest = parser.parse_known_args(argv)
    ClusterBench.split = args.split
    balance.Bench = ClusterBench  # run_case builds the bench by this name
    print(f"two lbdns servers on one Redis; queries split by {args.split}")
    return balance.main(rest)


if __name__ == "__main__":
    sys.exit(main())
