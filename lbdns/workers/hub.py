"""The main process's side: start the workers, send them every change, relay their accounting.

See ``lbdns.workers`` for the design. ``HubStore`` wraps the server's store so that every change
the store accepts reaches every worker as soon as it is applied here; ``Hub`` owns the worker
processes, restarts those that exit, and keeps their DNS counters for ``/metrics``.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import os
import pickle
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lbdns
from lbdns.balance.farm import Farm
from lbdns.balance.host import DrainOptions, Host, Report
from lbdns.errors import LbdnsError
from lbdns.store.base import Store
from lbdns.workers import CHECK_SNAPSHOT_INTERVAL, EXCHANGE_INTERVAL, checks, counters
from lbdns.workers.channel import Channel, encode
from lbdns.zone.model import HostSpec

if TYPE_CHECKING:
    from lbdns.server import Server

log = logging.getLogger("lbdns.workers")

READY_TIMEOUT = 30.0  # seconds for a worker to load the zones and bind its sockets
RESTART_DELAY = (0.2, 10.0)  # first and longest wait before starting an exited worker again


@dataclass
class WorkerProcess:
    """One worker as the hub sees it."""

    id: int
    pid: int = 0
    channel: Channel | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    counters: dict[str, Any] = field(default_factory=dict)  # its last DNS counters
    started: float = 0.0
    restarts: int = 0


def config_json(server: Server) -> dict[str, Any]:
    """The server's config for a worker: the same object (pickled: it travels over our own
    socket pair to our own child), without HTTP, on the addresses actually bound, and with the
    cookie secret this process uses, so that a cookie one worker made is good at every other."""
    config = server.config
    changes: dict[str, Any] = {"http": None, "dns": tuple(server.dns_addresses)}
    cookies = getattr(server.answerer, "cookies", None)
    if cookies is not None:
        changes["cookies"] = dataclasses.replace(config.cookies, secret=cookies.secret.hex())
    worker_config = dataclasses.replace(config, **changes)
    return {"pickle": base64.b64encode(pickle.dumps(worker_config)).decode()}


def shares_state(config: Any) -> bool:
    """Whether the store is shared (Redis): then each worker is a server of the cluster."""
    return not config.state.startswith("memory://")


def state_json(server: Server) -> dict[str, Any] | None:
    """What a worker must apply on top of the zone files: the host changes and every report
    (None with a shared store: each worker reads it from there)."""
    if shares_state(server.config):
        return None
    registry = server.registry
    overlay = getattr(server.store, "overlay", None)
    return {
        "overlay": overlay.to_json() if overlay is not None else None,
        "reports": [
            [farm.name, host.name, host.report.to_json()]
            for farm in registry.farms.values()
            for host in farm.hosts.values()
            if host.report is not None
        ],
    }


class Hub:
    """Workers 1..N-1 of a server whose config says ``workers: N`` (the server is worker 0)."""

    def __init__(self, server: Server):
        self.server = server
        self.count = server.config.workers
        self.workers: dict[int, WorkerProcess] = {}
        self.retired: dict[str, Any] = {}  # the counters of worker processes that exited
        self.restarts = 0
        self._stopping = False
        self._tasks: set[asyncio.Task] = set()
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._checks_changed: set[tuple[str, str]] = set()
        self._checks_sent = 0.0  # monotonic time of the last full copy of the verdicts

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every worker and wait until each serves DNS (a start-up error is fatal)."""
        for worker_id in range(1, self.count):
            worker = self.workers[worker_id] = WorkerProcess(worker_id)
            self._keep(asyncio.get_running_loop().create_task(self._run(worker)))
        self._keep(asyncio.get_running_loop().create_task(self._exchange()))
        try:
            await asyncio.wait_for(
                asyncio.gather(*(w.ready.wait() for w in self.workers.values())), READY_TIMEOUT
            )
        except TimeoutError:
            late = [str(w.id) for w in self.workers.values() if not w.ready.is_set()]
            raise LbdnsError(
                f"worker(s) {', '.join(late)} did not start within {READY_TIMEOUT:g} s "
                "(their log lines say why)"
            ) from None

    def _keep(self, task: asyncio.Task) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        self._stopping = True
        for worker in self.workers.values():
            if worker.channel is not None:
                worker.channel.send({"op": "stop"})
        for proc in list(self._procs.values()):
            try:
                await asyncio.wait_for(proc.wait(), 5.0)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for task in list(self._tasks):
            task.cancel()

    async def _run(self, worker: WorkerProcess) -> None:
        """Start the worker; when it exits, log it and start it again (unless stopping)."""
        delay = RESTART_DELAY[0]
        while not self._stopping:
            started = time.monotonic()
            code = await self._serve(worker)
            if self._stopping:
                return
            counters.add(self.retired, counters.without_gauges(worker.counters))
            worker.counters = {}
            worker.restarts += 1
            self.restarts += 1
            log.error(
                "worker %d (pid %d) exited with code %s; starting it again in %.1f s",
                worker.id,
                worker.pid,
                code,
                delay,
                extra={
                    "fields": {
                        "event": "worker_exit",
                        "worker": worker.id,
                        "pid": worker.pid,
                        "code": code,
                    }
                },
            )
            await asyncio.sleep(delay)
            # A worker that dies at once (a bad zone file, a port taken) is retried less often.
            quick = time.monotonic() - started < 5.0
            delay = min(delay * 2, RESTART_DELAY[1]) if quick else RESTART_DELAY[0]

    async def _serve(self, worker: WorkerProcess) -> int | None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-P",  # not the working directory first: an lbdns/ there would shadow ours
                "-m",
                "lbdns.workers.worker",
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                env=_worker_environment(),
            )
        finally:
            theirs.close()
        self._procs[worker.id] = proc
        worker.pid, worker.started = proc.pid, time.time()
        worker.ready.clear()
        channel = worker.channel = await Channel.open(ours)
        channel.send(
            {
                "op": "hello",
                "worker": worker.id,
                "config": config_json(self.server),
                "state": state_json(self.server),
                "checks": {"origin": self.origin, "hosts": checks.snapshot(self.server.registry)},
            }
        )
        async for message in channel.messages():
            try:
                self._on_message(worker, message)
            except Exception:  # a bad message must not stop the relay for the others
                log.exception("worker %d sent a message that could not be applied", worker.id)
        worker.channel = None
        channel.close()
        code = await proc.wait()
        self._procs.pop(worker.id, None)
        return code

    # -- from the workers -------------------------------------------------------------------

    def _on_message(self, worker: WorkerProcess, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "exchange":
            self._on_exchange(worker, message)
        elif op == "counters":
            worker.counters = message["counters"]
        elif op == "ready":
            worker.ready.set()
            log.info("worker %d ready (pid %d)", worker.id, worker.pid)

    def _on_exchange(self, worker: WorkerProcess, message: dict[str, Any]) -> None:
        farms = self.server.registry.farms
        at = float(message.get("at", time.time()))
        for farm_name, counts in message.get("farms", {}).items():
            farm = farms.get(farm_name)
            if farm is None:
                continue
            for host_name, count in counts.items():
                host = farm.hosts.get(host_name)
                if host is not None:
                    # Farm-wide counts here: the status page, the metrics and the drains.
                    host.answers += int(count)
                    host.last_answered = max(host.last_answered, at)
        accounting = message.get("accounting")
        if accounting:
            for farm_name, data in accounting.items():
                farm = farms.get(farm_name)
                if farm is not None:
                    farm.add_peer_accounting(data)
            self.broadcast({"op": "accounting", "accounting": accounting}, but=worker.id)

    async def _exchange(self) -> None:
        """Every ``EXCHANGE_INTERVAL``: this process's own charges to every worker (with a
        shared store, the store's own exchange does it) and its changed check verdicts."""
        shared = shares_state(self.server.config)
        while True:
            await asyncio.sleep(EXCHANGE_INTERVAL)
            if not shared:
                accounting = {}
                for farm in self.server.registry.farms.values():
                    taken = farm.take_accounting()
                    if taken is not None:
                        accounting[farm.name] = taken
                if accounting:
                    self.broadcast({"op": "accounting", "accounting": accounting})
            self._send_checks()

    # -- health checks: only this process probes -------------------------------------------

    @property
    def origin(self) -> str:
        """Whose verdicts the workers hold: this server's id in Redis (its verdicts reach the
        workers through Redis too, and must count once), else worker 0."""
        return getattr(self.server.store, "server_id", None) or "worker 0"

    def check_changed(self, farm_name: str, host_name: str) -> None:
        """The prober turned an address of a host up or down here."""
        self._checks_changed.add((farm_name, host_name))

    def _send_checks(self) -> None:
        full = time.monotonic() - self._checks_sent >= CHECK_SNAPSHOT_INTERVAL
        if not full and not self._checks_changed:
            return
        registry = self.server.registry
        hosts = checks.snapshot(registry, None if full else self._checks_changed)
        self._checks_changed = set()
        if full:
            self._checks_sent = time.monotonic()
        elif not hosts:
            return
        self.broadcast({"op": "checks", "origin": self.origin, "full": full, "hosts": hosts})

    # -- to the workers ---------------------------------------------------------------------

    def broadcast(self, message: dict[str, Any], but: int | None = None) -> None:
        line = None
        for worker in self.workers.values():
            if worker.id != but and worker.channel is not None:
                line = line or encode(message)
                if not worker.channel.send_encoded(line):
                    self._lost(worker)

    def _lost(self, worker: WorkerProcess) -> None:
        """A worker that stopped reading its messages would answer from an old picture: it is
        stopped, and started again with the current one."""
        proc = self._procs.get(worker.id)
        if proc is not None and proc.returncode is None:
            log.error(
                "worker %d (pid %d) stopped reading its messages; restarting it",
                worker.id,
                proc.pid,
            )
            proc.kill()

    def reloaded(self) -> None:
        """The zones were reloaded here: every worker reads them again."""
        self.broadcast({"op": "reload", "state": state_json(self.server)})

    # -- for the API ------------------------------------------------------------------------

    def counters(self) -> dict[str, Any]:
        """The DNS counters of every worker but this process, and of those that exited."""
        total = counters.add({}, self.retired)
        for worker in self.workers.values():
            counters.add(total, worker.counters)
        return total

    def status(self) -> list[dict[str, Any]]:
        out = [{"worker": 0, "pid": os.getpid(), "ready": True, "restarts": 0}]
        for worker in self.workers.values():
            out.append(
                {
                    "worker": worker.id,
                    "pid": worker.pid,
                    "ready": worker.ready.is_set(),
                    "restarts": worker.restarts,
                    "queries": counters.queries(worker.counters),
                }
            )
        return out


class HubStore(Store):
    """The server's store, and every change it accepts sent on to the workers."""

    def __init__(self, inner: Store, hub: Hub):
        super().__init__(inner.registry)
        self.inner = inner
        self.hub = hub
        self.name = inner.name

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # the inner store's own attributes (overlay, path)

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    def healthy(self) -> bool:
        return self.inner.healthy()

    def check_changed(self, farm_name: str, host_name: str) -> None:
        self.inner.check_changed(farm_name, host_name)

    def status(self) -> dict[str, Any]:
        return self.inner.status()

    def zones_loaded(self) -> None:
        self.inner.zones_loaded()

    async def report(self, farm: Farm, host: Host, report: Report) -> bool:
        applied = await self.inner.report(farm, host, report)
        if applied:
            self._send_reports([(farm, host, report)])
        return applied

    async def reports(self, items: Sequence[tuple[Farm, Host, Report]]) -> list[bool]:
        results = await self.inner.reports(items)
        self._send_reports([item for item, ok in zip(items, results, strict=True) if ok])
        return results

    def _send_reports(self, items: Sequence[tuple[Farm, Host, Report]]) -> None:
        if items:
            self.hub.broadcast(
                {
                    "op": "reports",
                    "items": [
                        [farm.name, host.name, report.to_json()] for farm, host, report in items
                    ],
                }
            )

    async def put_host(self, farm: Farm, spec: HostSpec) -> Host:
        host = await self.inner.put_host(farm, spec)
        self.hub.broadcast(
            {"op": "put", "farm": farm.name, "host": spec.name, "spec": spec.to_json()}
        )
        return host

    async def remove_host(self, farm: Farm, host_name: str) -> None:
        await self.inner.remove_host(farm, host_name)
        self.hub.broadcast({"op": "remove", "farm": farm.name, "host": host_name})

    async def set_admin(
        self, farm: Farm, host: Host, admin: str, when: float, drain: DrainOptions | None = None
    ) -> None:
        await self.inner.set_admin(farm, host, admin, when, drain)
        self.hub.broadcast(
            {
                "op": "admin",
                "farm": farm.name,
                "host": host.name,
                "admin": admin,
                "when": when,
                "drain": host.drain.to_json() if host.drain is not None else None,
            }
        )


def _worker_environment() -> dict[str, str]:
    """The environment of a worker: this one, with the folder this process imported lbdns
    from first on PYTHONPATH, so that a worker runs the same code (and the same compiled
    extension) as the main process, whatever its working directory holds. Started from a
    source checkout, ``python -m`` would otherwise import the checkout's lbdns/, which has no
    compiled UDP loop unless it was built in place."""
    root = str(Path(lbdns.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (root, env.get("PYTHONPATH"))))
    return env
