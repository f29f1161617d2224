"""A farm's compiled answer to direct askers (lbdns/balance/_direct.c) against the Python.

Twin farms, keyed (``Farm.choose_key``) and least-load (``Farm.answer``), the same zone, clock
steps, reports, admin changes and other servers' charges; one answers through the compiled
chooser, the other in Python. After every step every field either
path touches must be equal, to the last bit of every float. The compiled path must have
answered most queries itself, and handed the rest (new clients, caching resolvers, expired
views, hosts over their bound) to Python. Over real DNS, the same twins are in
test_udp_compiled.py.
"""

from __future__ import annotations

import dataclasses
import gc
import random
import weakref

import pytest
from dnslib import QTYPE

from lbdns.balance import farm as farm_module
from lbdns.balance.farm import Farm
from lbdns.balance.host import Report
from lbdns.testing.clock import Clock
from lbdns.zone.parse import parse_text

_direct = farm_module._direct
A, AAAA = QTYPE.A, QTYPE.AAAA
# b has twice the capacity; d has no IPv6 address, so the candidates differ by family.
HOSTS = {
    "a": "{a: 192.0.2.10, aaaa: '2001:db8::10'}",
    "b": "{a: 192.0.2.11, aaaa: '2001:db8::11', capacity: 2}",
    "c": "{a: 192.0.2.12, aaaa: '2001:db8::12'}",
    "d": "{a: 192.0.2.13}",
    "e": "{a: 192.0.2.14, aaaa: '2001:db8::14'}",
}
DIRECT_ASKERS = ["127.0.0.1", "198.51.100.7"]  # re-ask every few tens of milliseconds
CACHING = ["203.0.113.9", "203.0.113.10"]  # ask after their TTL


def zone_text(policy: str, extra: str = "") -> str:
    hosts = "".join(f"      {name}: {spec}\n" for name, spec in HOSTS.items())
    return (
        "zone: t.\nsoa: {}\nns: [ns1]\nrecords: {ns1: {A: 192.0.2.1}}\nfarms:\n"
        f"  f:\n    ttl: 4\n    policy: {policy}\n{extra}    hosts:\n{hosts}"
    )


def make_farm(compiled: bool, extra: str = "", policy: str = "consistent-hash") -> Farm:
    spec = parse_text(zone_text(policy, extra)).farms["f.t."]
    farm = Farm(spec, clock=Clock(1000.0), rng=random.Random(5), compiled=compiled)
    for host in HOSTS:
        report(farm, host, 100.0, 0.0)
    return farm


def report(farm: Farm, host: str, connections: float, accepted: float) -> None:
    current = farm.hosts[host].report
    farm.hosts[host].report = Report(
        seq=current.seq + 1 if current else 1,
        received=farm.clock(),
        interval=2.0,
        healthy=True,
        metrics={"connections": connections, "accepted": accepted},
    )
    farm.changed()


def state(farm: Farm) -> tuple:
    """Everything a key answer reads or changes."""
    accounting = farm.accounting
    assert accounting is not None
    return (
        farm.seq,
        farm._last,
        {qtype: list(live) for qtype, live in farm._live.items()},
        {
            name: (
                ledger.pending,
                ledger.window_answers,
                ledger.unit,
                {cache: [list(b) for b in track] for cache, track in ledger.tracks.items()},
            )
            for name, ledger in accounting.ledgers.items()
        },
        {client: dataclasses.astuple(stat) for client, stat in accounting.clients.items()},
        (accounting.mean_herd, accounting.answers, accounting.direct, accounting.raw_rate),
        dict(farm._key_sticky),
        dict(farm._sticky),
        farm.rng.getstate(),  # least-load breaks ties with it
        dict(farm._key_positions),
        {name: (host.answers, host.last_answered) for name, host in farm.hosts.items()},
    )


def counting_chooser(farm: Farm, handed: list) -> object:
    """The chooser as ``Farm`` makes it, with a fallback that counts what it was handed."""
    python = farm.choose_key_at if farm.spec.keyed else farm.answer_at

    def fallback(*args):
        handed.append(args)
        return python(*args)

    return farm._direct_chooser(fallback)


def ask(farm: Farm, qtype: int, key: str, client: str):
    """A query as the DNS path makes it: a key label of a keyed farm, else the farm's name."""
    if farm.spec.keyed:
        return farm.key_answer(qtype, key, client)
    return farm.query_answer(qtype, client)


def test_the_extension_is_built_and_farms_of_one_record_answer_through_it():
    assert _direct is not None, "lbdns/balance/_direct.c was not built at install"
    assert isinstance(make_farm(True).key_answer, _direct.Chooser)
    assert isinstance(make_farm(True, policy="least-load").query_answer, _direct.Chooser)
    assert not isinstance(make_farm(False).key_answer, _direct.Chooser)  # udp_compiled: false
    assert not isinstance(make_farm(False, policy="least-load").query_answer, _direct.Chooser)
    # Two records per answer, a watermark, another policy: in Python.
    assert not isinstance(make_farm(True, "    answers: 2\n").key_answer, _direct.Chooser)
    watermarked = make_farm(True, "    watermark: 300\n", policy="least-load")
    assert not isinstance(watermarked.query_answer, _direct.Chooser)
    assert not isinstance(make_farm(True, policy="round-robin").query_answer, _direct.Chooser)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("policy", ["consistent-hash", "least-load"])
