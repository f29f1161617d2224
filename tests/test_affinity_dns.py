"""Keyed farms and per-host names over real DNS, against one real ``lbdns serve``."""

from __future__ import annotations

import dns.edns
import dns.message
import dns.query
import dns.rcode
import pytest
from affinity_support import (
    ADDRESS,
    CHAT,
    HOSTS,
    PLAIN,
    SUBNET,
    addresses,
    host_of,
    key_map,
    report,
    report_all,
    zones,
)
from support import LbdnsProcess, http_json

KEYS = [f"room{i}" for i in range(200)]


@pytest.fixture
def server(tmp_path):
    with LbdnsProcess(tmp_path, zones=zones(tmp_path)) as proc:
        report_all(proc)
        yield proc


def api(server, method, path, body=None):
    return http_json(server.http_url + path, body, method=method)


def test_a_key_keeps_its_host_and_keys_spread(server):
    first = key_map(server, KEYS)
    assert key_map(server, KEYS) == first
    counts = {h: list(first.values()).count(h) for h in HOSTS}
    # 200 keys over 8 equal hosts: every host has some, none has a third.
    assert min(counts.values()) > 0 and max(counts.values()) < 200 / 3, counts


def test_a_and_aaaa_name_the_same_host(server):
    for key in KEYS[:30]:
        assert host_of(server, key, "AAAA") == host_of(server, key, "A")


def test_the_key_is_case_blind(server):
    assert host_of(server, "Room7") == host_of(server, "ROOM7") == host_of(server, "room7")


def test_a_drained_host_loses_its_keys_and_gets_none_back(server):
    before = key_map(server, KEYS)
    victim = max(HOSTS, key=list(before.values()).count)
    status, _ = api(server, "POST", f"/v1/farms/{CHAT}/hosts/{victim}/drain")
    assert status == 200
    after = key_map(server, KEYS)
    assert victim not in after.values()
    # Only the drained host's keys moved.
    assert {k for k in KEYS if before[k] != after[k]} == {k for k in KEYS if before[k] == victim}
    status, _ = api(server, "POST", f"/v1/farms/{CHAT}/hosts/{victim}/enable")
    assert status == 200
    assert key_map(server, KEYS) == before  # its keys come back with it


def test_a_host_over_its_bound_passes_its_keys_to_the_next(server):
    before = key_map(server, KEYS)
    hot = before[KEYS[0]]
    report(server, CHAT, hot, seq=2, load=10 * 1000)  # far above 1.25 x the mean
    after = key_map(server, KEYS)
    assert hot not in after.values()
    assert all(after[k] == before[k] for k in KEYS if before[k] != hot)
    explain = api(server, "GET", f"/v1/farms/{CHAT}/explain")[1]
    host_of(server, KEYS[0])
    reason = api(server, "GET", f"/v1/farms/{CHAT}/explain")[1]["last_answer"]["reason"]
    assert f"{hot} is over its bound" in reason and "next on the ring" in reason
    assert explain["policy"] == "consistent-hash" and explain["balance_factor"] == 1.25


def test_per_host_names(server):
    for host in HOSTS:
        response = server.query(f"{host}.{CHAT}", "A")
        assert addresses(response) == [ADDRESS[host]]
        assert response.answer[0].ttl == 7  # the farm's TTL
        aaaa = server.query(f"{host}.{CHAT}", "AAAA")
        assert addresses(aaaa) == [f"2001:db8::{host[3:]}"]
    # A per-host name of a farm that is not keyed, and a host without IPv6: NODATA, not NXDOMAIN.
    assert addresses(server.query(f"p1.{PLAIN}", "A")) == ["192.0.2.101"]
    nodata = server.query(f"p1.{PLAIN}", "AAAA")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and nodata.authority
    txt = server.query(f"web1.{CHAT}", "TXT")
    assert txt.rcode() == dns.rcode.NOERROR and not txt.answer
    # Other names under a farm that is not keyed do not exist.
    assert server.query(f"nothing.{PLAIN}", "A").rcode() == dns.rcode.NXDOMAIN
    # Deeper names are no keys.
    assert server.query(f"a.b.{CHAT}", "A").rcode() == dns.rcode.NXDOMAIN


def test_a_per_host_name_wins_over_the_key_of_the_same_text_and_stays_while_draining(server):
    # "web3" as a key could hash anywhere; as a host name it is always web3.
    for _ in range(5):
        assert addresses(server.query(f"web3.{CHAT}", "A")) == [ADDRESS["web3"]]
    api(server, "POST", f"/v1/farms/{CHAT}/hosts/web3/drain")
    assert addresses(server.query(f"web3.{CHAT}", "A")) == [ADDRESS["web3"]]
    hosts = {h["host"]: h for h in api(server, "GET", f"/v1/farms/{CHAT}/explain")[1]["hosts"]}
    assert hosts["web3"]["name"] == f"web3.{CHAT}" and hosts["web3"]["state"] == "draining"


