"""Farm states, the all-unhealthy modes, the in-flight accounting and herd splitting.

Deterministic: a fake clock and a seeded random source, no sockets (the same behaviour over real
DNS and HTTP is in test_ingest.py).
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

import pytest
from dnslib import QTYPE

from lbdns.balance.explain import farm_explanation
from lbdns.balance.farm import NODATA, SERVFAIL, SORRY, Farm
from lbdns.balance.host import DISABLED, DOWN, DRAINING, NEW, STALE, UP, Report
from lbdns.testing.clock import Clock
from lbdns.zone.parse import parse_text

A, AAAA = QTYPE.A, QTYPE.AAAA


def make_farm(settings: str = "", hosts: dict | None = None, clock: Clock | None = None) -> Farm:
    hosts = hosts or {"a": 1, "b": 1, "c": 2}
    lines = "\n".join(
        f"      {name}: {{a: 192.0.2.{10 + i}, aaaa: '2001:db8::{10 + i}', capacity: {cap}}}"
        for i, (name, cap) in enumerate(hosts.items())
    )
    if "ttl:" not in settings:
        settings = "ttl: 5\n" + settings
    extra = "".join(f"    {line}\n" for line in settings.splitlines() if line.strip())
    text = (
        "zone: t.\nsoa: {}\nns: [ns1]\nrecords: {ns1: {A: 192.0.2.1}}\nfarms:\n"
        f"  f:\n{extra}    hosts:\n{lines}\n"
    )
    spec = parse_text(text).farms["f.t."]
    return Farm(spec, clock=clock or Clock(1000.0), rng=random.Random(5))


def report(farm: Farm, host: str, connections: float = 0, seq: int | None = None, **kw) -> None:
    current = farm.hosts[host].report
    farm.hosts[host].report = Report(
        seq=seq if seq is not None else (current.seq + 1 if current else 1),
        received=farm.clock(),
        interval=kw.pop("interval", 1.0),
        healthy=kw.pop("healthy", True),
        metrics={"connections": float(connections), **kw},
    )
    farm.changed()


def report_all(farm: Farm, loads: dict[str, float], **kw) -> None:
    for host, connections in loads.items():
        report(farm, host, connections, **kw)


def states(farm: Farm) -> dict[str, str]:
    return dict(farm.view().states)


# -- states ----------------------------------------------------------------------------------


def test_every_state():
    clock = Clock(1000.0)
    farm = make_farm(
        hosts={"up": 1, "new": 1, "stale": 1, "down": 1, "drain": 1, "off": 1}, clock=clock
    )
    report(farm, "stale", 5, interval=1.0)
    clock.now += 2.5  # stale_after 2 x interval 1 s
    report(farm, "up", 5)
    report(farm, "down", 5, healthy=False)
    report(farm, "drain", 5)
    report(farm, "off", 5)
    farm.hosts["drain"].admin = "draining"
    farm.hosts["off"].admin = "disabled"
    farm.changed()
    assert states(farm) == {
        "up": UP,
        "new": NEW,
        "stale": STALE,
        "down": DOWN,
        "drain": DRAINING,
        "off": DISABLED,
    }


def test_stale_after_is_k_times_the_hosts_interval():
    clock = Clock(1000.0)
    farm = make_farm("stale_after: 3", clock=clock)
    report(farm, "a", 1, interval=2.0)
    clock.now += 5.9
    assert states(farm)["a"] == UP
    clock.now += 0.2  # the view was valid until the deadline: rebuilt without a change
    assert states(farm)["a"] == STALE


def test_only_up_hosts_are_answered():
    clock = Clock(1000.0)
    farm = make_farm(hosts={"up": 1, "down": 1, "drain": 1, "off": 1, "stale": 1}, clock=clock)
    report(farm, "stale", 0)
    clock.now += 10
    for host in ("up", "down", "drain", "off"):
        report(farm, host, 0, healthy=host != "down")
    farm.hosts["drain"].admin = "draining"
    farm.hosts["off"].admin = "disabled"
    farm.changed()
    answers = {farm.choose(A, f"10.0.0.{i}") for i in range(50)}
    assert answers == {("up",)}


def test_a_never_reported_host_is_not_answered_once_reports_are_in():
    clock = Clock(1000.0)
    farm = make_farm(clock=clock)
    report(farm, "a", 10)
    report(farm, "b", 10)
    farm.view()  # queries see the first reports come in
    clock.now += 2.5  # past the warm-up (stale_after x interval after the first report)
    report_all(farm, {"a": 10, "b": 10})
    assert states(farm)["c"] == NEW
    assert all("c" not in farm.choose(A, f"10.0.0.{i}") for i in range(100))


def test_warm_up_does_not_send_everything_to_the_first_host_to_report():
    clock = Clock(1000.0)
    farm = make_farm(hosts={"a": 1, "b": 1, "c": 1, "d": 1}, clock=clock)
    report(farm, "a", 50)  # right after a restart, one agent's report is in
    seen = Counter(farm.choose(A, f"10.0.0.{i}")[0] for i in range(200))
    assert set(seen) == {"a", "b", "c", "d"}
    # Not merely everyone once: the first host to report gets about its share, not most of it.
    assert max(seen.values()) <= 0.4 * 200 and min(seen.values()) >= 0.1 * 200, seen
    assert farm.view().warming


def test_no_report_at_all_answers_the_new_hosts():
    farm = make_farm()
    assert farm.view().states == {"a": NEW, "b": NEW, "c": NEW}
    seen = {farm.choose(A, f"10.0.0.{i}")[0] for i in range(100)}
    assert seen == {"a", "b", "c"}


# -- all unhealthy -----------------------------------------------------------------------------


def _all_down(farm: Farm) -> None:
    report_all(farm, {"a": 5, "b": 1, "c": 8}, healthy=False)


def test_fail_open_answers_the_least_bad_hosts():
    clock = Clock(1000.0)
    farm = make_farm(clock=clock)
    report(farm, "a", 5)
    clock.now += 10  # a is stale
    report(farm, "b", 1, healthy=False)
    report(farm, "c", 1, healthy=False)
    # Stale (last known load) before down: only a qualifies.
    assert {farm.choose(A, f"10.0.0.{i}") for i in range(20)} == {("a",)}
    assert farm.last.how == "fail-open"


def test_fail_open_prefers_the_lowest_last_known_load():
    farm = make_farm("policy: lowest-score")
    _all_down(farm)
    assert farm.choose(A, "10.0.0.1") == ("b",)


@pytest.mark.parametrize(
    ("settings", "a", "aaaa"),
    [
        ("all_unhealthy: nodata", NODATA, NODATA),
        ("all_unhealthy: servfail", SERVFAIL, SERVFAIL),
        ("all_unhealthy: sorry\nsorry: {a: 192.0.2.99}", SORRY, NODATA),
        ("all_unhealthy: sorry\nsorry: {a: 192.0.2.99, aaaa: '2001:db8::99'}", SORRY, SORRY),
    ],
)
def test_all_unhealthy_modes(settings, a, aaaa):
    farm = make_farm(settings)
    _all_down(farm)
    assert farm.choose(A, "10.0.0.1") == a
    assert farm.choose(AAAA, "10.0.0.1") == aaaa
    if a == SORRY:
        assert farm.addresses(SORRY, A) == ["192.0.2.99"]


def test_drained_and_disabled_hosts_are_never_answered_even_failing_open():
    farm = make_farm()
    report_all(farm, {"a": 1, "b": 1, "c": 1})
    for host in ("a", "b", "c"):
        farm.hosts[host].admin = "disabled" if host == "a" else "draining"
    farm.changed()
    assert farm.choose(A, "10.0.0.1") == NODATA


def test_a_family_without_any_host_is_nodata():
    farm = make_farm()
    for host in farm.hosts.values():
        host.spec = dataclasses.replace(host.spec, aaaa=())
    report_all(farm, {"a": 1, "b": 1, "c": 1})
    assert farm.choose(AAAA, "10.0.0.1") == NODATA
    assert farm.choose(A, "10.0.0.1") in {("a",), ("b",), ("c",)}


# -- score and watermark ---------------------------------------------------------------------


def test_score_is_normalised_by_capacity_and_can_mix_metrics():
    farm = make_farm("score: {connections: 1, cpu: 100}")
    report(farm, "a", 10, cpu=0.5)  # 10 + 50 = 60 / capacity 1
    report(farm, "c", 10, cpu=0.5)  # 60 / capacity 2
    assert farm.view().scores["a"] == pytest.approx(60.0)
    assert farm.view().scores["c"] == pytest.approx(30.0)


def test_cpu_score():
    farm = make_farm("score: cpu\npolicy: lowest-score")
    report_all(farm, {"a": 1, "b": 1000, "c": 1})
    report(farm, "a", 1, cpu=0.9)
    report(farm, "b", 1000, cpu=0.1)
    report(farm, "c", 1, cpu=1.0)  # 0.5 per capacity unit
    assert farm.choose(A, "10.0.0.1") == ("b",)


def test_watermark_keeps_answers_off_hosts_above_it():
    farm = make_farm("watermark: 50\npolicy: round-robin")
    report_all(farm, {"a": 60, "b": 10, "c": 200})  # c: 100 per capacity unit
    assert {farm.choose(A, f"10.0.0.{i}") for i in range(10)} == {("b",)}
    assert farm.last.how == "watermark"
    report_all(farm, {"a": 60, "b": 70, "c": 200})  # all above: answer among all
    assert len({farm.choose(A, f"10.0.0.{i}") for i in range(10)}) == 3


# -- accounting --------------------------------------------------------------------------------


def test_answers_between_reports_spread_instead_of_piling_on_one_host():
    clock = Clock(1000.0)
    farm = make_farm(hosts={"a": 1, "b": 1}, clock=clock)
    report_all(farm, {"a": 10, "b": 12})
    naive = make_farm("policy: lowest-score", hosts={"a": 1, "b": 1}, clock=clock)
    report_all(naive, {"a": 10, "b": 12})
    ours = Counter(farm.choose(A, f"10.0.1.{i}")[0] for i in range(20))
    theirs = Counter(naive.choose(A, f"10.0.1.{i}")[0] for i in range(20))
    assert theirs == {"a": 20}
    # a is 2 behind; each answer (herd 1 for a first-seen resolver) adds 1: a gets 2 more.
    assert ours == {"a": 11, "b": 9}
    ledgers = farm.accounting.ledgers
    assert ledgers["a"].pending == pytest.approx(11) and ledgers["b"].pending == pytest.approx(9)


def test_a_report_supersedes_what_it_counted():
    clock = Clock(1000.0)
    farm = make_farm("ttl: 5", hosts={"a": 1, "b": 1}, clock=clock)
    report_all(farm, {"a": 0, "b": 0})
    for i in range(10):
        farm.choose(A, f"10.0.1.{i}")  # 5 each, charged at t=1000
    assert farm.accounting.ledgers["a"].pending == pytest.approx(5)
    clock.now += 2.5  # half the cache time (5 s) has passed: half of each herd has arrived
    report_all(farm, {"a": 2, "b": 3})
    farm.view()
    for name in ("a", "b"):
        assert farm.accounting.ledgers[name].pending == pytest.approx(2.5, rel=0.05)
    loads = {c[0]: c[2] for c in farm._live[A]}
    assert loads == pytest.approx({"a": 4.5, "b": 5.5}, rel=0.05)
    clock.now += 3.0  # past the cache time: every herd has arrived, nothing pending
    report_all(farm, {"a": 5, "b": 5})
    farm.view()
    assert farm.accounting.ledgers["a"].pending == 0


def test_arrival_rate_and_mean_herd_are_learned_from_reports():
    clock = Clock(1000.0)
    farm = make_farm("ttl: 1", hosts={"a": 1, "b": 1}, clock=clock)
    for second in range(30):
        report_all(farm, {"a": 0, "b": 0}, accepted=second * 20.0)  # 40 arrivals/s in total
        for i in range(10):  # 10 answers a second
            farm.choose(A, f"10.0.{second}.{i}")
        clock.now += 1.0
    accounting = farm.accounting
    assert accounting.arrival_rate == pytest.approx(40.0)
    assert accounting.mean_herd == pytest.approx(4.0, rel=0.1)


def test_herd_of_an_unsaturated_resolver_comes_from_its_query_gap():
    clock = Clock(1000.0)
    farm = make_farm("ttl: 5", clock=clock)
    report_all(farm, {"a": 0, "b": 0, "c": 0})
    for _ in range(30):  # asks every 7 s: clients every 2 s after the 5 s cache time
        farm.choose(A, "10.9.9.9")
        clock.now += 7.0
        report_all(farm, {"a": 0, "b": 0, "c": 0})
    stat = farm.accounting.clients["10.9.9.9"]
    assert not stat.saturated
    assert stat.rate == pytest.approx(0.5)
    assert farm.accounting.herd("10.9.9.9", clock.now) == pytest.approx(1 + 0.5 * 5)


def test_resolver_rates_are_ranked_by_timing_and_scaled_to_the_arrival_rate():
    clock = Clock(1000.0)
    farm = make_farm("ttl: 5\nsplit: 1", clock=clock)
    accounting = farm.accounting
    for _ in range(5):
        accounting.herd("10.1.1.1", clock.now)  # asks 0.5 s after its cache expires: raw 2/s
        clock.now += 5.5
    for _ in range(3):
        accounting.herd("10.1.1.3", clock.now)  # 5 s after: raw 0.2/s
        clock.now += 10.0
    assert accounting.saturated == 1
    assert accounting.raw_rate == pytest.approx(2.2)
    big, small = accounting.clients["10.1.1.1"], accounting.clients["10.1.1.3"]
    # Nothing learned from reports yet: the raw rates.
    assert accounting.herd_of(big, 5.0) == pytest.approx(1 + 2 * 5)
    # Reports say 44 clients a second: 20 times the raw sum, shared in the same ratio.
    accounting.arrival_rate = 44.0
    assert accounting.herd_of(big, 5.0) == pytest.approx(1 + 40 * 5)
    assert accounting.herd_of(small, 5.0) == pytest.approx(1 + 4 * 5)


def test_a_big_herd_is_split_over_several_records():
    clock = Clock(1000.0)
    # herd_budget off: the herd keeps the full TTL (herd-sized TTLs are tested further on).
    farm = make_farm(
        "ttl: 5\nsplit: 3\nherd_budget: off", hosts={"a": 1, "b": 1, "c": 1, "d": 1}, clock=clock
    )
    loads = {"a": 100, "b": 100, "c": 100, "d": 100}
    big = "10.2.2.2"
    for second in range(20):  # 60 arrivals a second, all from one resolver
        report_all(farm, loads, accepted=second * 15.0)
        if second % 5 == 0:
            farm.choose(A, big)
        clock.now += 1.0
    report_all(farm, loads, accepted=20 * 15.0)
    assert farm.accounting.arrival_rate == pytest.approx(60.0)
    chosen = farm.choose(A, big)
    assert len(chosen) == 3  # herd 1 + 60 x 5: as many records as allowed
    assert farm.last.herd == pytest.approx(301)
    pending = [farm.accounting.ledgers[n].pending for n in chosen]
    # The whole herd on the first record (clients that use the first bring all of it), a third
    # on each other one (resolvers that shuffle spread it), plus what is left of the previous
    # answer's herd (charged 5 s ago).
    assert pending == [
        pytest.approx(301, abs=2),
        pytest.approx(100, abs=2),
        pytest.approx(100, abs=2),
    ]
    small = farm.choose(A, "10.3.3.3")  # a first-seen resolver: the mean herd
    assert farm.last.asker == "new" and farm.last.herd == farm.accounting.mean_herd
    assert small[0] != chosen[0]  # not onto the host charged the whole big herd


def test_a_new_host_fills_to_its_fair_share_without_a_stampede():
    clock = Clock(1000.0)
    farm = make_farm("ttl: 5", hosts={"a": 1, "b": 1, "c": 1}, clock=clock)
    report_all(farm, {"a": 100, "b": 100, "c": 0})  # c just joined and reported
    got = Counter(farm.choose(A, f"10.4.0.{i}")[0] for i in range(150))
    # c is 100 behind: the first 100 answers (herd 1 each) go to c, then all share evenly.
    assert got["c"] == pytest.approx(117, abs=2)
    assert got["a"] + got["b"] == 150 - got["c"]


def test_a_and_aaaa_from_one_resolver_get_the_same_host():
    clock = Clock(1000.0)
    farm = make_farm(hosts={"a": 1, "b": 1, "c": 1, "d": 1}, clock=clock)
    report_all(farm, {"a": 10, "b": 10, "c": 10, "d": 10})
    for i in range(40):
        client = f"10.5.0.{i}"
        first = farm.choose(A, client)
        clock.now += 0.01
        assert farm.choose(AAAA, client) == first
        assert farm.last.how == "sticky"
        clock.now += 0.01
    # The sticky second answer is not charged again.
    assert sum(ledger.pending for ledger in farm.accounting.ledgers.values()) == pytest.approx(40)


def test_explain_lists_every_host_and_the_reason():
    clock = Clock(1000.0)
    farm = make_farm(clock=clock)
    report_all(farm, {"a": 3, "b": 1, "c": 2})
    farm.choose(A, "10.6.0.1")
    info = farm_explanation(farm)
    assert [h["host"] for h in info["hosts"]] == ["a", "b", "c"]
    b, c = info["hosts"][1:]
    assert b["state"] == UP and b["score"] == 1.0 and b["metrics"] == {"connections": 1.0}
    # b and c are both at 1 per capacity unit; a herd of 1 lifts c (capacity 2) only to 1.5.
    assert c["in_flight"] == pytest.approx(1.0) and c["share_recent"] == 1.0
    assert b["in_flight"] == 0 and c["load"] == pytest.approx(1.5)
    assert info["last_answer"]["chosen"] == ["c"]
    assert "lowest projected load" in info["last_answer"]["reason"]


def test_a_zone_reload_keeps_the_accounting():
    from lbdns.registry import Registry

    clock = Clock(1000.0)
    text = (
        "zone: t.\nsoa: {}\nns: [ns1]\nrecords: {ns1: {A: 192.0.2.1}}\nfarms:\n"
        "  f:\n    ttl: %d\n    hosts:\n      a: {a: 192.0.2.10}\n      b: {a: 192.0.2.11}\n"
    )
    registry = Registry(clock=clock, rng=random.Random(1))
    registry.load_zones({"t.": parse_text(text % 5)})
    farm = registry.farms["f.t."]
    report_all(farm, {"a": 1, "b": 1})
    farm.choose(A, "10.7.0.1")
    registry.load_zones({"t.": parse_text(text % 5)})
    again = registry.farms["f.t."]
    assert again is not farm and again.accounting is farm.accounting
    assert sum(ledger.pending for ledger in again.accounting.ledgers.values()) == 1
    registry.load_zones({"t.": parse_text(text % 30)})  # another cache time: start afresh
    assert registry.farms["f.t."].accounting is not farm.accounting


# -- accounting shared between servers -------------------------------------------------------


def exchange(sender: Farm, receiver: Farm) -> None:
    """One answer-exchange message, through JSON as the shared store sends it."""
    import json

    taken = sender.take_accounting()
    if taken is not None:
        receiver.add_peer_accounting(json.loads(json.dumps(taken)))


def test_two_servers_charge_each_herd_once_and_do_not_herd_to_one_empty_host():
    clock = Clock(1000.0)
    one, two = (make_farm(hosts={"a": 1, "b": 1, "c": 1}, clock=clock) for _ in range(2))
    for farm in (one, two):
        exchange(farm, farm)  # the first call starts the collection
        report_all(farm, {"a": 10, "b": 10, "c": 4})  # c is 6 behind
        farm.view()
    got = [one.choose(A, f"10.8.0.{i}")[0] for i in range(6)]  # herd 1 each (first seen)
    assert got == ["c"] * 6
    clock.now += 0.15
    exchange(one, two)
    # two counts one's six answers at c: the next answers do not pile onto c as well.
    assert two.accounting.ledgers["c"].pending == pytest.approx(6)
    assert sorted(c[2] for c in two._live[A]) == pytest.approx([10, 10, 10])
    got = Counter(two.choose(A, f"10.8.1.{i}")[0] for i in range(30))
    assert got == {"a": 10, "b": 10, "c": 10}
    exchange(two, one)
    exchange(one, two)  # nothing new: nothing sent, nothing counted twice
    for farm in (one, two):
        pending = {n: farm.accounting.ledgers[n].pending for n in "abc"}
        assert pending == pytest.approx({"a": 10, "b": 10, "c": 16})
        assert farm.accounting.answers == 36
    # A report counts what arrived before it: half the cache time later, half of every herd.
    clock.now += 2.5 - 0.15
    for farm in (one, two):
        report_all(farm, {"a": 15, "b": 15, "c": 12})
        farm.view()
        pending = {n: farm.accounting.ledgers[n].pending for n in "abc"}
        assert pending == pytest.approx({"a": 5, "b": 5, "c": 8}, rel=0.05)
    # A peer's herd charged before the last report is charged only for what is still to come.
    one.add_peer_accounting({"answers": 1, "charges": {"a": [4.0, clock.now - 2.5]}})
    assert one.accounting.ledgers["a"].pending == pytest.approx(5 + 2, rel=0.05)


def test_resolver_herds_count_the_queries_other_servers_answered():
    """A resolver asks every 7 s (clients every 2 s after its 5 s cache), each time of one of two
    servers at random: each server sees gaps of 7, 14, 21 s, and alone would take the resolver
    for a much smaller one. With the other's query times both estimate it as one server would."""
    clock = Clock(1000.0)
    one, two = make_farm(clock=clock), make_farm(clock=clock)
    alone = make_farm(clock=clock)
    for farm in (one, two):
        exchange(farm, farm)
    pick = random.Random(3)
    for _ in range(40):
        pick.choice((one, two)).choose(A, "10.9.9.9")
        alone.choose(A, "10.9.9.9")
        clock.now += 0.15
        exchange(one, two)
        exchange(two, one)
        clock.now += 7.0 - 0.15
    for farm in (one, two):
        stat = farm.accounting.clients["10.9.9.9"]
        assert stat.rate == pytest.approx(0.5)
        assert farm.accounting.herd("10.9.9.9", clock.now) == pytest.approx(1 + 0.5 * 5)
    assert alone.accounting.clients["10.9.9.9"].rate == pytest.approx(0.5)


