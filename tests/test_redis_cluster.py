"""Several real ``lbdns serve`` processes sharing one real ``redis-server``, and its faults.

Each test starts Redis and two or three lbdns servers with ``--state redis://…``, changes
state through one server's HTTP API (or through a Redis store in the test process, standing for
another server), and checks the answers every server gives over real DNS while Redis or a
server is killed and restarted.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from redis_support import RedisProcess, redis_available
from support import LbdnsProcess, http_json, wait_for

from lbdns.balance.host import Report
from lbdns.config import Config
from lbdns.registry import Registry
from lbdns.store.redis.store import RedisStore
from lbdns.zone.parse import load_folder

pytestmark = [
    pytest.mark.skipif(not redis_available(), reason="redis-server is not installed"),
    pytest.mark.timeout(40),
]

FARM = "app.cluster.test."
ZONE = """\
zone: cluster.test.
ttl: 300
soa: {mname: ns1.cluster.test., rname: hostmaster.cluster.test.}
ns: [ns1.cluster.test., ns2.cluster.test.]
records:
  ns1: {A: 192.0.2.53}
  ns2: {A: 192.0.2.54}
farms:
  app:
    ttl: 5
    policy: lowest-score
    all_unhealthy: ALL_UNHEALTHY
    hosts:
      web1: {a: 192.0.2.1}
      web2: {a: 192.0.2.2}
      web3: {a: 192.0.2.3}