def test_twin_farms_answer_and_account_alike_to_the_last_bit(seed, policy):
    compiled, python = make_farm(True, policy=policy), make_farm(False, policy=policy)
    handed: list = []
    if policy == "least-load":
        compiled.query_answer = counting_chooser(compiled, handed)
    else:
        compiled.key_answer = counting_chooser(compiled, handed)
    twins = (compiled, python)
    rng = random.Random(seed)
    accepted = dict.fromkeys(HOSTS, 0.0)
    keys = [f"room{i}" for i in range(24)]
    queries = 0
    for step in range(6000):
        roll = rng.random()
        if roll < 0.82:
            client = rng.choice(DIRECT_ASKERS if rng.random() < 0.85 else CACHING)
            key = rng.choice(keys)
            qtype = A if rng.random() < 0.6 else AAAA
            answers = [ask(farm, qtype, key, client) for farm in twins]
            assert answers[0] == answers[1], step
            queries += 1
            if rng.random() < 0.3:  # the other family of the same key, a moment later
                other = AAAA if qtype == A else A
                answers = [ask(farm, other, key, client) for farm in twins]
                assert answers[0] == answers[1], step
                queries += 1
        elif roll < 0.88:
            host = rng.choice(list(HOSTS))
            accepted[host] += rng.randint(0, 30)
            connections = float(rng.randint(0, 400))
            for farm in twins:
                report(farm, host, connections, accepted[host])
        elif roll < 0.90:
            host, admin = rng.choice(list(HOSTS)), rng.choice(["draining", "disabled", "enabled"])
            for farm in twins:
                farm.hosts[host].admin = admin
                farm.changed()
        elif roll < 0.92:
            peer = {
                "answers": 3,
                "charges": {rng.choice(list(HOSTS)): [rng.random() * 4, 1000.0 + step * 0.02, 4.0]},
                "queries": [[rng.choice(CACHING), 1000.0 + step * 0.02, 4.0]],
            }
            for farm in twins:
                farm.add_peer_accounting(peer)
        gap = rng.random() * 0.06 if rng.random() < 0.99 else rng.random() * 6.0
        for farm in twins:
            farm.clock.advance(gap)
        assert state(compiled) == state(python), step
    compiled_share = 1 - len(handed) / queries
    assert compiled_share > 0.4, compiled_share  # the repeated queries of direct askers
    assert len(handed) > 100  # and Python had the rest
    assert compiled.last == python.last


def test_the_other_family_of_a_key_is_the_same_host_uncharged_through_the_compiled_path():
    farm = make_farm(True)
    handed: list = []
    farm.key_answer = counting_chooser(farm, handed)
    for _ in range(4):  # a direct asker after two quick re-asks
        farm.key_answer(A, "room1", "127.0.0.1")
        farm.clock.advance(0.05)
    handed.clear()
    pending = {name: ledger.pending for name, ledger in farm.accounting.ledgers.items()}
    (host,) = farm.key_answer(A, "room1", "127.0.0.1")
    assert not handed  # answered in C
    charged = farm.accounting.ledgers[host].pending - pending[host]
    assert charged > 0.0
    farm.clock.advance(0.01)
    assert farm.key_answer(AAAA, "room1", "127.0.0.1") == (host,)
    assert not handed
    assert farm.last.how == "sticky" and farm.last.key == "room1"
    assert farm.accounting.ledgers[host].pending - pending[host] == charged  # not again


def test_a_chooser_goes_with_its_farm():
    farm = make_farm(True)
    farm.key_answer(A, "room1", "127.0.0.1")
    gone = weakref.ref(farm)
    del farm
    gc.collect()
    assert gone() is None  # the farm -> chooser -> farm cycle is collected


def test_bad_calls_get_a_type_error_and_change_nothing():
    farm = make_farm(True)
    before = state(farm)
    with pytest.raises(TypeError):
        farm.key_answer(A)
    with pytest.raises(TypeError):
        farm.key_answer(A, "room1", "127.0.0.1", 4.0)
    with pytest.raises(TypeError):
        farm.key_answer(A, "room1", client="127.0.0.1")
    assert state(farm) == before


def test_least_load_ties_are_broken_with_the_farms_random_source_as_the_policy_breaks_them():
    # Equal hosts and a herd of one: after each round of charges every host is tied again.
    equal = {name: f"{{a: 192.0.2.{20 + i}}}" for i, name in enumerate("pqrs")}
    text = (
        "zone: t.\nsoa: {}\nns: [ns1]\nrecords: {ns1: {A: 192.0.2.1}}\nfarms:\n"
        "  f:\n    ttl: 4\n    hosts:\n"
        + "".join(f"      {name}: {spec}\n" for name, spec in equal.items())
    )
    twins = []
    for compiled in (True, False):
        spec = parse_text(text).farms["f.t."]
        farm = Farm(spec, clock=Clock(1000.0), rng=random.Random(11), compiled=compiled)
        for name in equal:
            farm.hosts[name].report = Report(1, 1000.0, 2.0, True, {"connections": 10.0})
        farm.changed()
        twins.append(farm)
    handed: list = []
    twins[0].query_answer = counting_chooser(twins[0], handed)
    draws = twins[0].rng.getstate()
    for _ in range(400):
        answers = [farm.query_answer(A, "127.0.0.1") for farm in twins]
        assert answers[0] == answers[1]
        assert state(twins[0]) == state(twins[1])
        for farm in twins:
            farm.clock.advance(0.01)
    assert len(handed) <= 5  # the first queries, until it is a direct asker
    assert twins[0].rng.getstate() != draws  # the ties were drawn for, in C
    counts = [twins[0].hosts[name].answers for name in equal]
    assert max(counts) - min(counts) <= 1, counts  # a herd of one each: round and round