def test_a_query_time_learned_late_splits_the_last_gap():
    clock = Clock(1000.0)
    farm = make_farm(clock=clock)
    accounting = farm.accounting
    for at in (1000.0, 1007.0, 1014.0):
        accounting.herd("10.9.9.8", at)
    accounting.herd("10.9.9.8", 1028.0)  # here; 1021 was answered by another server
    assert accounting.clients["10.9.9.8"].gap == pytest.approx(7 + 0.3 * 7)
    accounting.peer_queries([("10.9.9.8", 1021.0)])
    stat = accounting.clients["10.9.9.8"]
    assert stat.gap == pytest.approx(7) and stat.last == 1028.0
    assert accounting.raw_rate == pytest.approx(0.5)
    accounting.peer_queries([("10.9.9.8", 1028.1), ("10.9.9.8", 1020.9)])  # the same queries
    assert stat.gap == pytest.approx(7) and accounting.raw_rate == pytest.approx(0.5)
    assert stat.last == 1028.1  # a repeat within half the cache time moves the last query on


# -- who caches, herd-sized TTLs, time -------------------------------------------------------


def test_a_client_that_re_asks_within_its_ttl_is_charged_its_own_share():
    clock = Clock(1000.0)
    farm = make_farm("ttl: 5", hosts={"a": 1, "b": 1, "c": 1}, clock=clock)
    for second in range(10):  # 2 arrivals a second over the farm, from somewhere else
        report_all(farm, {"a": 0, "b": 30, "c": 0}, accepted=second * 2 / 3)
        for _ in range(20):  # a dig loop at 20 queries a second
            names = farm.choose(A, "10.20.0.1")
            assert len(names) == 1
            clock.now += 0.05
    stat = farm.accounting.clients["10.20.0.1"]
    assert stat.direct and farm.last.asker == "direct"
    assert stat.recent == pytest.approx(0.05)
    # Its own share: 2 arrivals/s x 0.05 s between its queries, at most the mean herd.
    assert farm.last.herd == pytest.approx(min(0.1, farm.accounting.mean_herd))
    assert farm.accounting.raw_rate == 0 and farm.accounting.direct == 1
    # Direct charges come at once: the next report counts them, nothing stays pending.
    report_all(farm, {"a": 0, "b": 30, "c": 0}, accepted=10 * 2 / 3)
    farm.view()
    assert all(ledger.pending == 0 for ledger in farm.accounting.ledgers.values())
    # It stops for longer than the TTL: a caching client again.
    clock.now += 12.0
    farm.choose(A, "10.20.0.1")
    assert not stat.direct and farm.accounting.direct == 0


