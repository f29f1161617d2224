"""Keyed farms across two real ``lbdns serve`` processes sharing one real ``redis-server``."""

from __future__ import annotations

import pytest
from affinity_support import CHAT, HOSTS, config, key_map, report, report_all, zones
from redis_support import RedisProcess, redis_available
from support import LbdnsProcess, http_json, wait_for

pytestmark = [
    pytest.mark.skipif(not redis_available(), reason="redis-server is not installed"),
    pytest.mark.timeout(60),
]

KEYS = [f"room{i}" for i in range(200)]


@pytest.fixture
def pair(tmp_path):
    with RedisProcess(tmp_path / "redis") as redis:
        folder = zones(tmp_path)
        settings = config(tmp_path, redis_prefix="aff:")
        group = [
            LbdnsProcess(tmp_path, zones=folder, config=settings, extra=("--state", redis.url))
            for _ in range(2)
        ]
        try:
            for server in group:
                server.start()
            report_all(group[0])
            for server in group:
                wait_for(lambda s=server: all_up(s), timeout=10, what="reports on every server")
            yield group
        finally:
            for server in group:
                server.stop()


def explain(server) -> dict:
    status, body = http_json(server.http_url + f"/v1/farms/{CHAT}/explain")
    assert status == 200, body
    return body


def all_up(server, hosts=HOSTS) -> bool:
    states = {h["host"]: h["state"] for h in explain(server)["hosts"]}
    return all(states.get(h) == "up" for h in hosts)


def api(server, method, path, body=None):
    status, reply = http_json(server.http_url + path, body, method=method)
    assert status in (200, 201), reply
    return reply


def test_every_server_maps_a_key_to_the_same_host(pair):
    a, b = pair
    assert key_map(a, KEYS) == key_map(b, KEYS)


def test_an_assignment_on_one_server_is_charged_on_both(pair):
    a, b = pair
    host = api(a, "GET", f"/v1/farms/{CHAT}/assign?key=room1")["host"]

    def charged():
        flight = {h["host"]: h["in_flight"] for h in explain(b)["hosts"]}
        return flight[host] >= 0.9 and flight

    flight = wait_for(charged, timeout=5, what="the peer's charge")
    # The one connection, once (not twice), less what time has already settled of it.
    assert flight[host] == pytest.approx(1.0, abs=0.1)


def test_a_host_added_takes_only_its_share_on_both(pair):
    a, b = pair
    before = key_map(a, KEYS)
    api(a, "PUT", f"/v1/farms/{CHAT}/hosts/web9", {"a": "192.0.2.9"})
    report(a, CHAT, "web9", seq=1)
    wait_for(lambda: all_up(b, [*HOSTS, "web9"]), timeout=10, what="web9 up on the peer")
    after_a, after_b = key_map(a, KEYS), key_map(b, KEYS)
    assert after_a == after_b
    moved = [k for k in KEYS if before[k] != after_a[k]]
    assert moved and all(after_a[k] == "web9" for k in moved)
    assert len(moved) <= 2.5 * len(KEYS) / 9


def test_a_drained_host_loses_its_keys_on_both_and_none_return(pair):
    a, b = pair
    before = key_map(a, KEYS)
    victim = max(HOSTS, key=list(before.values()).count)
    api(b, "POST", f"/v1/farms/{CHAT}/hosts/{victim}/drain")
    wait_for(
        lambda: {h["host"]: h["state"] for h in explain(a)["hosts"]}[victim] == "draining",
        timeout=10,
        what="the drain on the peer",
    )
    for _ in range(3):  # and again: none comes back while it drains
        after_a, after_b = key_map(a, KEYS), key_map(b, KEYS)
        assert after_a == after_b
        assert victim not in after_a.values()
        assert {k for k in KEYS if before[k] != after_a[k]} == {
            k for k in KEYS if before[k] == victim
        }
