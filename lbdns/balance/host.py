"""A host of a farm at run time: its spec, its last report, its admin state, and its score.

Host states, in the order of precedence used to describe a host (docs/balancing.md):

| state    | when                                                        | answered          |
|----------|-------------------------------------------------------------|-------------------|
| up       | a fresh report says healthy                                 | yes               |
| new      | never reported since this server started or since added     | only in warm-up   |
| stale    | no report for ``stale_after`` x the host's report interval  | fail-open only    |
| down     | the last report says unhealthy, or the servers' probes fail | fail-open only    |
| draining | drained through the admin API; turns drained when empty     | never             |
| drained  | draining, and its drain is complete (``balance.drain``)      | never             |
| disabled | disabled through the admin API                              | never             |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from lbdns.balance.check import HostProbe
from lbdns.zone.model import HostSpec

DEFAULT_GRACE = 5.0
DRAIN_OPTIONS = ("threshold", "grace")


@dataclass(frozen=True)
class DrainOptions:
    """When a drain counts as complete: connections at or below ``threshold``, and ``grace``
    seconds after the farm's TTL has run out on the last answer that named the host."""

    threshold: float = 0.0
    grace: float = DEFAULT_GRACE
    # The options a drain request named; the others were defaults. Not part of the value.
    given: frozenset[str] = field(default=frozenset(DRAIN_OPTIONS), compare=False, repr=False)

    def to_json(self) -> dict[str, float]:
        return {"threshold": self.threshold, "grace": self.grace}

    def over(self, previous: DrainOptions) -> DrainOptions:
        """These options for a host already draining with ``previous``: what this request did
        not name keeps its earlier value (re-draining with a threshold keeps the grace)."""
        return DrainOptions(
            threshold=self.threshold if "threshold" in self.given else previous.threshold,
            grace=self.grace if "grace" in self.given else previous.grace,
        )


class HostState(StrEnum):
    """A host's state as users see it (a ``str``: it compares, hashes and prints as its value)."""

    UP = "up"
    NEW = "new"  # never reported since this server started (or since it was added)
    STALE = "stale"  # no report for stale_after x its interval
    DOWN = "down"  # reported unhealthy
    DRAINING = "draining"
    DRAINED = "drained"  # draining, and the drain is complete
    DISABLED = "disabled"


class AdminState(StrEnum):
    """What an operator set through the admin API."""

    ENABLED = "enabled"
    DRAINING = "draining"
    DISABLED = "disabled"


UP = HostState.UP
NEW = HostState.NEW
STALE = HostState.STALE
DOWN = HostState.DOWN
DRAINING = HostState.DRAINING
DRAINED = HostState.DRAINED
DISABLED = HostState.DISABLED

ADMIN_STATES = tuple(AdminState)


@dataclass(slots=True)
class Report:
    """The last report accepted from a host."""

    seq: int
    received: float  # wall-clock seconds when accepted
    interval: float
    healthy: bool
    metrics: Mapping[str, float]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Report:
        """A report as ``to_json`` wrote it (the shared store, the workers' hub)."""
        return cls(
            seq=int(data["seq"]),
            received=float(data["received"]),
            interval=float(data["interval"]),
            healthy=bool(data["healthy"]),
            metrics={str(k): float(v) for k, v in (data.get("metrics") or {}).items()},
        )

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
    drain: DrainOptions | None = None  # the options of the running drain
    report: Report | None = None
    last_answered: float = 0.0
    answers: int = 0
    probe: HostProbe | None = None  # the servers' health checks (lbdns.balance.check)

    @property
    def name(self) -> str:
        return self.spec.name

    def keep_state_of(self, previous: Host) -> None:
        """Carry what the server learnt about a host over to its new object (after a reload)."""
        self.report = previous.report
        self.admin = previous.admin
        self.drain_started = previous.drain_started
        self.drain = previous.drain
        self.last_answered = previous.last_answered
        self.answers = previous.answers
        self.probe = previous.probe


def raw_score(report: Report | None, weights: Mapping[str, float]) -> float:
    """The weighted sum of a report's metrics, before dividing by capacity."""
    if report is None:
        return 0.0
    total = 0.0
    metrics = report.metrics
    for metric, weight in weights.items():
        total += weight * float(metrics.get(metric, 0.0))
    return total


def score(report: Report | None, weights: Mapping[str, float], capacity: float) -> float:
    """A host's load score: the weighted sum of its metrics divided by its capacity.

    With the default weights ``{"connections": 1}`` this is connections per unit of capacity.
    A host with no report scores 0.
    """
    return raw_score(report, weights) / capacity
