"""Health checks from the servers: what one probe result does to a host, as pure functions.

The prober (``lbdns.probe``) sends the probes; this module keeps the score. Per address of a
host, a ``Tracker`` follows HAProxy's rule:

| now     | result  | streak after                 | becomes                      |
|---------|---------|------------------------------|------------------------------|
| unknown | any     | 1                            | up on success, down on fail  |
| up      | fail    | ``fall`` failures in a row   | down                         |
| down    | success | ``rise`` successes in a row  | up                           |

(The first result decides at once: a server that starts does not wait ``rise`` probes before
it answers, nor ``fall`` probes before it stops answering a host that is already dead.)

A host's verdict on one server is ``down`` when any of its addresses is down (an answer names
all of a host's addresses of a family), ``up`` when all are up, unknown otherwise. Across
servers (``quorum_verdict``), a host is down when at least ``quorum`` of the servers that have a
verdict see it down; the default quorum is a majority of them, so one server's broken path does
not take a host out for everyone.

How the verdict combines with the agent's report (``combine``; the farm's ``require``):

| require | agent state (report)     | check   | host state | reason |
|---------|--------------------------|---------|------------|--------|
| any     | any                      | unknown | agent's    | agent  |
| agent   | any                      | any     | agent's    | agent  |
| both    | any                      | down    | down       | check  |
| both    | up                       | up      | up         |        |
| both    | new (no agent reported)  | up      | up         | check  |
| both    | stale or down            | up      | agent's    | agent  |
| check   | any                      | down    | down       | check  |
| check   | any                      | up      | up         | check  |
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

CHECK_UP = "up"
CHECK_DOWN = "down"

# States as in lbdns.balance.host (plain strings here: this module imports nothing of the farm).
_UP, _NEW, _DOWN = "up", "new", "down"


def streaks(ok: bool, successes: int, failures: int) -> tuple[int, int]:
    """The (successes, failures) streaks after one result: a result ends the other streak."""
    return (successes + 1, 0) if ok else (0, failures + 1)


def thresholded(
    up: bool | None, ok: bool, successes: int, failures: int, rise: int, fall: int
) -> bool:
    """The state after a result, HAProxy's rule: the first result decides; then ``fall``
    failures in a row take it down and ``rise`` successes in a row bring it back. (The agent's
    own health checks use the same rule.)"""
    if up is None:
        return ok
    if up and failures >= fall:
        return False
    if not up and successes >= rise:
        return True
    return up


@dataclass(slots=True)
class Tracker:
    """One address of a host as this server's probes see it."""

    up: bool | None = None  # None: no result yet
    successes: int = 0  # streak of successes (0 after a failure)
    failures: int = 0  # streak of failures (0 after a success)
    last_ok: bool | None = None
    last_latency: float | None = None  # seconds, of the last probe (success or not)
    last_error: str | None = None  # why the last probe failed
    last_at: float | None = None  # wall-clock time of the last result
    changed_at: float | None = None  # when ``up`` last changed
    probes: int = 0

    def record(
        self, ok: bool, latency: float, error: str | None, now: float, rise: int, fall: int
    ) -> bool:
        """Count one probe result; True when the address turned up or down."""
        self.probes += 1
        self.last_ok, self.last_latency, self.last_at = ok, latency, now
        self.last_error = None if ok else error
        self.successes, self.failures = streaks(ok, self.successes, self.failures)
        before = self.up
        self.up = thresholded(before, ok, self.successes, self.failures, rise, fall)
        if self.up != before:
            self.changed_at = now
            return True
        return False

    @property
    def verdict(self) -> str | None:
        return None if self.up is None else CHECK_UP if self.up else CHECK_DOWN

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.verdict or "unknown",
            "last_ok": self.last_ok,
            "latency": None if self.last_latency is None else round(self.last_latency, 6),
            "error": self.last_error,
            "successes": self.successes,
            "failures": self.failures,
            "at": self.last_at,
            "changed_at": self.changed_at,
            "probes": self.probes,
        }


def host_verdict(verdicts: Iterable[str | None]) -> str | None:
    """One server's verdict on a host from its addresses' verdicts."""
    seen_unknown = False
    any_seen = False
    for verdict in verdicts:
        any_seen = True
        if verdict == CHECK_DOWN:
            return CHECK_DOWN
        if verdict is None:
            seen_unknown = True
    if not any_seen or seen_unknown:
        return None
    return CHECK_UP


def quorum_verdict(verdicts: Iterable[str | None], quorum: int = 0) -> str | None:
    """The servers' verdicts together: down when ``quorum`` of those with a verdict say down
    (0: a majority of them; a quorum above their number needs all of them)."""
    known = [v for v in verdicts if v is not None]
    if not known:
        return None
    needed = quorum if quorum > 0 else len(known) // 2 + 1
    down = sum(1 for v in known if v == CHECK_DOWN)
    return CHECK_DOWN if down >= min(needed, len(known)) else CHECK_UP


def combine(require: str, agent: str, verdict: str | None) -> tuple[str, str | None]:
    """A host's state and the reason for it from its agent state (up, new, stale or down) and
    the servers' check verdict (up, down or None), by the farm's ``require`` (table above)."""
    agent_reason = None if agent == _UP else "agent"
    if verdict is None or require == "agent":
        return agent, agent_reason
    if verdict == CHECK_DOWN:
        return _DOWN, "check"
    if require == "check":
        return _UP, "check"
    if agent == _NEW:
        return _UP, "check"  # no agent: the probes alone, at the host's static capacity
    return agent, agent_reason


@dataclass(slots=True)
class PeerVerdict:
    """Another server's verdict on a host, as it published it (``detail`` per address)."""

    verdict: str | None
    expires: float  # ignored after this time: the server stopped telling
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class HostProbe:
    """Everything known about a host's probes: this server's trackers per address and the
    other servers' verdicts."""

    trackers: dict[str, Tracker] = field(default_factory=dict)
    peers: dict[str, PeerVerdict] = field(default_factory=dict)
    local: str | None = None  # the prober's last ``local_verdict`` (to log and count changes)

    def local_verdict(self) -> str | None:
        return host_verdict(t.verdict for t in self.trackers.values())

    def verdict(self, quorum: int, now: float) -> str | None:
        """The verdict of every server that probes the host (this one included)."""
        if not self.peers:
            return self.local_verdict()
        votes = [self.local_verdict()] if self.trackers else []
        votes.extend(p.verdict for p in self.peers.values() if p.expires > now)
        return quorum_verdict(votes, quorum)

    def expire(self, now: float) -> bool:
        """Forget the verdicts of servers that stopped telling; True when one was dropped."""
        gone = [server for server, peer in self.peers.items() if peer.expires <= now]
        for server in gone:
            del self.peers[server]
        return bool(gone)

    def summary(self) -> dict[str, Any]:
        """This server's view, as published to the others and shown by the API."""
        return {
            "state": self.local_verdict() or "unknown",
            "addresses": {address: t.to_json() for address, t in self.trackers.items()},
        }
