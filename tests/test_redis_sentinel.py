"""Redis Sentinel: a primary, a replica and three sentinels; the primary dies, writes go on.

Two Redis stores (two servers) use ``redis+sentinel://``; after the primary is killed the
sentinels promote the replica, the stores reconnect to it, keep what was acknowledged, and
take writes again.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
from redis_support import RedisProcess, SentinelProcess, redis_available
from test_redis_store import FARM, make_store, report, until

from lbdns.errors import Unavailable
from lbdns.zone.model import HostSpec

pytestmark = [
    pytest.mark.skipif(not redis_available(), reason="redis-server is not installed"),
    pytest.mark.timeout(40),
]


def wait_replicating(primary: int, replica: int, timeout: float = 10.0) -> None:
    """Until a write on the primary shows on the replica (after a diskless sync the primary
    starts streaming only on the replica's first acknowledgement, up to a second later)."""
    source = redis.Redis(port=primary, decode_responses=True)
    target = redis.Redis(port=replica, decode_responses=True)
    deadline = time.monotonic() + timeout
    source.set("probe", "1")
    while target.get("probe") != "1":
        assert time.monotonic() < deadline, "the replica did not sync"
        time.sleep(0.05)
    source.delete("probe")
    source.close()
    target.close()


def test_writes_continue_after_a_sentinel_failover(tmp_path):
    primary = RedisProcess(tmp_path / "primary")
    primary.extra = ["--repl-diskless-sync-delay", "0"]  # the default waits 5 s to start
    primary.start()
    replica = RedisProcess(tmp_path / "replica")
    replica.extra = ["--replicaof", "127.0.0.1", str(primary.port)]
    replica.start()
    wait_replicating(primary.port, replica.port)
    sentinels = [
        SentinelProcess(tmp_path / f"sentinel{i}", primary.port, quorum=2).start() for i in range(3)
    ]
    url = "redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in sentinels) + "/lbdns/0"

    async def main() -> None:
        a, b = make_store(url), make_store(url)
        await a.start()
        await b.start()
        try:
            assert a.healthy() and b.healthy()
            farm_a, farm_b = a.registry.farms[FARM], b.registry.farms[FARM]
            await a.put_host(farm_a, HostSpec(name="web4", a=("192.0.2.13",)))
            await a.report(farm_a, farm_a.hosts["web2"], report(1, 9, time.time()))
            await until(lambda: "web4" in farm_b.hosts)

            primary.kill()
            await until(lambda: not a.healthy(), timeout=5)
            # The sentinels notice (down-after 0.5 s), promote the replica, the stores follow.
            started = time.monotonic()
            while True:
                try:
                    await b.set_admin(farm_b, farm_b.hosts["web4"], "draining", 1.0)
                    break
                except Unavailable:
                    assert time.monotonic() - started < 20, "no failover within 20 s"
                    await asyncio.sleep(0.1)
            await until(lambda: farm_a.hosts["web4"].admin == "draining", timeout=10)
            # What was acknowledged before the switch is still there.
            assert a.counters["reseeds"] == b.counters["reseeds"] == 0
            assert farm_b.hosts["web2"].report.seq == 1
            await a.put_host(farm_a, HostSpec(name="web5", a=("192.0.2.14",)))
            await until(lambda: "web5" in farm_b.hosts)
        finally:
            await a.close()
            await b.close()

    try:
        asyncio.run(asyncio.wait_for(main(), 35))
    finally:
        for process in (*sentinels, replica, primary):
            process.kill()
