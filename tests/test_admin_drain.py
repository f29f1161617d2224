"""Drain completion, scale advice and shed advice on real farm objects with a stepped clock."""

from __future__ import annotations

from types import MappingProxyType

from lbdns.balance.capacity import farm_load, shed_advice
from lbdns.balance.drain import DrainOptions, drain_status
from lbdns.balance.farm import Farm
from lbdns.balance.host import Report
from lbdns.testing.clock import Clock
from lbdns.zone.model import FarmSpec, HostSpec


def make_farm(clock: Clock, capacities=(1.0, 1.0, 2.0), ttl: int = 5) -> Farm:
    hosts = tuple(
        HostSpec(name=f"h{i + 1}", a=(f"192.0.2.{i + 1}",), capacity=c)
        for i, c in enumerate(capacities)
    )
    return Farm(FarmSpec(name="app.test.", ttl=ttl, hosts=hosts), clock=clock)


def report(clock: Clock, connections: float, healthy: bool = True) -> Report:
    return Report(
        seq=1,
        received=clock.now,
        interval=1.0,
        healthy=healthy,
        metrics=MappingProxyType({"connections": connections}),
    )


def test_drain_waits_for_connections_and_for_cached_answers():
    clock = Clock(1000.0)
    farm = make_farm(clock)
    host = farm.hosts["h1"]
    host.report = report(clock, 12)
    host.last_answered = clock.now - 1.0  # the last answer naming it, just before the drain
    assert drain_status(farm, host, clock.now) is None  # not draining
    host.admin = "draining"
    host.drain_started = clock.now
    host.drain = DrainOptions(threshold=2, grace=3)
    status = drain_status(farm, host, clock.now)
    assert not status.done and len(status.waiting_for) == 2
    assert status.answers_expire_in == 7.0  # TTL 5 + grace 3 - 1 s already gone
    clock.now += 7.0
    status = drain_status(farm, host, clock.now)
    assert status.waiting_for == ("connections: 12 reported, waiting for <= 2",)
    host.report = report(clock, 2)
    status = drain_status(farm, host, clock.now)
    assert status.done and status.running_for == 7.0 and status.connections == 2
    # The farm's state, which the API, /metrics, the status page and the CLI all show.
    assert farm.host_state(host, clock.now) == "drained"
    host.report = report(clock, 3)
    assert farm.host_state(host, clock.now) == "draining"


def test_drain_without_answer_times_counts_from_its_start():
    clock = Clock(1000.0)
    farm = make_farm(clock, ttl=1)
    host = farm.hosts["h2"]
    host.admin = "draining"
    host.drain_started = clock.now
    host.drain = DrainOptions(grace=0.5)
    # No report: nothing else can be known, so only the cached answers are waited for.
    assert drain_status(farm, host, clock.now + 1.4).waiting_for[0].startswith("answers")
    assert drain_status(farm, host, clock.now + 1.5).done


def test_scale_advice():
    clock = Clock(1000.0)
    farm = make_farm(clock, capacities=(100, 100, 200))
    assert farm_load(farm, clock.now, 0.7).hosts_needed is None  # nothing reported yet
    for name, connections in (("h1", 90), ("h2", 80), ("h3", 190)):
        farm.hosts[name].report = report(clock, connections)
    load = farm_load(farm, clock.now, 0.7)
    assert load.utilisation == 360 / 400 and load.up == 3
    # 360 connections at 70% of a mean capacity of 133.3 per host: 3.86 -> 4 hosts, one more.
    assert (load.hosts_needed, load.change) == (4, 1)
    assert farm_load(farm, clock.now, 1.0).change == 0
    farm.hosts["h3"].admin = "disabled"
    assert farm_load(farm, clock.now, 0.7).capacity == 200
    # Reports that went stale no longer count as load.
    clock.now += 10
    assert farm_load(farm, clock.now, 0.7).load == 0


def test_shed_advice_only_for_a_host_far_above_the_mean():
    clock = Clock(1000.0)
    farm = make_farm(clock, capacities=(1, 1, 1))
    for name, connections in (("h1", 300), ("h2", 50), ("h3", 40)):
        farm.hosts[name].report = report(clock, connections)
    # Mean 130: h1 is above 1.5 x mean while others have room; shedding 300 * (1 - 130/300).
    assert shed_advice(farm, farm.hosts["h1"], clock.now) == 170
    assert shed_advice(farm, farm.hosts["h2"], clock.now) is None
    farm.hosts["h1"].report = report(clock, 60)
    assert shed_advice(farm, farm.hosts["h1"], clock.now) is None