"""


def zones(tmp: Path, all_unhealthy: str = "fail-open") -> Path:
    folder = tmp / "zones"
    folder.mkdir(exist_ok=True)
    (folder / "cluster.test.yaml").write_text(ZONE.replace("ALL_UNHEALTHY", all_unhealthy))
    return folder


def servers(
    tmp: Path, redis: RedisProcess, count: int, all_unhealthy: str = "fail-open", **config
) -> list[LbdnsProcess]:
    config_file = tmp / "lbdns.yaml"
    config_file.write_text(json.dumps({"redis_prefix": "test:", **config}))
    started = []
    for _ in range(count):
        process = LbdnsProcess(
            tmp, zones=zones(tmp, all_unhealthy), config=config_file, extra=("--state", redis.url)
        )
        started.append(process.start())
    return started


def answer(server: LbdnsProcess) -> tuple[str, ...] | str:
    """The A records a resolver gets for the farm name from ``server`` (or the rcode)."""
    response = server.query(FARM, "A")
    if response.rcode() != 0:
        return f"rcode {response.rcode()}"
    addresses = sorted(rr.address for rrset in response.answer for rr in rrset)
    return tuple(addresses) if addresses else "nodata"


def wait_answers(group: list[LbdnsProcess], expected, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        got = [answer(s) for s in group]
        if all(g == expected for g in got):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {expected} from every server, got {got}")
        time.sleep(0.02)


def api(server: LbdnsProcess, method: str, path: str, body=None) -> tuple[int, dict]:
    return http_json(server.http_url + path, body, method=method)


def ok(result: tuple[int, dict]) -> dict:
    status, body = result
    assert status in (200, 201), body
    return body


def report_body(host: str, connections: float, seq: int, interval: float = 1.0) -> dict:
    return {
        "farm": FARM,
        "host": host,
        "seq": seq,
        "interval": interval,
        "metrics": {"connections": connections},
    }


class Writer:
    """A Redis store in the test process: stands for another server that takes reports."""

    def __init__(self, tmp: Path, url: str):
        registry = Registry()
        registry.load_zones(load_folder(tmp / "zones"))  # as the servers loaded it
        self.store = RedisStore(registry, url, Config(state=url, redis_prefix="test:"))
        self.farm = registry.farms[FARM]
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.store.start())

    def report(self, host: str, connections: float, seq: int, interval: float = 1.0) -> None:
        report = Report(seq, time.time(), interval, True, {"connections": connections})
        coro = self.store.report(self.farm, self.farm.hosts[host], report)
        assert self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.loop.run_until_complete(self.store.close())
        self.loop.close()


@pytest.fixture
def redis_server(tmp_path):
    with RedisProcess(tmp_path / "redis") as server:
        yield server


def test_a_change_on_one_server_is_answered_by_all(tmp_path, redis_server):
    group = servers(tmp_path, redis_server, 3)
    try:
        a, b, c = group
        ok(api(a, "PUT", f"/v1/farms/{FARM}/hosts/web4", {"a": "192.0.2.4"}))
        for name in ("web1", "web2", "web3"):
            ok(api(b, "POST", f"/v1/farms/{FARM}/hosts/{name}/disable"))
        wait_answers(group, ("192.0.2.4",))
        ok(api(c, "POST", f"/v1/farms/{FARM}/hosts/web4/drain"))
        ok(api(a, "POST", f"/v1/farms/{FARM}/hosts/web2/enable"))
        wait_answers(group, ("192.0.2.2",))
        hosts = {h["name"]: h for h in ok(api(a, "GET", f"/v1/farms/{FARM}"))["hosts"]}
        assert hosts["web4"]["state"] == "draining"
        health = ok(api(b, "GET", "/v1/health"))["store"]
        assert health["kind"] == "redis" and health["healthy"] is True
    finally:
        for server in group:
            server.stop()


def test_a_killed_server_leaves_the_others_answering_the_same(tmp_path, redis_server):
    group = servers(tmp_path, redis_server, 3)
    writer = Writer(tmp_path, redis_server.url)
    try:
        a, b, c = group
        # Reports accepted by A (the agents' HTTP ingest) are answered by all.
        for seq, (host, load) in enumerate([("web1", 30), ("web2", 5), ("web3", 20)]):
            ok(api(a, "POST", "/v1/report", report_body(host, load, seq, interval=30.0)))
        wait_answers(group, ("192.0.2.2",))
        a.proc.kill()  # as a crash: no clean shutdown
        a.proc.wait(timeout=5)
        wait_answers([b, c], ("192.0.2.2",))
        # The survivors still share changes: web2 drains, both move to the next least loaded.
        ok(api(b, "POST", f"/v1/farms/{FARM}/hosts/web2/drain"))
        wait_answers([b, c], ("192.0.2.3",))
        writer.report("web1", 1, 10, interval=30.0)
        wait_answers([b, c], ("192.0.2.1",))
    finally:
        writer.close()
        for server in group:
            server.stop()


def test_redis_away_then_back_empty(tmp_path, redis_server):
    group = servers(tmp_path, redis_server, 2, stale_budget=30)
    try:
        a, b = group
        ok(api(a, "PUT", f"/v1/farms/{FARM}/hosts/web4", {"a": "192.0.2.4"}))
        for name in ("web1", "web2", "web3"):
            ok(api(a, "POST", f"/v1/farms/{FARM}/hosts/{name}/disable"))
        wait_answers(group, ("192.0.2.4",))

        redis_server.kill()
        # Both keep answering from their last snapshot...
        wait_answers(group, ("192.0.2.4",))
        # ...and refuse writes with 503 and a message that says why, on either server.
        deadline = time.monotonic() + 3
        while True:
            status, body = api(b, "POST", f"/v1/farms/{FARM}/hosts/web1/enable")
            if status == 503 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert status == 503, body
        assert "unreachable" in body["error"] and "not applied" in body["error"]
        status, body = api(a, "POST", "/v1/report", report_body("web4", 1, 1))
        assert status == 503 and "unreachable" in body["error"], body
        assert ok(api(a, "GET", "/v1/health"))["store"]["healthy"] is False
        wait_answers(group, ("192.0.2.4",))

        redis_server.start()  # no persistence: Redis comes back empty
        deadline = time.monotonic() + 5
        while not all(ok(api(s, "GET", "/v1/health"))["store"]["healthy"] for s in group):
            assert time.monotonic() < deadline, "the servers did not reconnect"
            time.sleep(0.05)
        # The membership was re-seeded from the servers' view; the answers did not change.
        wait_answers(group, ("192.0.2.4",))
        assert any("came back empty" in s.log() for s in group)
        # Writes work again and reach the other server.
        ok(api(b, "POST", f"/v1/farms/{FARM}/hosts/web1/enable"))
        ok(api(b, "POST", f"/v1/farms/{FARM}/hosts/web4/disable"))
        wait_answers(group, ("192.0.2.1",))
    finally:
        for server in group:
            server.stop()


def unreachable_for(server: LbdnsProcess) -> float:
    """How long ``server`` has found Redis away, by its own clock (0 while connected)."""
    return ok(api(server, "GET", "/v1/health"))["store"]["unreachable_for"] or 0.0


def test_after_the_stale_budget_the_farm_rules_for_stale_hosts_apply(tmp_path, redis_server):
    budget = 3.0
    group = servers(tmp_path, redis_server, 2, all_unhealthy="nodata", stale_budget=budget)
    writer = Writer(tmp_path, redis_server.url)
    try:
        for seq, (host, load) in enumerate([("web1", 30), ("web2", 5), ("web3", 20)]):
            writer.report(host, load, seq, interval=0.5)  # stale after 2 x 0.5 s
        wait_answers(group, ("192.0.2.2",))
        redis_server.kill()
        killed = time.monotonic()
        writer.close()
        # The witness, by each server's own clock: Redis away for longer than the reports take
        # to go stale (1 s), and the reports are older still (sent before Redis went).
        for server in group:
            wait_for(lambda s=server: unreachable_for(s) >= 1.2, what="Redis away for 1.2 s")
        # Without the held ages the reports would be stale by now: still answered.
        assert [answer(s) for s in group] == [("192.0.2.2",)] * 2
        # Past the budget every host is stale; this farm's all-unhealthy rule says NODATA.
        wait_answers(group, "nodata", timeout=budget + 2)
        assert time.monotonic() - killed >= budget - 0.1
    finally:
        for server in group:
            server.stop()


def test_zone_reload_keeps_the_shared_changes(tmp_path, redis_server):
    group = servers(tmp_path, redis_server, 2)
    try:
        a, b = group
        ok(api(a, "PUT", f"/v1/farms/{FARM}/hosts/web4", {"a": "192.0.2.4"}))
        ok(api(a, "POST", f"/v1/farms/{FARM}/hosts/web1/disable"))
        zone_file = tmp_path / "zones" / "cluster.test.yaml"
        zone_file.write_text(
            zone_file.read_text().replace(
                "      web3: {a: 192.0.2.3}\n",
                "      web3: {a: 192.0.2.3}\n      web5: {a: 192.0.2.5}\n",
            )
        )
        for server in group:
            ok(api(server, "POST", "/v1/reload"))
        for server in group:
            hosts = {h["name"]: h for h in ok(api(server, "GET", f"/v1/farms/{FARM}"))["hosts"]}
            assert set(hosts) == {"web1", "web2", "web3", "web4", "web5"}
            assert hosts["web1"]["state"] == "disabled"
        # Changes after the reload still reach the other server.
        for name in ("web2", "web3", "web4"):
            ok(api(b, "POST", f"/v1/farms/{FARM}/hosts/{name}/disable"))
        wait_answers(group, ("192.0.2.5",))
    finally:
        for server in group:
            server.stop()
