"""A worker process: ``python -m lbdns.workers.worker FD`` (started by the hub, never by hand).

It serves DNS from its own event loop and registry on the addresses the main process bound
(``SO_REUSEPORT``), applies every change and check verdict the hub sends, and sends back, every
``EXCHANGE_INTERVAL``, what its answers charged and how many named each host. It has no HTTP
listener, no store of its own and no prober. When the channel closes (the main process is gone)
it stops.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import pickle
import signal
import socket
import sys
import time
from typing import Any

from lbdns import logs
from lbdns.balance.farm import Farm
from lbdns.balance.host import DrainOptions, Host, Report
from lbdns.config import Config
from lbdns.errors import LbdnsError, ZoneErrors
from lbdns.registry import Registry
from lbdns.store.base import Store, apply_report
from lbdns.store.overlay import HostChange, Overlay
from lbdns.workers import EXCHANGE_INTERVAL, checks, counters
from lbdns.workers.channel import Channel
from lbdns.workers.hub import shares_state
from lbdns.zone.model import HostSpec
from lbdns.zone.parse import load_folder

log = logging.getLogger("lbdns.workers")

COUNTERS_INTERVAL = 1.0  # seconds between two reports of the DNS counters to the hub


class WorkerStore(Store):
    """A worker's store: changes arrive from the hub, never from an API (a worker has none)."""

    name = "worker"

    async def report(self, farm: Farm, host: Host, report: Report) -> bool:
        raise LbdnsError("a worker process takes no changes; send them to the main process")

    async def put_host(self, farm: Farm, spec: HostSpec) -> Host:
        raise LbdnsError("a worker process takes no changes; send them to the main process")

    async def remove_host(self, farm: Farm, host_name: str) -> None:
        raise LbdnsError("a worker process takes no changes; send them to the main process")

    async def set_admin(
        self, farm: Farm, host: Host, admin: str, when: float, drain: DrainOptions | None = None
    ) -> None:
        raise LbdnsError("a worker process takes no changes; send them to the main process")


def config_from_json(data: dict[str, Any]) -> Config:
    """The config the hub sent (``hub.config_json``): the main process's own, pickled."""
    config = pickle.loads(base64.b64decode(data["pickle"]))
    if not isinstance(config, Config):
        raise LbdnsError("the main process sent no config")
    return config


def apply_state(registry: Registry, state: dict[str, Any] | None) -> None:
    """The hub's host changes and reports on top of the zone files just loaded (None: the
    shared store brings them)."""
    if state is None:
        return
    if state.get("overlay") is not None:
        Overlay.from_json(state["overlay"]).apply(registry)
    apply_reports(registry, state.get("reports", ()))


def apply_reports(registry: Registry, items: Any) -> None:
    for farm_name, host_name, data in items:
        farm = registry.farms.get(farm_name)
        host = farm.hosts.get(host_name) if farm is not None else None
        if host is not None and apply_report(host, Report.from_json(data)):
            farm.changed()


def apply_change(registry: Registry, message: dict[str, Any]) -> None:
    """A host added, changed, removed, drained, disabled or enabled in the main process."""
    farm = registry.farms.get(message["farm"])
    if farm is None:
        return
    op = message["op"]
    if op == "put":
        spec = HostChange.from_json(message["host"], {"spec": message["spec"]}).spec
        registry.put_host(farm, spec)
    elif op == "remove":
        registry.remove_host(farm, message["host"])
    elif op == "admin":
        host = farm.hosts.get(message["host"])
        if host is None:
            return
        admin, drain = message["admin"], message.get("drain")
        host.admin = admin
        host.drain_started = float(message["when"]) if admin == "draining" else None
        host.drain = (
            DrainOptions(float(drain["threshold"]), float(drain["grace"])) if drain else None
        )
        farm.changed()


