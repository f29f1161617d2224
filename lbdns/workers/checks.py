"""The main process's health-check verdicts, as sent to the workers and applied there.

Only the main process probes (a server of N workers would otherwise probe every host N times and,
with Redis, count as N servers in the others' quorum). Each worker keeps the main process's
verdict on a host as one more server's (``HostProbe.peers[origin]``, with no trackers of its
own), so ``HostProbe.verdict`` gives in a worker what it gives in the main process: with the
embedded store that verdict alone; with Redis the same quorum of the main process and the other
servers. ``origin`` is the main process's server id in Redis, so that its verdict arriving
through Redis and through the channel lands in the same slot and counts once.

A relayed verdict does not expire: the channel is ordered and loses nothing, so it holds until
the main process sends another, and a worker whose main process is gone stops serving. Only the
verdict travels (``up``, ``down`` or ``unknown`` per host, some 20 bytes): a worker has no API
to show the per-address detail, so a full copy of 10,000 hosts is some 200 KB a second.
"""

from __future__ import annotations

from collections.abc import Collection

from lbdns.balance.check import CHECK_DOWN, CHECK_UP, HostProbe, PeerVerdict
from lbdns.registry import Registry

NEVER = float("inf")

Hosts = dict[str, dict[str, str]]  # farm -> host -> up, down or unknown
UNKNOWN = "unknown"


def snapshot(registry: Registry, only: Collection[tuple[str, str]] | None = None) -> Hosts:
    """This process's own verdicts (hosts it probes), all of them or the ``only`` ones."""
    out: Hosts = {}
    for farm in registry.farms.values():
        for host in farm.hosts.values():
            probe = host.probe
            if probe is None or not probe.trackers:
                continue
            if only is None or (farm.name, host.name) in only:
                out.setdefault(farm.name, {})[host.name] = probe.local_verdict() or UNKNOWN
    return out


def apply(registry: Registry, origin: str, hosts: Hosts, full: bool) -> None:
    """The main process's verdicts in a worker. ``full``: ``hosts`` is every host it probes, so
    a host missing from it is no longer probed there (its check was removed)."""
    for farm in registry.farms.values():
        sent = hosts.get(farm.name)
        if sent is None and not full:
            continue
        sent = sent or {}
        changed = False
        for host_name, host in farm.hosts.items():
            state = sent.get(host_name)
            if state is None:
                if full and host.probe is not None and host.probe.peers.pop(origin, None):
                    changed = True
                continue
            if farm.spec.check_of(host.spec) is None:
                continue  # not checked in this worker's zones (a reload not applied yet)
            probe = host.probe
            if probe is None:
                probe = host.probe = HostProbe()
            verdict = state if state in (CHECK_UP, CHECK_DOWN) else None
            previous = probe.peers.get(origin)
            probe.peers[origin] = PeerVerdict(verdict, NEVER, {"state": state})
            if previous is None or previous.verdict != verdict:
                changed = True
        if changed:
            farm.changed()
