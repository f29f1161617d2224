"""Advice for whoever scales a farm and for hosts that carry too much.

**Utilisation** has one definition, here, and every place that shows it uses ``farm_load``:
the status page and ``GET /v1/status``, ``lbdns status``, ``GET /v1/farms`` and ``lbdns farms``,
and the ``lbdns_farm_*`` metrics. It is the farm's total load divided by its total capacity, a
fraction where 1 means full (shown as a percentage by the page and the CLI). A host's load is
the weighted sum of its metrics (the farm's ``score``, connections by default) and capacity is
in the same units (for the default score: the connections a host can take). Load counts from
every host with a fresh report that is not disabled (draining and down ones too: their load is
about to move to the others); capacity only from hosts that are up, the ones that can take it.

**Scale advice** (``GET /v1/farms/{farm}``, ``lbdns farms show``, ``lbdns_farm_hosts_needed``):
``hosts_needed`` is the number of hosts of the farm's mean capacity that brings utilisation to
the config's ``scale_target`` (default 0.7); ``change`` is that minus the hosts up now.

Both mean something only when capacities are absolute (what one host can take, in the score's
units). With relative capacities (1 and 2 for "twice as big") utilisation is load per unit of
capacity, not a fraction of full, and ``hosts_needed`` is not advice.

**Shed advice** (in the reply to a report, when the config says ``advice: true``): a host whose
score is more than ``SHED_FACTOR`` times the mean of the hosts that are up, while another host
is below the mean, is told how many connections to shed to come down to the mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lbdns.balance.farm import Farm
from lbdns.balance.host import DISABLED, UP, Host, score

SHED_FACTOR = 1.5


@dataclass(frozen=True)
class FarmLoad:
    hosts: int
    up: int
    load: float
    capacity: float
    utilisation: float | None  # None when no host is up
    target: float
    hosts_needed: int | None  # None when nothing has reported
    change: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "hosts": self.hosts,
            "up": self.up,
            "load": round(self.load, 3),
            "capacity": self.capacity,
            "utilisation": None if self.utilisation is None else round(self.utilisation, 4),
            "target": self.target,
            "hosts_needed": self.hosts_needed,
            "change": self.change,
        }


def percent(utilisation: float | None) -> str:
    """Utilisation as the page and the CLI show it: ``1533.3%``, or ``-`` when no host is up."""
    return "-" if utilisation is None else f"{100 * utilisation:.1f}%"


def _fresh(farm: Farm, host: Host, now: float) -> bool:
    report = host.report
    return report is not None and now - report.received <= farm.spec.stale_after * report.interval


def host_load(farm: Farm, host: Host) -> float:
    """The host's load in capacity units: its score times its capacity."""
    return score(host.report, farm.spec.score, host.spec.capacity) * host.spec.capacity


def farm_load(farm: Farm, now: float, target: float) -> FarmLoad:
    """Utilisation and scale advice for ``farm`` at ``now``."""
    load = 0.0
    capacity = 0.0
    up = 0
    reported = False
    capacities = []
    for host in farm.hosts.values():
        state = farm.host_state(host, now)
        if state != DISABLED:
            capacities.append(host.spec.capacity)
        if _fresh(farm, host, now) and state != DISABLED:
            reported = True
            load += host_load(farm, host)
        if state == UP:
            up += 1
            capacity += host.spec.capacity
    utilisation = load / capacity if capacity > 0 else None
    needed = change = None
    if reported:
        mean_capacity = sum(capacities) / len(capacities) if capacities else 1.0
        needed = max(1, math.ceil(load / (target * mean_capacity) - 1e-9))
        change = needed - up
    return FarmLoad(
        hosts=len(farm.hosts),
        up=up,
        load=load,
        capacity=capacity,
        utilisation=utilisation,
        target=target,
        hosts_needed=needed,
        change=change,
    )


def balance(farm: Farm, now: float) -> float | None:
    """Peak / mean score of the farm's up hosts (1 = perfectly even), None when none is up."""
    scores = [
        score(h.report, farm.spec.score, h.spec.capacity)
        for h in farm.hosts.values()
        if farm.host_state(h, now) == UP
    ]
    mean = sum(scores) / len(scores) if scores else 0.0
    return max(scores) / mean if mean > 0 else None


def shed_advice(farm: Farm, host: Host, now: float | None = None) -> int | None:
    """Connections ``host`` should shed, or None when it is not far above the farm's mean.

    Call it after a report is applied and only when the config says ``advice: true``.
    """
    now = farm.clock() if now is None else now
    if farm.host_state(host, now) != UP or host.report is None:
        return None
    connections = host.report.metrics.get("connections")
    if connections is None or connections <= 0:
        return None
    scores = [
        score(h.report, farm.spec.score, h.spec.capacity)
        for h in farm.hosts.values()
        if farm.host_state(h, now) == UP
    ]
    if len(scores) < 2:
        return None  # nowhere to send the connections
    mean = sum(scores) / len(scores)
    mine = score(host.report, farm.spec.score, host.spec.capacity)
    if mean <= 0 or mine <= SHED_FACTOR * mean or min(scores) >= mean:
        return None
    shed = int(connections * (1.0 - mean / mine))
    return shed if shed >= 1 else None


def advice_reply(farm: Farm, host: Host) -> dict[str, Any] | None:
    """The ``advice`` of a report reply: ``{"shed": n, "reason": ...}``, or None."""
    shed = shed_advice(farm, host)
    if shed is None:
        return None
    return {
        "shed": shed,
        "reason": f"{host.name} carries more than {SHED_FACTOR:g} x the mean load of {farm.name}",
    }
