"""A farm at run time: its hosts, their reports and states, and the choice of answer.

The DNS path calls ``Farm.choose`` once per query for a farm name. It never awaits: it reads the
farm's current ``FarmView`` (an immutable snapshot rebuilt when a report or an admin change
arrives, or when a host's report goes stale) and asks the farm's policy.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dnslib import QTYPE

from .policy import POLICIES, Ask, Candidate
from .zone import FarmSpec, HostSpec

Clock = Callable[[], float]

# Host states, in the order of precedence used to describe a host.
UP = "up"
NEW = "new"  # never reported since this server started (or since it was added)
STALE = "stale"  # no report for stale_after x its interval
DOWN = "down"  # reported unhealthy
DRAINING = "draining"
DRAINED = "drained"
DISABLED = "disabled"

ADMIN_STATES = ("enabled", "draining", "disabled")

# Answers that are not host lists.
NODATA = "nodata"
SERVFAIL = "servfail"
SORRY = "sorry"


@dataclass(slots=True)
class Report:
    """The last report accepted from a host."""

    seq: int
    received: float  # wall-clock seconds when accepted
    interval: float
    healthy: bool
    metrics: Mapping[str, float]

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "received": self.received,
            "interval": self.interval,
            "healthy": self.healthy,
            "metrics": dict(self.metrics),
        }


@dataclass(slots=True)
class Host:
    """A host of a farm with everything the server knows about it."""

    spec: HostSpec
    admin: str = "enabled"  # enabled, draining or disabled
    drain_started: float | None = None
    report: Report | None = None
    last_answered: float = 0.0
    answers: int = 0

    @property
    def name(self) -> str:
        return self.spec.name


def score(report: Report | None, weights: Mapping[str, float], capacity: float) -> float:
    """A host's load score: the weighted sum of its metrics divided by its capacity.

    With the default weights ``{"connections": 1}`` this is connections per unit of capacity.
    A host with no report scores 0.
    """
    if report is None:
        return 0.0
    total = 0.0
    for metric, weight in weights.items():
        total += weight * float(report.metrics.get(metric, 0.0))
    return total / capacity


@dataclass(frozen=True, slots=True)
class FarmView:
    """An immutable snapshot of a farm for the query path."""

    states: Mapping[str, str]
    scores: Mapping[str, float]
    candidates: Mapping[int, tuple[Candidate, ...]]  # qtype -> answerable hosts
    fallback: Mapping[int, tuple[Candidate, ...]]  # qtype -> least-bad hosts (fail-open)
    valid_until: float  # the view must be rebuilt at this time (a report goes stale)


@dataclass
class Farm:
    """Run-time state of one farm."""

    spec: FarmSpec
    hosts: dict[str, Host] = field(default_factory=dict)
    clock: Clock = time.time
    rng: random.Random = field(default_factory=random.Random)
    seq: int = 0
    _view: FarmView | None = None

    def __post_init__(self) -> None:
        self.policy = POLICIES[self.spec.policy]
        for host_spec in self.spec.hosts:
            self.hosts.setdefault(host_spec.name, Host(host_spec))

    @property
    def name(self) -> str:
        return self.spec.name

    # -- changes ----------------------------------------------------------------------------

    def changed(self) -> None:
        """Something about the hosts changed: the next query builds a new view."""
        self._view = None

    def host_state(self, host: Host, now: float) -> str:
        if host.admin == "disabled":
            return DISABLED
        if host.admin == "draining":
            return DRAINING
        report = host.report
        if report is None:
            return NEW
        if now - report.received > self.spec.stale_after * report.interval:
            return STALE
        if not report.healthy:
            return DOWN
        return UP

    # -- the query path ---------------------------------------------------------------------

    def view(self) -> FarmView:
        now = self.clock()
        view = self._view
        if view is None or now >= view.valid_until:
            view = self._view = self._build_view(now)
        return view

    def choose(self, qtype: int, client: str = "") -> tuple[str, ...] | str:
        """Host names to answer a query of ``qtype`` (A or AAAA) from ``client`` (the resolver's
        address), or NODATA/SERVFAIL/SORRY."""
        view = self.view()
        candidates = view.candidates.get(qtype)
        if not candidates:
            return self._all_unhealthy(view, qtype)
        self.seq += 1
        chosen = self.policy(candidates, Ask(self.spec.answers, self.seq, self.rng))
        return tuple(c.name for c in chosen)

    def _all_unhealthy(self, view: FarmView, qtype: int) -> tuple[str, ...] | str:
        mode = self.spec.all_unhealthy
        if mode == "fail-open":
            fallback = view.fallback.get(qtype)
            if not fallback:
                return NODATA
            self.seq += 1
            # Least-bad first: the fallback list is ordered; rotate within its best tier.
            chosen = POLICIES["weighted-round-robin"](
                fallback, Ask(self.spec.answers, self.seq, self.rng)
            )
            return tuple(c.name for c in chosen)
        if mode == "sorry":
            sorry = self.spec.sorry_a if qtype == QTYPE.A else self.spec.sorry_aaaa
            return SORRY if sorry else NODATA
        return NODATA if mode == "nodata" else SERVFAIL

    def _build_view(self, now: float) -> FarmView:
        states: dict[str, str] = {}
        scores: dict[str, float] = {}
        candidates: dict[int, list[Candidate]] = {QTYPE.A: [], QTYPE.AAAA: []}
        tiers: dict[int, dict[str, list[Candidate]]] = {
            QTYPE.A: {STALE: [], NEW: [], DOWN: []},
            QTYPE.AAAA: {STALE: [], NEW: [], DOWN: []},
        }
        valid_until = now + 3600.0
        any_reported = False
        for host in self.hosts.values():
            state = self.host_state(host, now)
            states[host.name] = state
            value = score(host.report, self.spec.score, host.spec.capacity)
            scores[host.name] = value
            if host.report is not None:
                any_reported = True
                deadline = host.report.received + self.spec.stale_after * host.report.interval
                if deadline > now:
                    valid_until = min(valid_until, deadline)
            candidate = Candidate(host.name, host.spec.capacity, value)
            for qtype in (QTYPE.A, QTYPE.AAAA):
                if not host.spec.addresses(qtype):
                    continue
                if state == UP:
                    candidates[qtype].append(candidate)
                elif state in tiers[qtype]:
                    tiers[qtype][state].append(candidate)
        fallback: dict[int, tuple[Candidate, ...]] = {}
        for qtype, tier in tiers.items():
            # No host has ever reported (a fresh start or no agents): answer the new hosts in
            # weighted rotation rather than nothing. Otherwise the least-bad tier: stale hosts
            # (last known load) before never-reported ones before hosts reported down.
            order = (NEW, STALE, DOWN) if not any_reported else (STALE, NEW, DOWN)
            for state in order:
                if tier[state]:
                    fallback[qtype] = tuple(sorted(tier[state], key=lambda c: c.load))
                    break
        return FarmView(
            states=states,
            scores=scores,
            candidates={q: tuple(c) for q, c in candidates.items()},
            fallback=fallback,
            valid_until=valid_until,
        )

    def addresses(self, names: Sequence[str] | str, qtype: int) -> list[str]:
        """The addresses to put in an answer for the chosen host names (or SORRY)."""
        if names == SORRY:
            return list(self.spec.sorry_a if qtype == QTYPE.A else self.spec.sorry_aaaa)
        out: list[str] = []
        for host_name in names:
            out.extend(self.hosts[host_name].spec.addresses(qtype))
        return out
