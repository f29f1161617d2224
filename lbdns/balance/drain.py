"""Drain with completion: when a draining host may be taken away without cutting anyone off.

A draining host gets no new answers. It is **drained** once both hold:

* its reported connections are at or below the drain's threshold (default 0), and
* the farm's TTL plus a grace (default 5 s) has passed since the last answer that named it,
  so that no resolver still hands out a cached answer pointing at it.

The last answer is ``Host.last_answered`` when the farm keeps it; a draining host is never
answered, so the drain's start is a safe upper bound when it does not. A host that never reported
counts as having no connections (nothing else can be known about it); a host whose agent stopped
keeps its last reported count, so its drain waits until forced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lbdns.balance.host import DEFAULT_GRACE, DRAINING, DrainOptions, Host

if TYPE_CHECKING:
    from lbdns.balance.farm import Farm

__all__ = ["DEFAULT_GRACE", "DrainOptions", "DrainStatus", "drain_status"]


@dataclass(frozen=True)
class DrainStatus:
    """Where a drain stands; ``waiting_for`` is empty once it is complete."""

    started: float
    running_for: float
    connections: float | None
    options: DrainOptions
    answers_expire_in: float  # seconds until cached answers naming the host are gone
    waiting_for: tuple[str, ...]

    @property
    def done(self) -> bool:
        return not self.waiting_for

    def to_json(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "running_for": round(self.running_for, 3),
            "done": self.done,
            "connections": self.connections,
            "threshold": self.options.threshold,
            "grace": self.options.grace,
            "answers_expire_in": round(self.answers_expire_in, 3),
            "waiting_for": list(self.waiting_for),
        }


def drain_status(farm: Farm, host: Host, now: float) -> DrainStatus | None:
    """The progress of ``host``'s drain at ``now``; None when the host is not draining."""
    if host.admin != DRAINING or host.drain_started is None:
        return None
    options = host.drain or DrainOptions()
    started = host.drain_started
    last_answer = host.last_answered if host.last_answered > 0 else started
    expire_in = max(0.0, last_answer + farm.spec.ttl + options.grace - now)
    connections = None
    if host.report is not None:
        value = host.report.metrics.get("connections")
        connections = float(value) if value is not None else None
    waiting = []
    if connections is not None and connections > options.threshold:
        waiting.append(
            f"connections: {connections:g} reported, waiting for <= {options.threshold:g}"
        )
    if expire_in > 0:
        waiting.append(
            f"answers: cached answers may name the host for {expire_in:.1f} s more "
            f"(TTL {farm.spec.ttl} s + grace {options.grace:g} s)"
        )
    return DrainStatus(
        started=started,
        running_for=max(0.0, now - started),
        connections=connections,
        options=options,
        answers_expire_in=expire_in,
        waiting_for=tuple(waiting),
    )
