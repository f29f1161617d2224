"""Who caches: direct askers, dead hosts' charges, herd-sized TTLs, over real DNS and HTTP.

A real ``lbdns serve`` on loopback; answers are asked with dnspython from 127.0.0.x source
addresses (one per simulated resolver), reports are posted over HTTP as agents post them.
"""

from __future__ import annotations

import time

import dns.message
import dns.query
import dns.rdatatype
import pytest
from support import LbdnsProcess, http_json

FARM = "web.herd.test."
ZONE = """\
zone: herd.test.
soa: {}
ns: [ns1]
records:
  ns1: {A: 192.0.2.53}
farms:
  web:
    ttl: %(ttl)d
%(extra)s    hosts:
      web1: {a: 192.0.2.1}
      web2: {a: 192.0.2.2}
      web3: {a: 192.0.2.3}
"""
ADDRESSES = {"192.0.2.1": "web1", "192.0.2.2": "web2", "192.0.2.3": "web3"}


def start(tmp_path, ttl: int = 5, extra: str = "") -> LbdnsProcess:
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "herd.yaml").write_text(ZONE % {"ttl": ttl, "extra": extra})
    return LbdnsProcess(tmp_path, zones=zones)  # started by the with statement


def post(process: LbdnsProcess, loads: dict[str, int], seq: int, accepted: dict | None = None):
    reports = []
    for host, connections in loads.items():
        metrics = {"connections": connections}
        if accepted is not None:
            metrics["accepted"] = accepted[host]
        reports.append(
            {"farm": FARM, "host": host, "seq": seq, "interval": 1.0, "metrics": metrics}
        )
    status, body = http_json(f"{process.http_url}/v1/reports", {"reports": reports})
    assert status == 200, body


def ask(process: LbdnsProcess, source: str = "127.0.0.1") -> dns.message.Message:
    query = dns.message.make_query(FARM, "A")
    return dns.query.udp(query, process.host, port=process.port, timeout=3, source=source)


def hosts_of(response: dns.message.Message) -> list[str]:
    return [ADDRESSES[r.address] for rrset in response.answer for r in rrset]


def explain(process: LbdnsProcess) -> dict:
    status, body = http_json(f"{process.http_url}/v1/farms/{FARM}/explain")
    assert status == 200
    return body


@pytest.mark.parametrize("rate", [2, 20])
def test_a_polling_client_gets_one_record_that_follows_reported_load(tmp_path, rate):
    """The ``dig`` loop straight at lbdns: 30 connections on web2, none on web1 and web3, no
    arrivals (the agents' health checks are not counted). The client re-asks within the TTL, so
    it is no resolver with a herd behind it: each answer names one empty host."""
    with start(tmp_path) as process:
        loads = {"web1": 0, "web2": 30, "web3": 0}
        accepted = {"web1": 100, "web2": 100, "web3": 100}
        seq = 1
        post(process, loads, seq, accepted)
        answers = []
        count = 2 * rate if rate == 20 else 12
        next_report = time.monotonic() + 1.0
        for _ in range(count):
            answers.append(hosts_of(ask(process)))
            if time.monotonic() >= next_report:  # agents keep reporting, nothing arrives
                seq += 1
                post(process, loads, seq, accepted)
                next_report += 1.0
            time.sleep(1.0 / rate)
        assert all(len(a) == 1 for a in answers), answers
        empty = sum(1 for a in answers if a[0] != "web2")
        assert empty >= 0.95 * len(answers), answers
        info = explain(process)
        assert info["last_answer"]["asker"] == "direct"
        assert info["accounting"]["direct_askers"] == 1
        assert "does not cache" in info["last_answer"]["ttl_reason"]


def test_a_polling_client_follows_load_when_it_moves(tmp_path):
    """Load decides: when web1 fills up and web2 empties, the same polling client follows."""
    with start(tmp_path) as process:
        accepted = {"web1": 0, "web2": 0, "web3": 0}
        post(process, {"web1": 0, "web2": 30, "web3": 30}, 1, accepted)
        first = [hosts_of(ask(process))[0] for _ in range(10)]
        post(process, {"web1": 30, "web2": 0, "web3": 30}, 2, accepted)
        then = [hosts_of(ask(process))[0] for _ in range(10)]
        assert first.count("web1") >= 9 and then.count("web2") >= 9, (first, then)


def test_a_dead_hosts_charges_decay_by_time(tmp_path):
    """Charges expire after the host's staleness horizon even when no report comes: explain
    shows no in-flight load and no recent share for a host whose agent died."""
    with start(tmp_path, ttl=2) as process:
        post(process, {"web1": 0, "web2": 10, "web3": 10}, 1)
        for i in range(5):  # five resolvers, one answer each (a herd of 1 each): web1
            ask(process, f"127.0.0.{10 + i}")
        web1 = next(h for h in explain(process)["hosts"] if h["host"] == "web1")
        assert web1["in_flight"] > 0 and web1["share_recent"] == 1.0
        # web1's agent dies; the others keep reporting. Horizon: max(ttl, 2 x interval) = 2 s.
        deadline = time.monotonic() + 10
        seq = 1
        while time.monotonic() < deadline:
            seq += 1
            post(process, {"web2": 10, "web3": 10}, seq)
            web1 = next(h for h in explain(process)["hosts"] if h["host"] == "web1")
            if web1["in_flight"] == 0 and web1["answers_recent"] == 0:
                break
            time.sleep(0.5)
        assert web1["state"] == "stale"
        assert web1["in_flight"] == 0 and web1["share_recent"] == 0.0


def test_a_big_resolver_gets_a_shorter_ttl_and_a_small_one_keeps_the_farm_ttl(tmp_path):
    """Two resolvers asking as soon as their caches expire behind 40 arrivals a second: the one
    that carries most of them gets a TTL cut towards min_ttl, never below it; the farm's ttl
    stays the ceiling."""
    with start(tmp_path, ttl=4, extra="    min_ttl: 2\n") as process:
        loads = {"web1": 100, "web2": 100, "web3": 100}
        accepted = dict.fromkeys(loads, 0)
        seq = 0
        big, small = "127.0.0.20", "127.0.0.21"
        ttls: dict[str, list[int]] = {big: [], small: []}
        expires = {big: 0.0, small: 0.0}
        last_ask = {small: 0.0}
        start_time = time.monotonic()
        next_report = start_time
        while time.monotonic() - start_time < 16:
            now = time.monotonic()
            if now >= next_report:
                seq += 1
                for host in accepted:  # 40 arrivals a second over the farm
                    accepted[host] += 13
                post(process, loads, seq, accepted)
                next_report += 1.0
            if now >= expires[big]:  # saturated: asks the moment its cache expires
                response = ask(process, big)
                ttl = response.answer[0].ttl
                ttls[big].append(ttl)
                expires[big] = now + ttl
            if now >= expires[small] and now - last_ask[small] >= 4 + 3:  # clients are rare
                response = ask(process, small)
                ttl = response.answer[0].ttl
                ttls[small].append(ttl)
                expires[small] = now + ttl
                last_ask[small] = now
            time.sleep(0.02)
        assert min(ttls[big]) >= 2 and max(ttls[small]) <= 4
        assert ttls[big][-1] == 2, ttls  # its herd at 4 s is over budget: cut to min_ttl
        assert ttls[small][-1] == 4, ttls  # small herd: the farm's ttl
        info = explain(process)
        assert info["last_answer"]["ttl"] in (2, 4)
        assert info["accounting"]["herd_budget"] is not None
