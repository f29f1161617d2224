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
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

import balance  # noqa: E402
from redis_support import RedisProcess  # noqa: E402

READY = re.compile(r"ready dns=(\S*) http=(\S+)")


class Group:
    """The processes of one run, stopped together (what ``balance.run_case`` stops)."""

    def __init__(self, redis: RedisProcess, servers: list[subprocess.Popen]):
        self.redis = redis
        self.servers = servers

    def terminate(self) -> None:
        for proc in self.servers:
            proc.terminate()

    def wait(self, timeout: float | None = None) -> None:
        for proc in self.servers:
            proc.wait(timeout=timeout)
        self.redis.stop()

    def kill(self) -> None:
        for proc in self.servers:
            proc.kill()
        self.redis.kill()


class ClusterBench(balance.Bench):
    split = "resolver"

    def start_lbdns(self, folder: Path) -> Group:  # type: ignore[override]
        zones = folder / "zones"
        zones.mkdir()
        (zones / "bench.yaml").write_text(
            balance.zone_text(self.worlds, self.args.ttl, self.cache_time)
        )
        redis = RedisProcess(folder / "redis").start()
        servers: list[subprocess.Popen] = []
        self.dns_servers: list[tuple[str, int]] = []
        https: list[str] = []
        for name in ("a", "b"):
            log_path = folder / f"lbdns-{name}.log"
            proc = subprocess.Popen(
                [sys.executable, "-m", "lbdns", "serve", "--zones", str(zones)]
                + ["--dns", "127.0.0.1:0", "--http", "127.0.0.1:0", "--state", redis.url],
                stdout=open(log_path, "wb"),
                stderr=subprocess.STDOUT,
                cwd=folder,
            )
            servers.append(proc)
            deadline = time.monotonic() + 20
            while True:
                match = READY.search(log_path.read_text(errors="replace"))
                if match:
                    host, _, port = match.group(1).split(",")[0].rpartition(":")
                    self.dns_servers.append((host, int(port)))
                    https.append(f"http://{match.group(2)}")
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    Group(redis, servers).kill()
                    raise SystemExit(f"lbdns {name} did not start:\n{log_path.read_text()}")
                time.sleep(0.05)
        self.dns = self.dns_servers[0]
        self.http = https[0]
        return Group(redis, servers)

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
