"""A keyed farm (policy consistent-hash) in process: the ring, the bound, A/AAAA, assignments.

Deterministic: a stand-in clock and a seeded random source, no sockets (the same over real DNS
and HTTP, with one server and with two, is in test_affinity_*.py).
"""

from __future__ import annotations

import random

import pytest
from dnslib import QTYPE

from lbdns.balance.accounting import DIRECT
from lbdns.balance.explain import farm_explanation
from lbdns.balance.farm import Assignment, Farm
from lbdns.balance.host import Report
from lbdns.testing.clock import Clock
from lbdns.zone.parse import parse_text

A, AAAA = QTYPE.A, QTYPE.AAAA
HOSTS = ["a", "b", "c", "d"]


def make_farm(settings: str = "") -> Farm:
    lines = "\n".join(
        f"      {h}: {{a: 192.0.2.{10 + i}, aaaa: '2001:db8::{10 + i}'}}"
        for i, h in enumerate(HOSTS)
    )
    extra = "".join(f"    {line}\n" for line in settings.splitlines() if line.strip())
    text = (
        "zone: t.\nsoa: {}\nns: [ns1]\nrecords: {ns1: {A: 192.0.2.1}}\nfarms:\n"
        f"  f:\n    ttl: 8\n    policy: consistent-hash\n{extra}    hosts:\n{lines}\n"
    )
    farm = Farm(parse_text(text).farms["f.t."], clock=Clock(1000.0), rng=random.Random(5))
    for host in HOSTS:
        report(farm, host, 100)
    return farm


def report(farm: Farm, host: str, connections: float) -> None:
    current = farm.hosts[host].report
    farm.hosts[host].report = Report(
        seq=current.seq + 1 if current else 1,
        received=farm.clock(),
        interval=60.0,
        healthy=True,
        metrics={"connections": float(connections)},
    )
    farm.changed()


def test_a_key_keeps_its_host_and_each_answer_is_charged():
    farm = make_farm()
    first = farm.choose_key(A, "room1", "198.51.100.1")
    assert farm.choose_key(A, "room1", "198.51.100.2") == first
    in_flight = farm.accounting.ledgers[first[0]].pending
    assert in_flight == pytest.approx(2.0)  # two resolvers, a herd of one each (the prior)
    assert farm.last.how == "key" and farm.last.key == "room1"


def test_a_direct_askers_keyed_answers_are_charged_at_once_as_least_load_charges_them():
    farm = make_farm()
    for _ in range(4):  # re-asks within half the TTL: a direct asker after two of them
        (host,) = farm.choose_key(A, "room1", "198.51.100.7")
        farm.clock.advance(0.5)
    ledger = farm.accounting.ledgers[host]
    assert farm.accounting.clients["198.51.100.7"].direct
    # The first three answers over the cache time (new, then caching), the rest at once.
    assert sum(bucket[2] for bucket in ledger.tracks[DIRECT]) == 2
    assert sum(bucket[2] for bucket in ledger.tracks[8.0]) == 2
    assert farm.last.asker == "direct"
    explained = farm_explanation(farm)["last_answer"]
    assert explained["asker"] == "direct" and "does not cache" in explained["ttl_reason"]
    assert explained["candidates"][0]["host"] in HOSTS  # named again from the plain tuples


def test_the_other_family_a_moment_later_is_the_same_host_and_not_charged_again():
    farm = make_farm()
    (host,) = farm.choose_key(A, "room1", "198.51.100.1")
    pending = farm.accounting.ledgers[host].pending
    report(farm, host, 150)  # over 1.25 x the mean (451 / 4): a new answer goes elsewhere...
    farm.hosts[host].report.received = farm.clock()
    assert farm.choose_key(AAAA, "room1", "198.51.100.1") == (host,)  # ...but not the AAAA
    assert farm.last.how == "sticky"
    farm.clock.advance(8 / 4 + 0.1)  # past a quarter of the cache time: a new choice
    assert farm.choose_key(AAAA, "room1", "198.51.100.1") != (host,)
    assert pending > 0


def test_a_host_over_c_times_the_mean_passes_new_answers_on():
    farm = make_farm("balance_factor: 1.5")
    (home,) = farm.choose_key(A, "room1")
    report(farm, home, 225)  # above 1.5 x the mean, 1.5 x (225 + 300 + 1) / 4 = 197
    (other,) = farm.choose_key(A, "room1")
    assert other != home
    assert f"{home} is over its bound" in farm_explanation(farm)["last_answer"]["reason"]
    report(farm, home, 100)
    assert farm.choose_key(A, "room1") == (home,)  # back within its bound: back home


def test_a_draining_host_is_never_named_and_gets_its_keys_back_when_enabled():
    farm = make_farm()
    keys = [f"k{i}" for i in range(100)]
    before = {k: farm.choose_key(A, k)[0] for k in keys}
    farm.hosts["b"].admin = "draining"
    farm.changed()
    during = {k: farm.choose_key(A, k)[0] for k in keys}
    assert "b" not in during.values()
    assert all(during[k] == before[k] for k in keys if before[k] != "b")
    farm.hosts["b"].admin = "enabled"
    farm.changed()
    assert {k: farm.choose_key(A, k)[0] for k in keys} == before


def test_the_ring_is_built_once_per_change_of_hosts():
    farm = make_farm()
    farm.choose_key(A, "x")
    ring = farm.ring
    report(farm, "a", 50)  # a new view, the same hosts: the same ring
    farm.choose_key(A, "x")
    assert farm.ring is ring
    farm.hosts["a"].spec = type(farm.hosts["a"].spec)(name="a", a=("192.0.2.10",), capacity=3.0)
    farm.changed()
    farm.choose_key(A, "x")
    assert farm.ring is not ring


def test_assign_charges_exactly_one_connection():
    farm = make_farm()
    chosen = farm.assign("room9")
    assert isinstance(chosen, Assignment) and chosen.how == "key"
    assert farm.accounting.ledgers[chosen.host].pending == pytest.approx(1.0)
    assert farm.choose_key(A, "room9") == (chosen.host,)
    keyless = farm.assign(None)
    assert keyless.how == "policy"


def test_keys_are_the_same_for_every_farm_object():
    # Two servers build their rings independently: the same hosts map every key alike.
    one, two = make_farm(), make_farm()
    for i in range(200):
        assert one.choose_key(A, f"k{i}") == two.choose_key(A, f"k{i}")
