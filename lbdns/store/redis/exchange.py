"""What the servers sharing a Redis tell each other besides the changes: answers and checks.

Two pub/sub channels (``P`` is ``redis_prefix``):

* ``P answers``: each server's answers per host since its last message, and its load-aware
  accounting (``Farm.take_accounting``: herds charged per host, answers, resolvers' query
  times). The others add the answer counts up (``peer_answers``), move each host's last
  answered time forward (a drain waits for the last answer on any server) and charge the herds
  like their own (``Farm.add_peer_accounting``);
* ``P checks``: each server's health-check verdicts, per host and address (the hosts whose
  verdict changed within ``EXCHANGE_INTERVAL``, and all of them every ``CHECK_HEARTBEAT``). A
  server's verdicts count for ``CHECK_PEER_TTL`` after its last message, so a server that stops
  (or loses Redis) stops voting on the others' hosts.

The Redis store owns one ``Exchange``: it subscribes ``channels`` beside its changes channel and
hands each of their messages to ``receive``; its clock calls ``send`` every
``EXCHANGE_INTERVAL`` while Redis answers (``drop_accounting`` while not), and
``expire_peer_checks`` every half second either way. The exchange has no connection of its own:
``send`` is given the store's publish call, and a Redis error in it is the store's to handle.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from lbdns.balance.check import PeerVerdict
from lbdns.registry import Registry

# How often each server publishes its answers and accounting (seconds): the others do not see its
# herds for up to this long, so it is short against a cache time.
EXCHANGE_INTERVAL = 0.05
CHECK_HEARTBEAT = 1.0  # every server publishes all its check verdicts this often
CHECK_PEER_TTL = 3.5  # another server's verdicts count this long after its last message

Publish = Callable[[str, str], Awaitable[Any]]  # (channel, message): redis-py's publish


class Exchange:
    """This server's answers, accounting and check verdicts out, the other servers' in."""

    def __init__(self, registry: Registry, server_id: str, prefix: str):
        self.registry = registry
        self.server_id = server_id
        self.channel_answers = prefix + "answers"
        self.channel_checks = prefix + "checks"
        self.channels = (self.channel_answers, self.channel_checks)
        # Answers the other servers gave, per farm and host, since this server started.
        self.peer_answers: dict[str, dict[str, int]] = {}
        self._sent_answers: dict[tuple[str, str], int] = {}
        self._checks_changed: set[tuple[str, str]] = set()
        self._checks_sent = 0.0  # monotonic time of the last full publication

    # -- out --------------------------------------------------------------------------------

    async def send(self, publish: Publish, now: float) -> None:
        """Publish this server's answers and accounting since the last call, then its check
        verdicts (the changed ones; all of them every ``CHECK_HEARTBEAT``)."""
        counts = self._answer_deltas()
        accounting = {}
        for farm in self.registry.farms.values():
            taken = farm.take_accounting()
            if taken is not None:
                accounting[farm.name] = taken
        if counts or accounting:
            message = {
                "origin": self.server_id,
                "at": now,
                "farms": counts,
                "accounting": accounting,
            }
            await publish(self.channel_answers, json.dumps(message))
        await self._publish_checks(publish, now)

    def drop_accounting(self) -> None:
        """Nothing can be sent now (Redis is away): drop the accounting rather than send a late
        backlog (the agents' reports count those clients meanwhile)."""
        for farm in self.registry.farms.values():
            farm.take_accounting()

    def check_changed(self, farm_name: str, host_name: str) -> None:
        """This server's probes changed their verdict on a host: sent with the next ``send``."""
        self._checks_changed.add((farm_name, host_name))

    def _answer_deltas(self) -> dict[str, dict[str, int]]:
        """This server's answers per host since the last exchange (``Host.answers`` grows)."""
        out: dict[str, dict[str, int]] = {}
        for farm in self.registry.farms.values():
            for host in farm.hosts.values():
                key = (farm.name, host.name)
                sent = self._sent_answers.get(key, 0)
                if host.answers < sent:
                    sent = 0  # the counter restarted (a zone reload re-created the host)
                if host.answers > sent:
                    out.setdefault(farm.name, {})[host.name] = host.answers - sent
                self._sent_answers[key] = host.answers
        return out

    async def _publish_checks(self, publish: Publish, now: float) -> None:
        full = time.monotonic() - self._checks_sent >= CHECK_HEARTBEAT
        if not full and not self._checks_changed:
            return
        hosts: dict[str, dict[str, Any]] = {}
        for farm in self.registry.farms.values():
            for host in farm.hosts.values():
                probe = host.probe
                if probe is None or not probe.trackers:
                    continue
                if full or (farm.name, host.name) in self._checks_changed:
                    hosts.setdefault(farm.name, {})[host.name] = probe.summary()
        self._checks_changed.clear()
        if full:
            self._checks_sent = time.monotonic()
        if hosts:
            message = {"origin": self.server_id, "at": now, "hosts": hosts}
            await publish(self.channel_checks, json.dumps(message))

    # -- in ---------------------------------------------------------------------------------

    def receive(self, channel: str, data: str) -> None:
        """A message on one of ``channels`` (this server's own are skipped)."""
        if channel == self.channel_answers:
            self._on_answers(data)
        elif channel == self.channel_checks:
            self._on_checks(data)

    def expire_peer_checks(self, now: float) -> None:
        """Let the verdicts of servers that went quiet lapse (also while Redis is away: this
        server's own probes decide alone then)."""
        for farm in self.registry.farms.values():
            for host in farm.hosts.values():
                if host.probe is not None and host.probe.peers and host.probe.expire(now):
                    farm.changed()

    def _on_answers(self, data: str) -> None:
        message = json.loads(data)
        if message.get("origin") == self.server_id:
            return
        at = float(message.get("at", self.registry.clock()))
        for farm_name, counts in message.get("farms", {}).items():
            farm = self.registry.farms.get(farm_name)
            if farm is None:
                continue
            totals = self.peer_answers.setdefault(farm_name, {})
            for host_name, count in counts.items():
                totals[host_name] = totals.get(host_name, 0) + int(count)
                host = farm.hosts.get(host_name)
                if host is not None:
                    # A drain waits for the last answer that named the host, on any server.
                    host.last_answered = max(host.last_answered, at)
        # The load-aware accounting charges the other servers' herds like its own.
        for farm_name, data in message.get("accounting", {}).items():
            farm = self.registry.farms.get(farm_name)
            if farm is not None:
                farm.add_peer_accounting(data)

    def _on_checks(self, data: str) -> None:
        message = json.loads(data)
        origin = message.get("origin")
        if origin == self.server_id:
            return
        expires = self.registry.clock() + CHECK_PEER_TTL
        for farm_name, hosts in message.get("hosts", {}).items():
            farm = self.registry.farms.get(farm_name)
            if farm is None:
                continue
            for host_name, summary in hosts.items():
                host = farm.hosts.get(host_name)
                if host is None or host.probe is None:
                    continue  # not checked here: this server's zone files say otherwise
                state = summary.get("state")
                verdict = state if state in ("up", "down") else None
                previous = host.probe.peers.get(origin)
                host.probe.peers[origin] = PeerVerdict(verdict, expires, summary)
                if previous is None or previous.verdict != verdict:
                    farm.changed()