def test_a_retry_or_an_aaaa_does_not_make_a_resolver_direct():
    clock = Clock(1000.0)
    farm = make_farm("ttl: 5", clock=clock)
    report_all(farm, {"a": 0, "b": 0, "c": 0})
    for _ in range(10):
        farm.choose(A, "10.21.0.1")
        clock.now += 0.3
        farm.choose(A, "10.21.0.1")  # one retry
        farm.choose(AAAA, "10.21.0.1")  # and the other family
        clock.now += 6.0
    assert not farm.accounting.clients["10.21.0.1"].direct


def test_herd_sized_ttls_stay_between_min_ttl_and_ttl():
    clock = Clock(1000.0)
    farm = make_farm("ttl: 30\nmin_ttl: 2", hosts={"a": 1, "b": 1, "c": 1, "d": 1}, clock=clock)
    loads = {"a": 100, "b": 100, "c": 100, "d": 100}
    accounting = farm.accounting
    gaps = {f"10.22.0.{i}": 30.0 + 0.05 * 2**i for i in range(12)}  # big to small resolvers
    nexts = dict.fromkeys(gaps, clock.now)
    ttls: dict[str, int] = {}
    for second in range(600):
        report_all(farm, loads, accepted=second * 10.0)  # 40 arrivals a second
        for client, at in nexts.items():
            if at <= clock.now:
                names, ttl = farm.answer(A, client)
                ttls[client] = ttl
                # asks again when its cache expires and one of its clients comes
                nexts[client] = clock.now + ttl + (gaps[client] - 30.0)
        clock.now += 1.0
    assert set(ttls.values()) <= set(range(2, 31))
    ordered = [ttls[c] for c in gaps]
    assert ordered == sorted(ordered)  # the bigger the herd, the shorter the TTL
    assert ordered[0] == 2 and ordered[-1] == 30
    budget = farm._budget  # 0.03 x 100 connections per capacity unit, at least 4
    assert budget == pytest.approx(4)
    for client in gaps:  # each answer's herd is within the budget, or its TTL is min_ttl
        stat = accounting.clients[client]
        herd = accounting.herd_of(stat, stat.ttl)
        assert herd <= budget * 1.01 or ttls[client] == 2
    off = make_farm("ttl: 30\nherd_budget: off", hosts=dict.fromkeys(loads, 1), clock=clock)
    report_all(off, loads)
    assert off._budget == float("inf")