def answer_deltas(registry: Registry, sent: dict[tuple[str, str], int]) -> dict:
    """Answers per host since the last call (``Host.answers`` only grows, but a reload makes
    new host objects that count from 0)."""
    out: dict[str, dict[str, int]] = {}
    for farm in registry.farms.values():
        for host in farm.hosts.values():
            key = (farm.name, host.name)
            before = sent.get(key, 0)
            if host.answers < before:
                before = 0
            if host.answers > before:
                out.setdefault(farm.name, {})[host.name] = host.answers - before
            sent[key] = host.answers
    return out


class Worker:
    def __init__(self, channel: Channel):
        self.channel = channel
        self.server: Any = None
        self._sent: dict[tuple[str, str], int] = {}
        self.shared = False

    async def run(self) -> None:
        from lbdns.server import Server

        # Ctrl-C and a closed terminal reach the whole process group: the main process stops
        # the workers itself (a worker killed on its own is started again).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        messages = self.channel.messages()
        hello = await anext(messages)
        worker_id = int(hello["worker"])
        config = config_from_json(hello["config"])
        logs.setup(config.log_format, config.log_level)
        server = self.server = Server(config, worker=worker_id)
        self.shared = shares_state(config)
        if not self.shared:  # with Redis the worker is one more server of the cluster
            server.store = WorkerStore(server.registry)
        try:
            await server.start()
            apply_state(server.registry, hello["state"])
            if hello.get("checks"):
                relayed = hello["checks"]
                checks.apply(server.registry, relayed["origin"], relayed["hosts"], full=True)
            self.channel.send({"op": "ready", "worker": worker_id, "pid": os.getpid()})
            exchange = asyncio.get_running_loop().create_task(self._exchange())
            async for message in messages:
                if message.get("op") == "stop":
                    break
                try:
                    self._on_message(message)
                except Exception:  # one bad change must not take the worker's DNS down
                    log.exception("worker %d could not apply a %s", worker_id, message.get("op"))
            exchange.cancel()
        finally:
            await server.close()
            self.channel.close()

    def _on_message(self, message: dict[str, Any]) -> None:
        registry = self.server.registry
        op = message.get("op")
        if op == "accounting":
            for farm_name, data in message["accounting"].items():
                farm = registry.farms.get(farm_name)
                if farm is not None:
                    farm.add_peer_accounting(data)
        elif op == "reports":
            apply_reports(registry, message["items"])
        elif op == "checks":
            checks.apply(registry, message["origin"], message["hosts"], bool(message.get("full")))
        elif op in ("put", "remove", "admin"):
            apply_change(registry, message)
        elif op == "reload":
            try:
                registry.load_zones(load_folder(self.server.config.zones, registry.zones))
            except ZoneErrors as exc:
                log.error("worker reload failed, the old zones keep serving:\n%s", exc)
                return
            if self.shared:
                self.server.store.zones_loaded()
            apply_state(registry, message["state"])

    async def _exchange(self) -> None:
        server = self.server
        last_counters = 0.0
        while True:
            await asyncio.sleep(EXCHANGE_INTERVAL)
            registry = server.registry
            accounting = {}
            counts: dict = {}
            if not self.shared:  # a shared store exchanges the accounting itself
                for farm in registry.farms.values():
                    taken = farm.take_accounting()
                    if taken is not None:
                        accounting[farm.name] = taken
                counts = answer_deltas(registry, self._sent)
            if accounting or counts:
                self.channel.send(
                    {"op": "exchange", "at": time.time(), "farms": counts, "accounting": accounting}
                )
            now = time.monotonic()
            if now - last_counters >= COUNTERS_INTERVAL:
                last_counters = now
                self.channel.send(
                    {"op": "counters", "counters": counters.snapshot(server.stats, server.answerer)}
                )


async def main(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    channel = await Channel.open(sock)
    await Worker(channel).run()


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        uvloop = None
    runner = uvloop.run if uvloop is not None else asyncio.run
    try:
        runner(main(int(sys.argv[1])))
    except LbdnsError as exc:
        print(f"lbdns worker: {exc}", file=sys.stderr)
        sys.exit(1)
