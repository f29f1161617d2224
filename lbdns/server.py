"""The lbdns server process: zones, registry, store, DNS listeners and the HTTP API together.

Start-up errors (a bad zone, a port in use) are fatal and raised to the CLI. Errors from a change
request (a reload with a bad file) are reported to the caller and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import resource
import signal
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lbdns.config import Config, auto_workers, usable_cpus
from lbdns.dnsserver import identity
from lbdns.dnsserver.cookie import Cookies
from lbdns.dnsserver.rrl import RateLimiter
from lbdns.dnsserver.transport import (
    TcpLimits,
    TcpServer,
    TransportStats,
    UdpListener,
    bind_tcp,
    bind_udp,
)
from lbdns.dnsserver.wire import Answerer
from lbdns.errors import LbdnsError, ZoneErrors
from lbdns.registry import Registry
from lbdns.sdnotify import Notifier
from lbdns.store import default_data_dir, open_store
from lbdns.zone.model import Zone
from lbdns.zone.parse import load_folder, skipped_files
from lbdns.zone.serials import SerialBook

if TYPE_CHECKING:
    from lbdns.web.guard import HttpGuard

log = logging.getLogger("lbdns")


def _log_zones(zones: Mapping[str, Zone], event: str, folder: Path) -> None:
    for path in skipped_files(folder):
        log.warning("skipped %s: zone files end in .yaml or .yml", path)
    log.info(
        "zones loaded: %s",
        ", ".join(f"{z.origin} (serial {z.serial}, {len(z.farms)} farms)" for z in zones.values()),
        extra={"fields": {"event": event, "result": "ok", "zones": len(zones)}},
    )


def _bind_hint(exc: OSError, port: int) -> str:
    """What to do about a refused bind, for the errors a newcomer meets first."""
    if exc.errno in (errno.EACCES, errno.EPERM) and 0 < port < 1024:
        return (
            f" (port {port} needs root or CAP_NET_BIND_SERVICE: run from the systemd unit, "
            f"which grants it (systemd/lbdns.service), or `setcap cap_net_bind_service=+ep` "
            f"on the Python interpreter, or listen on a port above 1023, e.g. --dns "
            f"127.0.0.1:5353)"
        )
    if exc.errno == errno.EADDRINUSE:
        return f" (another process has port {port}: `ss -lntup 'sport = :{port}'` names it)"
    return ""


class Server:
    """One lbdns server. ``start`` binds everything; ``serve_forever`` runs until stopped.

    With ``workers: N`` (N > 1) this process is worker 0 and the hub of workers 1..N-1
    (``lbdns.workers``); a worker process makes its own ``Server`` with ``worker`` set, which
    serves DNS only.
    """

    def __init__(self, config: Config, registry: Registry | None = None, worker: int = 0):
        self.config = config
        self.worker = worker
        self.registry = registry or Registry()
        self.registry.compiled = config.udp_compiled
        self.answerer = Answerer(self.registry)
        self.answerer.explain_queries = config.explain_queries
        if config.rrl.enabled:
            self.answerer.rrl = RateLimiter(config.rrl)
            self.answerer.big = config.rrl.big_size
        self.answerer.identity = identity.answers(config.identity)
        if config.cookies.enabled:
            self.answerer.cookies = Cookies(config.cookies)
        if config.workers > 1:
            self.answerer.worker = f"worker {worker} of {config.workers} pid {os.getpid()}"
        if config.query_log > 0:
            from lbdns.dnsserver.querylog import QueryLog

            # Every worker logs its own queries; the rate is the server's, shared out.
            self.answerer.query_log = QueryLog(
                self.answerer,
                config.query_log,
                config.query_log_rate / config.workers,
                worker=worker if config.workers > 1 else None,
            )
        self.store = open_store(config, self.registry)
        self.hub: Any = None
        if config.workers > 1 and worker == 0:
            from lbdns.workers.hub import Hub, HubStore, shares_state

            self.hub = Hub(self)
            if not shares_state(config):  # a shared store tells every worker itself
                self.store = HubStore(self.store, self.hub)
        self.stats = TransportStats()
        self.udp: list[UdpListener] = []
        self.tcp = TcpServer(
            self.answerer.respond,
            TcpLimits(
                config.tcp_idle_timeout,
                config.tcp_max_connections,
                config.tcp_max_per_address,
                config.tcp_max_per_network,
            ),
            self.stats,
        )
        tcp = self.tcp
        self.answerer.tcp_keepalive = lambda: tcp.limits.idle_for(len(tcp.connections))
        self.dns_addresses: list[tuple[str, int]] = []
        self.http_address: tuple[str, int] | None = None
        self.started = time.time()
        self.reloads: dict[str, int] = {"ok": 0, "error": 0}
        self._http_runner: Any = None
        self._http_listener: asyncio.Server | None = None
        self.http_guard: HttpGuard | None = None
        self._stopping = asyncio.Event()
        self._background: set[asyncio.Task] = set()
        self.notifier = Notifier()  # systemd's NOTIFY_SOCKET, when it runs us as Type=notify
        self.serials = SerialBook(config.data_dir or default_data_dir())
        self.prober: Any = None  # lbdns.probe.prober.Prober, when checks are on

    # -- zones ------------------------------------------------------------------------------

    def reload(self) -> dict[str, Any]:
        """Re-read the zone files; swap them in only if all are valid. Raises ``ZoneErrors``."""
        try:
            zones = load_folder(self.config.zones, self.registry.zones)
        except ZoneErrors:
            self.reloads["error"] += 1
            raise
        self.serials.save(zones)
        self.registry.load_zones(zones)
        self.store.zones_loaded()
        if self.hub is not None:
            self.hub.reloaded()
        self.reloads["ok"] += 1
        _log_zones(zones, "reload", self.config.zones)
        return {
            "zones": {z.origin: {"serial": z.serial, "source": z.source} for z in zones.values()}
        }

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        zones = load_folder(self.config.zones, remembered=self.serials.load())
        self.serials.save(zones)
        self.registry.load_zones(zones)
        _log_zones(zones, "start", self.config.zones)
        await self.store.start()
        # Only the main process probes; the hub relays its verdicts to the workers.
        if self.config.checks and not self.worker:
            from lbdns.probe.prober import Prober

            self.prober = Prober(
                self.registry,
                self.store,
                source=self.config.check_source,
                concurrency=self.config.check_concurrency,
                on_change=self.hub.check_changed if self.hub is not None else None,
            )
            self.prober.sync()
            self.spawn(self.prober.run())
        reuse_port = self.config.workers > 1
        for host, port in self.config.dns_addresses():
            for attempt in range(20):
                try:
                    udp_sock = bind_udp(host, port, reuse_port)
                except OSError as exc:
                    if ":" in host and host == "::" and not self.config.dns:
                        log.warning("IPv6 is not available (%s); serving IPv4 only", exc.strerror)
                        udp_sock = None
                        break
                    raise LbdnsError(
                        f"cannot listen on UDP {host}:{port}: {exc.strerror}{_bind_hint(exc, port)}"
                    ) from None
                bound = udp_sock.getsockname()[1]  # port 0 picks a free port; TCP takes it too
                try:
                    tcp_sock = bind_tcp(host, bound, reuse_port)
                    break
                except OSError as exc:
                    udp_sock.close()
                    # With port 0 the free UDP port may be busy for TCP (a client's ephemeral
                    # port): pick another rather than fail.
                    if port == 0 and exc.errno == errno.EADDRINUSE and attempt < 19:
                        continue
                    raise LbdnsError(
                        f"cannot listen on TCP {host}:{bound}: {exc.strerror}"
                        f"{_bind_hint(exc, bound)}"
                    ) from None
            if udp_sock is None:
                continue
            port = bound
            listener = UdpListener(
                udp_sock,
                self.answerer.respond,
                self.stats,
                batch=self.config.udp_batch,
                compiled=self.config.udp_compiled,
                cache=self.answerer.udp_cache,
            )
            listener.start(loop)
            self.udp.append(listener)
            await self.tcp.start(tcp_sock)
            self.dns_addresses.append((host, port))
            log.info("DNS on %s port %d (UDP %s, and TCP)", host, port, listener.kind)
        dns = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.dns_addresses)
        if self.worker:
            gc.freeze()  # as below: what start-up made lives as long as the process
            log.info("worker %d serving dns=%s", self.worker, dns)
            return
        if self.hub is not None:
            await self.hub.start()
        if self.config.http is not None:
            await self._start_http()
        # What start-up made (modules, the first zones, the web app) lives as long as the
        # process: out of the cyclic collector's way, a full collection under a flood of new
        # names scans only what the caches hold (a 30-70 ms pause otherwise, docs/dns.md).
        gc.freeze()
        http = "{}:{}".format(*self.http_address) if self.http_address else "off"
        workers = self.config.workers
        if workers == auto_workers():
            how = " (one per usable CPU: workers: auto, the default"
            how += "; workers: 1 serves from one process)" if workers > 1 else ")"
        else:
            how = f" (workers: {workers}; {usable_cpus()} CPU(s) usable)"
        log.info(
            "DNS from %s%s", f"{workers} worker processes" if workers > 1 else "one process", how
        )
        log.info(
            "ready dns=%s http=%s state=%s workers=%d",
            dns,
            http,
            self.store.name,
            workers,
            extra={
                "fields": {
                    "event": "ready",
                    "dns": dns,
                    "http": http,
                    "state": self.store.name,
                    "workers": workers,
                }
            },
        )
        # Zones are loaded and every socket is bound: systemd may now start what comes After=.
        self.notifier.ready(f"serving {len(zones)} zone(s) on {dns}")
        if self.notifier.watchdog_interval is not None:
            self.spawn(self.notifier.watchdog())

    async def _start_http(self) -> None:
        from aiohttp import web

        from lbdns.web.app import build_app
        from lbdns.web.guard import HttpGuard

        config = self.config
        guard = HttpGuard(
            None, config.http_header_timeout, self._http_connection_cap(config.http_max_connections)
        )
        app = build_app(self, guard)
        # keepalive_timeout: an idle keep-alive connection holds a descriptor; 15 s, not 75 s.
        runner = web.AppRunner(app, access_log=None, handle_signals=False, keepalive_timeout=15.0)
        await runner.setup()
        guard.server = runner.server
        host, port = self.config.http
        # Bind the listening socket here, so the bound address (port 0 included) is ours to read
        # and aiohttp's runner only serves it.
        try:
            sock = socket.create_server(
                (host, port),
                family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                backlog=1024,
                reuse_port=False,
            )
        except OSError as exc:
            await runner.cleanup()
            raise LbdnsError(
                f"cannot listen on HTTP {host}:{port}: {exc.strerror}{_bind_hint(exc, port)}"
            ) from None
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        self._http_listener = await loop.create_server(guard, sock=sock, backlog=1024)
        self._http_runner = runner
        self.http_guard = guard
        self.http_address = sock.getsockname()[:2]
        log.info("HTTP API on http://%s:%d/", *self.http_address)

    def _http_connection_cap(self, wanted: int) -> int:
        """``http_max_connections``, lowered so that HTTP can never take the descriptors DNS TCP
        needs: at most the open-files limit less the DNS TCP cap and a reserve."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or hard > soft):
            # Both caps need descriptors: take what the hard limit allows (as NSD does).
            target = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
            if target > soft:
                try:
                    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                    soft = target
                except (ValueError, OSError):
                    pass
        if soft == resource.RLIM_INFINITY:
            return wanted
        room = soft - self.config.tcp_max_connections - 64
        cap = min(wanted, max(16, room))
        if cap < wanted:
            log.warning(
                "http_max_connections lowered from %d to %d: the open-files limit is %d and DNS "
                "TCP may hold %d (raise LimitNOFILE / ulimit -n to allow more)",
                wanted,
                cap,
                soft,
                self.config.tcp_max_connections,
            )
        return cap

    def spawn(self, coro) -> asyncio.Task:
        """Run a background task for the server's lifetime, keeping a reference to it."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload_on_signal)

    def _reload_on_signal(self) -> None:
        self.notifier.reloading()
        try:
            result = self.reload()
        except ZoneErrors as exc:
            log.error(
                "reload failed, the old zones keep serving:\n%s",
                exc,
                extra={"fields": {"event": "reload", "result": "error", "errors": len(exc.errors)}},
            )
            self.notifier.ready(f"reload failed ({len(exc.errors)} error(s)), old zones serving")
        else:
            self.notifier.ready(f"reloaded, serving {len(result['zones'])} zone(s)")

    def stop(self) -> None:
        if not self._stopping.is_set():
            self.notifier.stopping()
        self._stopping.set()

    async def serve_forever(self) -> None:
        await self._stopping.wait()

    def dns_counters(self) -> dict[str, Any]:
        """The DNS counters of every worker together (this process alone without workers)."""
        from lbdns.workers import counters

        total = counters.snapshot(self.stats, self.answerer)
        if self.hub is not None:
            counters.add(total, self.hub.counters())
        return total

    def worker_queries(self) -> dict[int, int]:
        """DNS queries received per worker (worker 0 is this process)."""
        from lbdns.workers import counters

        out = {0: self.stats.udp_queries + self.stats.tcp_queries}
        if self.hub is not None:
            for worker in self.hub.workers.values():
                out[worker.id] = counters.queries(worker.counters)
        return out

    async def close(self) -> None:
        if self.hub is not None:
            await self.hub.stop()
        for task in list(self._background):
            task.cancel()
        for listener in self.udp:
            listener.close()
        await self.tcp.close()
        if self._http_listener is not None:
            self._http_listener.close()
        if self._http_runner is not None:
            await self._http_runner.cleanup()
        await self.store.close()
        self.notifier.close()
        log.info("stopped")
