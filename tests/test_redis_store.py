"""The Redis store in-process, two stores (two "servers") on one real ``redis-server``.

Each test starts its own Redis on a free loopback port and kills or restarts it to make the
faults happen. A fake clock is used where report ages matter; everything else is real.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis
from redis_support import RedisProcess, redis_available
from support import EXAMPLE_ZONES

from lbdns.balance.host import STALE, UP, Report
from lbdns.config import Config
from lbdns.errors import ConfigError, Unavailable
from lbdns.registry import Registry
from lbdns.store.redis.store import RedisStore
from lbdns.store.redis.urls import display_url, parse_sentinel_url
from lbdns.testing.clock import Clock
from lbdns.zone.model import HostSpec
from lbdns.zone.parse import load_folder

pytestmark = [
    pytest.mark.skipif(not redis_available(), reason="redis-server is not installed"),
    pytest.mark.timeout(30),
]

FARM = "chat.example.test."


def make_store(url: str, clock: Callable[[], float] = time.time, **config) -> RedisStore:
    registry = Registry(clock=clock)
    registry.load_zones(load_folder(EXAMPLE_ZONES))
    return RedisStore(registry, url, Config(state=url, **config))


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def started(*stores: RedisStore) -> AsyncIterator[tuple[RedisStore, ...]]:
    """The stores started (two stores: two servers), and closed when the block ends."""
    try:
        for store in stores:
            await store.start()
        yield stores
    finally:
        for store in stores:
            await store.close()


def run(coro) -> None:
    asyncio.run(asyncio.wait_for(coro, 25))


@pytest.fixture
def redis_server(tmp_path):
    with RedisProcess(tmp_path / "redis") as server:
        yield server


def report(seq: int, connections: float, received: float, interval: float = 1.0) -> Report:
    return Report(seq, received, interval, True, {"connections": connections})


def test_every_change_reaches_the_other_server(redis_server):
    async def main() -> None:
        async with started(make_store(redis_server.url), make_store(redis_server.url)) as (a, b):
            farm_a, farm_b = a.registry.farms[FARM], b.registry.farms[FARM]
            assert a.healthy() and b.healthy()

            spec = HostSpec(name="web4", a=("192.0.2.13",), capacity=4.0)
            await a.put_host(farm_a, spec)
            assert "web4" in farm_a.hosts  # the server that accepted it: at once
            await until(lambda: "web4" in farm_b.hosts)
            assert farm_b.hosts["web4"].spec.capacity == 4.0

            await a.set_admin(farm_a, farm_a.hosts["web1"], "draining", 1000.0)
            await until(lambda: farm_b.hosts["web1"].admin == "draining")
            assert farm_b.hosts["web1"].drain_started == 1000.0

            accepted = await b.report(farm_b, farm_b.hosts["web2"], report(7, 42, time.time()))
            assert accepted
            await until(lambda: farm_a.hosts["web2"].report is not None)
            assert farm_a.hosts["web2"].report.metrics["connections"] == 42
            # An older sequence number is ignored, on the server that got it and everywhere.
            assert not await b.report(farm_b, farm_b.hosts["web2"], report(6, 1, time.time()))

            await b.remove_host(farm_b, "web3")
            await until(lambda: "web3" not in farm_a.hosts)
            await a.remove_host(farm_a, "web4")
            await until(lambda: "web4" not in farm_b.hosts)

            # A third server that starts later reads the same membership.
            c = make_store(redis_server.url)
            await c.start()
            try:
                hosts_c = c.registry.farms[FARM].hosts
                assert sorted(hosts_c) == sorted(farm_a.hosts) == ["web1", "web2"]
                assert hosts_c["web1"].admin == "draining"
                assert hosts_c["web2"].report.seq == 7
            finally:
                await c.close()

    run(main())


def test_two_servers_changing_one_host_agree(redis_server):
    async def main() -> None:
        async with started(make_store(redis_server.url), make_store(redis_server.url)) as (a, b):
            farm_a, farm_b = a.registry.farms[FARM], b.registry.farms[FARM]
            # Interleaved writes to the same host from both servers: each merges its fields
            # into what Redis holds, so both end with the capacity and the admin state.
            await asyncio.gather(
                a.put_host(farm_a, HostSpec(name="web1", a=("192.0.2.10",), capacity=3.0)),
                b.set_admin(farm_b, farm_b.hosts["web1"], "disabled", 5.0),
            )
            for farm in (farm_a, farm_b):
                await until(lambda farm=farm: farm.hosts["web1"].admin == "disabled")
                await until(lambda farm=farm: farm.hosts["web1"].spec.capacity == 3.0)
            assert a.version == b.version

    run(main())


def test_writes_get_503_while_redis_is_away_and_nothing_is_half_applied(redis_server):
    async def main() -> None:
        a = make_store(redis_server.url)
        await a.start()
        try:
            farm = a.registry.farms[FARM]
            redis_server.kill()
            await until(lambda: not a.healthy(), timeout=3)
            with pytest.raises(Unavailable) as caught:
                await a.put_host(farm, HostSpec(name="web9", a=("192.0.2.99",)))
            assert caught.value.status == 503
            assert "unreachable" in caught.value.reason and "not applied" in caught.value.reason
            with pytest.raises(Unavailable):
                await a.report(farm, farm.hosts["web1"], report(1, 5, time.time()))
            assert "web9" not in farm.hosts
            assert farm.hosts["web1"].report is None
            assert a.status()["healthy"] is False
        finally:
            await a.close()

    run(main())


def test_redis_back_with_its_data_resyncs_without_restart(tmp_path):
    async def main(redis_server: RedisProcess) -> None:
        async with started(make_store(redis_server.url), make_store(redis_server.url)) as (a, b):
            farm_a, farm_b = a.registry.farms[FARM], b.registry.farms[FARM]
            await a.put_host(farm_a, HostSpec(name="web4", a=("192.0.2.13",)))
            await until(lambda: "web4" in farm_b.hosts)
            redis_server.kill()
            await until(lambda: not a.healthy() and not b.healthy(), timeout=3)
            redis_server.start()  # same port, the append-only file brings the data back
            await until(lambda: a.healthy() and b.healthy())
            assert a.counters["reseeds"] == b.counters["reseeds"] == 0
            await b.set_admin(farm_b, farm_b.hosts["web4"], "disabled", 1.0)
            await until(lambda: farm_a.hosts["web4"].admin == "disabled")

    with RedisProcess(tmp_path / "redis", persist=True) as server:
        run(main(server))


def test_redis_back_empty_is_reseeded_from_the_servers_view(redis_server, caplog):
    caplog.set_level(logging.INFO, logger="lbdns.store")

    async def main() -> None:
        async with started(make_store(redis_server.url), make_store(redis_server.url)) as (a, b):
            farm_a, farm_b = a.registry.farms[FARM], b.registry.farms[FARM]
            await a.put_host(farm_a, HostSpec(name="web4", a=("192.0.2.13",)))
            await a.set_admin(farm_a, farm_a.hosts["web1"], "disabled", 1.0)
            await b.remove_host(farm_b, "web3")
            await b.report(farm_b, farm_b.hosts["web2"], report(1, 10, time.time()))
            await until(lambda: "web3" not in farm_a.hosts and "web4" in farm_b.hosts)
            await until(lambda: farm_a.hosts["web2"].report is not None)

            redis_server.restart()  # no persistence: it comes back empty
            await until(lambda: a.healthy() and b.healthy())
            await until(lambda: a.counters["reseeds"] + b.counters["reseeds"] >= 1)

            for farm in (farm_a, farm_b):
                assert sorted(farm.hosts) == ["web1", "web2", "web4"]
                assert farm.hosts["web1"].admin == "disabled"
            client = aioredis.from_url(redis_server.url, decode_responses=True)
            try:
                stored = await client.hgetall("lbdns:hosts")
                # The membership is back in Redis; the loads are not (they come with reports).
                assert json.loads(stored[f"{FARM} web1"])["admin"] == "disabled"
                assert json.loads(stored[f"{FARM} web3"])["removed"] is True
                assert f"{FARM} web4" in stored
                assert await client.hgetall("lbdns:reports") == {}
            finally:
                await client.aclose()
            # And it takes writes again, seen by the other server.
            await b.set_admin(farm_b, farm_b.hosts["web1"], "enabled", 2.0)
            await until(lambda: farm_a.hosts["web1"].admin == "enabled")

    run(main())
    assert "came back empty" in caplog.text and "re-seeded the membership" in caplog.text


def test_report_ages_are_held_for_the_stale_budget_then_count(redis_server):
    clock = Clock()

    async def main() -> None:
        a = make_store(redis_server.url, clock=clock, stale_budget=10.0)
        await a.start()
        try:
            farm = a.registry.farms[FARM]
            host = farm.hosts["web1"]
            received = clock.now
            await a.report(farm, host, report(1, 3, received, interval=1.0))
            assert farm.host_state(host, clock.now) == UP
            original = host.report
            redis_server.kill()
            await until(lambda: not a.healthy(), timeout=3)
            # 8 s later: without the budget the report (stale after 2 x 1 s) would be stale.
            clock.now += 8.0
            await until(lambda: farm.host_state(farm.hosts["web1"], clock.now) == UP)
            # The witness of more rounds of the store's clock: each one that holds the ages
            # tells the farm that its hosts changed, so its next view is a new one.
            for _ in range(3):
                view = farm.view()
                await until(lambda v=view: farm.view() is not v)
            assert farm.host_state(farm.hosts["web1"], clock.now) == UP
            assert farm.view().states["web1"] == UP
            # The same report object: the accounting must not take it for a new report.
            assert farm.hosts["web1"].report is original
            # Past the budget: the real age counts and the farm's stale rules apply.
            clock.now += 3.0
            await until(lambda: farm.hosts["web1"].report.received == received)
            assert farm.view().states["web1"] == STALE
        finally:
            await a.close()

    run(main())


def test_answer_counts_are_exchanged(redis_server):
    async def main() -> None:
        async with started(make_store(redis_server.url), make_store(redis_server.url)) as (a, b):
            farm_a, farm_b = a.registry.farms[FARM], b.registry.farms[FARM]
            for _ in range(5):
                farm_a.hosts["web2"].answers += 1
            farm_a.hosts["web3"].answers += 2
            await until(lambda: b.peer_answers.get(FARM, {}).get("web3") == 2)
            assert b.peer_answers[FARM]["web2"] == 5
            assert farm_b.hosts["web2"].last_answered > 0
            # The load-aware accounting: A's herds, answers and resolver queries reach B.
            accounting_a, accounting_b = farm_a.accounting, farm_b.accounting
            await until(lambda: accounting_a.outbox is not None)
            now = time.time()
            accounting_a.herd("127.0.9.9", now)
            accounting_a.charge(accounting_a.ledger("web2"), 3.0, now, "web2")
            accounting_a.answered()
            await until(lambda: accounting_b.ledger("web2").pending > 0)
            assert accounting_b.ledgers["web2"].pending == pytest.approx(3.0)
            assert accounting_b.answers == 1 and "127.0.9.9" in accounting_b.clients
            # Own answers are not counted twice. The witness that A has read back its own
            # messages: one of B's, published after B had read A's, reaches A (one Redis, one
            # subscription each: in the order they were published).
            farm_b.hosts["web1"].answers += 1
            await until(lambda: a.peer_answers.get(FARM, {}).get("web1") == 1)
            assert a.peer_answers[FARM] == {"web1": 1}
            assert b.peer_answers[FARM]["web2"] == 5
            assert accounting_a.ledgers["web2"].pending == pytest.approx(3.0)
            assert accounting_b.ledgers["web2"].pending == pytest.approx(3.0)
            assert accounting_a.answers == 1

    run(main())


def test_start_without_redis_serves_the_zone_files_and_connects_later(tmp_path):
    redis_server = RedisProcess(tmp_path / "redis")

    async def main() -> None:
        a = make_store(redis_server.url)
        await a.start()  # waits a bounded time, then serves the zone files' hosts
        try:
            assert not a.healthy()
            assert sorted(a.registry.farms[FARM].hosts) == ["web1", "web2", "web3"]
            redis_server.start()
            await until(lambda: a.healthy())
            farm = a.registry.farms[FARM]
            await a.put_host(farm, HostSpec(name="web4", a=("192.0.2.13",)))
            assert "web4" in farm.hosts
        finally:
            await a.close()
            redis_server.kill()

    run(main())


def test_reseed_keeps_the_latest_change_when_one_server_missed_it(redis_server):
    async def main() -> None:
        async with started(make_store(redis_server.url), make_store(redis_server.url)) as (a, b):
            farm_a, farm_b = a.registry.farms[FARM], b.registry.farms[FARM]
            await a.set_admin(farm_a, farm_a.hosts["web1"], "draining", 1.0)
            await until(lambda: farm_b.hosts["web1"].admin == "draining")
            await a.set_admin(farm_a, farm_a.hosts["web1"], "disabled", 2.0)
            await until(lambda: farm_b.hosts["web1"].admin == "disabled")
            # Make B's view one change behind, as if Redis had died before B heard of the last.
            key = f"{FARM} web1"
            b.overlay.farms[FARM]["web1"].admin = "draining"
            b._change_versions[key] -= 1
            b.registry.farms[FARM].hosts["web1"].admin = "draining"

            redis_server.restart()  # empty; the event loop did not run meanwhile
            await b._seed()  # the server with the older view seeds first
            await until(lambda: a.healthy() and b.healthy())
            # Whichever server seeded first, the later change wins everywhere.
            for farm in (farm_a, farm_b):
                await until(lambda farm=farm: farm.hosts["web1"].admin == "disabled")
            # New versions continue above the re-seeded ones, so the order stays right.
            await b.set_admin(farm_b, farm_b.hosts["web1"], "enabled", 3.0)
            await until(lambda: farm_a.hosts["web1"].admin == "enabled")

    run(main())


def test_a_write_redis_refuses_gets_503_naming_the_reason(redis_server):
    async def main() -> None:
        a = make_store(redis_server.url)
        await a.start()
        client = aioredis.from_url(redis_server.url)
        try:
            # As with min-replicas-to-write on a primary whose replicas are away.
            await client.config_set("min-replicas-to-write", 1)
            farm = a.registry.farms[FARM]
            with pytest.raises(Unavailable) as caught:
                await a.put_host(farm, HostSpec(name="web9", a=("192.0.2.99",)))
            assert "refused" in caught.value.reason and "NOREPLICAS" in caught.value.reason
            assert "web9" not in farm.hosts
            await client.config_set("min-replicas-to-write", 0)
            await a.put_host(farm, HostSpec(name="web9", a=("192.0.2.99",)))
            assert "web9" in farm.hosts
        finally:
            await client.aclose()
            await a.close()

    run(main())


def test_a_change_whose_message_was_lost_is_read_by_the_safety_check(redis_server):
    async def main() -> None:
        a = make_store(redis_server.url)
        await a.start()
        client = aioredis.from_url(redis_server.url, decode_responses=True)
        try:
            farm = a.registry.farms[FARM]
            await a.put_host(farm, HostSpec(name="web4", a=("192.0.2.13",)))
            await a.set_admin(farm, farm.hosts["web4"], "disabled", 1.0)
            resyncs = a.counters["resyncs"]
            # Another writer's change whose message never arrived: in Redis, not published.
            key = f"{FARM} web4"
            change = json.loads(await client.hget("lbdns:hosts", key))
            change["admin"] = None
            await client.hset("lbdns:hosts", key, json.dumps(change))
            await client.incr("lbdns:version")
            await until(lambda: farm.hosts["web4"].admin == "enabled", timeout=3)
            assert a.counters["resyncs"] > resyncs
        finally:
            await client.aclose()
            await a.close()

    run(main())


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis+sentinel://10.0.0.1:26379/lbdns", ([("10.0.0.1", 26379)], "lbdns", 0, None)),
        (
            "redis+sentinel://:pw@a:1,[::1]:2/svc/3",
            ([("a", 1), ("::1", 2)], "svc", 3, "pw"),
        ),
    ],
)
def test_sentinel_urls(url, expected):
    assert parse_sentinel_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://10.0.0.1:26379", "expected redis+sentinel://host:port"),
        ("redis+sentinel://10.0.0.1/lbdns", "sentinel address '10.0.0.1' must be host:port"),
    ],
)
def test_bad_sentinel_urls_say_what_is_wrong(url, message):
    with pytest.raises(ConfigError) as caught:
        parse_sentinel_url(url)
    assert message in str(caught.value)


def test_passwords_are_hidden_in_logs_and_status():
    assert display_url("redis://:s3cret@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert display_url("rediss://user:s3cret@h:6380/1") == "rediss://user:***@h:6380/1"
    assert display_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_serve_with_a_bad_sentinel_url_exits_with_the_reason(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lbdns", "serve", "--zones", str(EXAMPLE_ZONES)]
        + ["--dns", "127.0.0.1:0", "--http", "off", "--state", "redis+sentinel://nohost/lbdns"],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "sentinel address 'nohost' must be host:port" in result.stderr


def test_a_batch_of_reports_is_applied_as_one_by_one_keeping_the_newest_per_host(redis_server):
    async def main() -> None:
        async with started(make_store(redis_server.url), make_store(redis_server.url)) as (a, b):
            farm = a.registry.farms[FARM]
            web1, web2, web3 = (farm.hosts[h] for h in ("web1", "web2", "web3"))
            now = time.time()
            writes = a.counters["writes"]
            results = await a.reports(
                [
                    (farm, web1, report(5, 10, now)),
                    (farm, web2, report(7, 20, now)),
                    (farm, web1, report(4, 99, now)),  # older than the one before it
                    (farm, web3, report(1, 30, now)),
                    (farm, web3, report(2, 31, now)),  # newer than the one before it
                ]
            )
            assert results == [True, True, False, True, True]
            assert a.counters["writes"] == writes + 4
            assert [h.report.seq for h in (web1, web2, web3)] == [5, 7, 2]
            # Redis holds what this server holds, and the other server learns it.
            client = aioredis.from_url(redis_server.url, decode_responses=True)
            stored = await client.hgetall("lbdns:reports")
            await client.aclose()
            seqs = {key.split(" ")[1]: json.loads(value)["seq"] for key, value in stored.items()}
            assert seqs == {"web1": 5, "web2": 7, "web3": 2}
            other = b.registry.farms[FARM].hosts
            await until(lambda: other["web3"].report is not None and other["web3"].report.seq == 2)
            assert other["web1"].report.seq == 5 and other["web2"].report.seq == 7
            # Redis away: the batch is refused as a whole and nothing is applied locally.
            redis_server.kill()
            await until(lambda: not a.healthy(), timeout=3)
            with pytest.raises(Unavailable):
                await a.reports([(farm, web2, report(8, 21, time.time()))])
            assert web2.report.seq == 7

    run(main())