def test_charges_of_a_host_that_stops_reporting_expire_by_time():
    clock = Clock(1000.0)
    farm = make_farm("ttl: 5", hosts={"a": 1, "b": 1}, clock=clock)
    report_all(farm, {"a": 0, "b": 10})
    for i in range(10):
        farm.choose(A, f"10.23.0.{i}")
    assert farm_explanation(farm)["hosts"][0]["in_flight"] == pytest.approx(10)
    clock.now += 20.0  # a stops reporting; b goes on
    report(farm, "b", 10)
    info = farm_explanation(farm)
    a = info["hosts"][0]
    assert a["state"] == STALE and a["in_flight"] == 0 and a["share_recent"] == 0.0


def test_a_split_answer_lists_first_the_host_that_takes_the_whole_herd_best():
    clock = Clock(1000.0)
    farm = make_farm(
        "ttl: 5\nsplit: 3\nherd_budget: off", hosts={"a": 1, "b": 4, "c": 1}, clock=clock
    )
    loads = {"a": 0, "b": 600, "c": 1000}
    for second in range(20):  # 60 arrivals a second, all from one resolver
        report_all(farm, loads, accepted=second * 20.0)
        if second % 5 == 0:
            farm.choose(A, "10.24.0.1")
        clock.now += 1.0
    report_all(farm, loads, accepted=20 * 20.0)
    farm.view()
    for ledger in farm.accounting.ledgers.values():  # start from the reported loads only
        ledger.tracks.clear()
        ledger.pending = 0.0
    farm.changed()
    # A herd of 301 over two records: a would be lower with half of it (0 + 150 against
    # 150 + 38 per capacity), but b takes the whole herd far better (225 against 301), and a
    # client that uses the first record brings the whole herd.
    assert farm.choose(A, "10.24.0.1") == ("b", "a")


def test_a_first_seen_client_gets_a_short_first_ttl_to_learn_its_herd():
    clock = Clock(1000.0)
    farm = make_farm("ttl: 30\nmin_ttl: 2", clock=clock)
    report_all(farm, {"a": 100, "b": 100, "c": 100})
    assert farm.answer(A, "10.25.0.1")[1] == 5
    assert (
        farm.last.asker == "new"
        and "first TTL" in farm_explanation(farm)["last_answer"]["ttl_reason"]
    )
    clock.now += 5.0 + 20.0  # a small resolver: its next client came 20 s after expiry
    farm.answer(A, "10.25.0.1")
    assert farm.last.asker == "caching" and farm.last.ttl == 30
    off = make_farm("ttl: 30\nherd_budget: off", clock=clock)
    report_all(off, {"a": 100, "b": 100, "c": 100})
    assert off.answer(A, "10.25.0.1")[1] == 30  # no budget: the farm's ttl throughout
