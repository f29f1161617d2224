"""The health-check rules of lbdns.balance.check, row by row of its docstring's tables, and how
a farm answers with them (a fake clock; no sockets)."""

from __future__ import annotations

from types import MappingProxyType

import pytest
from dnslib import QTYPE

from lbdns.balance.check import (
    HostProbe,
    PeerVerdict,
    Tracker,
    combine,
    host_verdict,
    quorum_verdict,
)
from lbdns.balance.farm import Farm
from lbdns.balance.host import Report
from lbdns.zone.model import CheckSpec, FarmSpec, HostSpec


def run(results: str, rise: int = 2, fall: int = 3) -> list[bool | None]:
    """The tracker's state after each result of ``results`` ("+" success, "-" failure)."""
    tracker = Tracker()
    out = []
    for i, symbol in enumerate(results):
        tracker.record(symbol == "+", 0.001, None if symbol == "+" else "refused", i, rise, fall)
        out.append(tracker.up)
    return out


T, F = True, False

TRACKER_ROWS = [
    ("first success decides", "+", [T]),
    ("first failure decides", "-", [F]),
    ("fall 3: two failures keep it up", "+--", [T, T, T]),
    ("fall 3: the third failure takes it down", "+---", [T, T, T, F]),
    ("a success resets the failure streak", "+--+--", [T] * 6),
    ("rise 2: one success keeps it down", "-+", [F, F]),
    ("rise 2: the second success brings it up", "-++", [F, F, T]),
    ("a failure resets the success streak", "-+-+", [F, F, F, F]),
]


@pytest.mark.parametrize("what,results,states", TRACKER_ROWS, ids=[r[0] for r in TRACKER_ROWS])
def test_tracker(what, results, states):
    assert run(results) == states


def test_tracker_counts_streaks_and_reports_changes():
    tracker = Tracker()
    assert tracker.record(True, 0.002, None, 1.0, 2, 3) is True  # unknown -> up
    assert tracker.record(False, 0.5, "timeout", 2.0, 2, 3) is False
    assert (tracker.failures, tracker.successes, tracker.last_error) == (1, 0, "timeout")
    assert tracker.record(False, 0.5, "timeout", 3.0, 2, 3) is False
    assert tracker.record(False, 0.5, "timeout", 4.0, 2, 3) is True  # up -> down
    assert tracker.changed_at == 4.0 and tracker.probes == 4
    assert tracker.to_json()["state"] == "down"


@pytest.mark.parametrize(
    "verdicts,expected",
    [
        (["up", "up"], "up"),
        (["up", "down"], "down"),  # an answer names every address of the host
        (["up", None], None),
        ([None, "down"], "down"),
        ([], None),
    ],
)
def test_host_verdict(verdicts, expected):
    assert host_verdict(verdicts) == expected


QUORUM_ROWS = [
    # votes, quorum (0: majority), verdict
    (["down"], 0, "down"),
    (["down", "up"], 0, "up"),  # one of two servers cannot reach it: it stays up
    (["down", "down"], 0, "down"),
    (["down", "down", "up"], 0, "down"),
    (["down", "up", "up"], 0, "up"),
    (["down", "up", "up"], 1, "down"),  # quorum 1: any server that sees it fail
    (["down", "down", "up"], 3, "up"),
    (["down", "down"], 3, "down"),  # a quorum above the number of voters needs all of them
    ([None, "down"], 0, "down"),  # servers without a verdict do not vote
    ([None, None], 0, None),
]


@pytest.mark.parametrize("votes,quorum,expected", QUORUM_ROWS)
def test_quorum(votes, quorum, expected):
    assert quorum_verdict(votes, quorum) == expected


COMBINE_ROWS = [
    # require, agent state, check verdict -> state, reason
    ("both", "up", None, "up", None),
    ("both", "down", None, "down", "agent"),
    ("agent", "up", "down", "up", None),
    ("agent", "down", "up", "down", "agent"),
    ("both", "up", "down", "down", "check"),
    ("both", "new", "down", "down", "check"),
    ("both", "up", "up", "up", None),
    ("both", "new", "up", "up", "check"),
    ("both", "stale", "up", "stale", "agent"),
    ("both", "down", "up", "down", "agent"),
    ("check", "down", "down", "down", "check"),
    ("check", "down", "up", "up", "check"),
    ("check", "stale", "up", "up", "check"),
]


@pytest.mark.parametrize("require,agent,verdict,state,reason", COMBINE_ROWS)
def test_combine(require, agent, verdict, state, reason):
    assert combine(require, agent, verdict) == (state, reason)


def test_peer_verdicts_count_until_they_expire():
    probe = HostProbe()
    probe.trackers["192.0.2.1"] = Tracker(up=False)
    probe.peers["b"] = PeerVerdict("up", expires=10.0)
    assert probe.verdict(0, now=5.0) == "up"  # one of two: not a majority
    assert probe.verdict(1, now=5.0) == "down"
    assert probe.verdict(0, now=11.0) == "down"  # b stopped telling: this server alone
    assert probe.expire(11.0) is True and probe.peers == {}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def checked_farm(require: str = "both") -> tuple[Farm, Clock]:
    check = CheckSpec(type="tcp", port=80)
    hosts = (
        HostSpec("h1", a=("192.0.2.1",), capacity=1.0),
        HostSpec("h2", a=("192.0.2.2",), capacity=3.0),
    )
    clock = Clock()
    farm = Farm(FarmSpec("web.test.", hosts=hosts, check=check, require=require), clock=clock)
    for host in farm.hosts.values():
        host.probe = HostProbe({host.spec.a[0]: Tracker()})
    return farm, clock


def probe(farm: Farm, name: str, ok: bool) -> None:
    host = farm.hosts[name]
    tracker = host.probe.trackers[host.spec.a[0]]
    tracker.record(ok, 0.001, None if ok else "refused", farm.clock(), 2, 3)
    farm.changed()


def test_hosts_without_agents_are_balanced_by_capacity_and_probes():
    farm, clock = checked_farm()
    probe(farm, "h1", True)
    probe(farm, "h2", True)
    counts = {"h1": 0, "h2": 0}
    for i in range(400):
        clock.now += 0.01
        (name,) = farm.choose(QTYPE.A, f"10.0.{i % 40}.1")
        counts[name] += 1
    # Capacity 1 against 3: the accounting spreads answers by capacity when no host reports.
    assert counts["h2"] > 2 * counts["h1"] > 0
    assert farm.view().reasons == {"h1": "check", "h2": "check"}
    for _ in range(3):  # fall 3
        probe(farm, "h2", False)
    assert farm.view().states["h2"] == "down" and farm.view().reasons["h2"] == "check"
    assert {farm.choose(QTYPE.A, "10.9.9.9")[0] for _ in range(20)} == {"h1"}


def test_require_decides_between_agent_and_probes():
    for require, expected in (("both", "down"), ("agent", "up"), ("check", "down")):
        farm, clock = checked_farm(require)
        report = Report(1, clock.now, 1.0, True, MappingProxyType({"connections": 1.0}))
        farm.hosts["h1"].report = report
        probe(farm, "h1", False)  # the first result decides
        assert farm.host_state(farm.hosts["h1"], clock.now) == expected, require
    farm, clock = checked_farm("check")
    farm.hosts["h1"].report = Report(1, clock.now, 1.0, False, MappingProxyType({}))
    probe(farm, "h1", True)
    assert farm.state_and_reason(farm.hosts["h1"], clock.now) == ("up", "check")