def test_a_static_name_under_the_farm_wins(server):
    assert "a static name" in server.query(f"static.{CHAT}", "TXT").answer[0].to_text()
    response = server.query(f"static.{CHAT}", "A")
    assert response.rcode() == dns.rcode.NOERROR and not response.answer


def test_a_removed_host_name_is_nxdomain(server):
    status, _ = api(server, "PUT", f"/v1/farms/{PLAIN}/hosts/p3", {"a": "192.0.2.103"})
    assert status in (200, 201)
    assert addresses(server.query(f"p3.{PLAIN}", "A")) == ["192.0.2.103"]
    status, _ = api(server, "DELETE", f"/v1/farms/{PLAIN}/hosts/p3?force=true")
    assert status == 200
    assert server.query(f"p3.{PLAIN}", "A").rcode() == dns.rcode.NXDOMAIN


def test_a_dotted_host_name_and_the_empty_name_above_it(server):
    status, _ = api(server, "PUT", f"/v1/farms/{CHAT}/hosts/web1.eu", {"a": "192.0.2.77"})
    assert status in (200, 201)
    assert addresses(server.query(f"web1.eu.{CHAT}", "A")) == ["192.0.2.77"]
    above = server.query(f"eu.{CHAT}", "A")  # not a key: the name exists, with no records
    assert above.rcode() == dns.rcode.NOERROR and not above.answer and above.authority


def test_in_a_label_keyed_farm_a_removed_host_name_becomes_a_key(server):
    status, _ = api(server, "PUT", f"/v1/farms/{CHAT}/hosts/web9", {"a": "192.0.2.9"})
    assert status in (200, 201)
    assert addresses(server.query(f"web9.{CHAT}", "A")) == ["192.0.2.9"]  # never reported
    status, _ = api(server, "DELETE", f"/v1/farms/{CHAT}/hosts/web9?force=true")
    assert status == 200
    assert host_of(server, "web9") in HOSTS


def test_adding_a_host_moves_only_its_share(server):
    before = key_map(server, KEYS)
    status, _ = api(server, "PUT", f"/v1/farms/{CHAT}/hosts/web9", {"a": "192.0.2.9"})
    assert status in (200, 201)
    report(server, CHAT, "web9", seq=1)
    after = key_map(server, KEYS)
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(after[k] == "web9" for k in moved)
    assert 0 < len(moved) <= 2.5 * len(KEYS) / 9  # ~1/9 of them; 200 keys are a small sample


def ecs_query(server, subnet: str, prefix: int):
    option = dns.edns.ECSOption(subnet, prefix)
    query = dns.message.make_query(SUBNET, "A", use_edns=0, options=[option])
    return dns.query.udp(query, server.host, port=server.port, timeout=3)


def test_client_subnet_key_from_ecs_echoes_the_scope(server):
    response = ecs_query(server, "198.51.100.77", 32)
    (option,) = [o for o in response.options if isinstance(o, dns.edns.ECSOption)]
    assert option.srclen == 32 and option.scopelen == 24  # valid for the whole /24
    # The same query again takes the repeated-query path: the same host, the option echoed.
    again = ecs_query(server, "198.51.100.77", 32)
    assert addresses(again) == addresses(response)
    assert [(o.srclen, o.scopelen) for o in again.options] == [(32, 24)]
    # The same /24 keeps its host; other subnets spread over the hosts.
    host = addresses(response)
    for last in (1, 2, 250):
        assert addresses(ecs_query(server, f"198.51.100.{last}", 32)) == host
    spread = {tuple(addresses(ecs_query(server, f"10.{i}.0.0", 24))) for i in range(64)}
    assert len(spread) >= 4
    # The resolver's own /24 without ECS; the assignment API without a key agrees with it.
    plain = addresses(server.query(SUBNET, "A"))
    again = addresses(ecs_query(server, "127.0.0.0", 24))
    assert plain == again
    status, body = api(server, "GET", f"/v1/farms/{SUBNET}/assign")
    assert status == 200 and body["key"] == "127.0.0.0/24" and body["a"] == plain


def test_the_bare_name_of_a_label_keyed_farm_is_keyed_by_the_resolver(server):
    first = addresses(server.query(CHAT, "A"))
    assert len(first) == 1
    for _ in range(5):
        assert addresses(server.query(CHAT, "A")) == first


def test_a_cookie_rides_along_with_the_echoed_client_subnet(server):
    # Both options in one OPT: the subnet echoed with its scope, the cookie answered (RFC 7873).
    options = [dns.edns.ECSOption("198.51.100.77", 32), dns.edns.CookieOption(b"c" * 8, b"")]
    query = dns.message.make_query(SUBNET, "A", use_edns=0, options=options)
    response = dns.query.udp(query, server.host, port=server.port, timeout=3)
    by_type = {o.otype: o for o in response.options}
    assert (by_type[dns.edns.ECS].srclen, by_type[dns.edns.ECS].scopelen) == (32, 24)
    assert by_type[dns.edns.COOKIE].client == b"c" * 8
    assert len(by_type[dns.edns.COOKIE].server) == 16
    assert addresses(response) == addresses(ecs_query(server, "198.51.100.77", 32))
