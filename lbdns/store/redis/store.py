"""The shared store: several lbdns servers, one picture of every farm, kept in Redis.

What lives in Redis (``P`` is ``redis_prefix``, default ``lbdns:``):

* ``P hosts`` hash, ``"<farm> <host>"`` -> the host's API change (the overlay of overlay.py:
  added or changed spec, removal, admin state and since when) as JSON;
* ``P reports`` hash, ``"<farm> <host>"`` -> the host's last accepted report as JSON;
* ``P version`` a counter incremented by every change;
* ``P epoch`` a random id written when the membership was seeded. A Redis without it is empty
  (new, or restarted without persistence) and is re-seeded before it takes writes;
* ``P changes`` pub/sub channel: ``"<version> <server id> <json>"`` for every change, in
  version order;
* ``P answers`` and ``P checks`` pub/sub channels: each server's answers, load-aware accounting
  and health-check verdicts for the others (``lbdns.store.redis.exchange``, which this store
  owns and drives).

Every write is one Lua script (change the hash, increment the version, publish), so all servers
see the changes in one order. The server that accepted a change applies it locally once Redis
acknowledged it, and every server (itself included) applies the published change in version
order; a gap in the versions or a reconnect makes a server re-read everything. The query path
never waits on Redis: it reads the local registry, which a background task keeps in step.

While Redis is unreachable, writes raise ``Unavailable`` (HTTP 503) and nothing is applied; the
servers answer from their last snapshot, whose report ages stand still for ``stale_budget``
seconds and then count from the real receipt times again (so the farm's stale and
all-unhealthy rules apply). docs/cluster.md describes the operation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lbdns.balance.drain import DrainOptions
from lbdns.balance.farm import Farm
from lbdns.balance.host import Host, Report
from lbdns.errors import Unavailable
from lbdns.registry import Registry
from lbdns.store.base import Store, apply_report
from lbdns.store.overlay import HostChange, Overlay, _zone_entry, spec_digest
from lbdns.store.redis.exchange import EXCHANGE_INTERVAL, Exchange
from lbdns.store.redis.scripts import HOST_SCRIPT, REPORT_SCRIPT, SEED_SCRIPT
from lbdns.store.redis.urls import display_url, parse_sentinel_url
from lbdns.zone.model import HostSpec

if TYPE_CHECKING:
    from lbdns.config import Config

log = logging.getLogger("lbdns.store")

# The store's clock ticks every EXCHANGE_INTERVAL (the exchange's); the connection is checked,
# and the other servers' check verdicts expired, every PING_INTERVAL.
PING_INTERVAL = 0.5
# Redis calls give up after this long: an ingest or admin call then gets 503, not a hang.
CALL_TIMEOUT = 1.0
CONNECT_TIMEOUT = 0.5
RECONNECT_MAX = 1.0
WRITE_BATCH = 256
WAIT_MS = 250  # with Sentinel: how long a write waits for a replica to have it


class RedisErrors:
    """The exception classes of redis-py, imported only when the Redis store is used."""

    def __init__(self) -> None:
        from redis.exceptions import RedisError

        self.any: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)


def field(farm: str, host: str) -> str:
    return f"{farm} {host}"


def split_field(key: str) -> tuple[str, str]:
    farm, _, host = key.partition(" ")
    return farm, host


class RedisStore(Store):
    """The Redis store. ``start`` connects (or keeps trying in the background)."""

    name = "redis"

    def __init__(self, registry: Registry, url: str, config: Config):
        super().__init__(registry)
        self.url = url
        self.display_url = display_url(url)
        prefix = config.redis_prefix
        self.key_hosts = prefix + "hosts"
        self.key_reports = prefix + "reports"
        self.key_version = prefix + "version"
        self.key_epoch = prefix + "epoch"
        self.channel_changes = prefix + "changes"
        self.stale_budget = config.stale_budget
        self.sentinel = url.startswith("redis+sentinel://")
        self.server_id = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"
        self.overlay = Overlay()
        self.version = 0  # the last change applied here
        self.epoch: str | None = None
        self.exchange = Exchange(registry, self.server_id, prefix)
        self.counters = {"resyncs": 0, "reseeds": 0, "lost": 0, "writes": 0, "refused": 0}
        self._client: Any = None
        self._listener: Any = None
        self._errors: RedisErrors | None = None
        self._connected = False
        self._ever_connected = False
        self._lost_at: float | None = None
        self._lost_reason = "not connected yet"
        self._broken = False  # set when a call fails: the follower reconnects and re-reads
        self._need_resync = False
        self._seed_tokens: list[str] = []  # epochs this server proposed (its own resync messages)
        self._synced = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._queue: list[tuple[str, list[str], list[str], asyncio.Future]] = []
        self._wake = asyncio.Event()
        # "<farm> <host>" -> the version that wrote the host's change (to re-seed in order).
        self._change_versions: dict[str, int] = {}
        # (farm, host) -> the report whose age is held during an outage and its real receipt
        # time (see _hold_ages).
        self._held: dict[tuple[str, str], tuple[Report, float]] = {}
        self._budget_spent = False
        self._behind_at: int | None = None
        self._unreplicated = False  # the last write was not confirmed by a replica (Sentinel)
        self._closing = False

    @property
    def peer_answers(self) -> dict[str, dict[str, int]]:
        """Answers the other servers gave, per farm and host, since this server started."""
        return self.exchange.peer_answers

    # -- lifecycle --------------------------------------------------------------------------

    def _make_client(self, retries: int) -> Any:
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        options: dict[str, Any] = {
            "socket_connect_timeout": CONNECT_TIMEOUT,
            "socket_timeout": CALL_TIMEOUT,
            "retry": Retry(NoBackoff(), retries),
            "decode_responses": True,
        }
        if self.url.startswith("redis+sentinel://"):
            from redis.asyncio.sentinel import Sentinel

            hosts, service, db, password = parse_sentinel_url(self.url)
            sentinel = Sentinel(
                hosts,
                sentinel_kwargs={
                    "socket_connect_timeout": CONNECT_TIMEOUT,
                    "socket_timeout": CALL_TIMEOUT,
                },
                **options,
            )
            return sentinel.master_for(service, db=db, password=password)
        return redis.from_url(self.url, **options)

    async def start(self) -> None:
        self._errors = RedisErrors()
        # Writes: one immediate retry, as a pooled connection that Redis closed (a restart, a
        # failover) fails on first use; every script may run twice without harm. Other retries
        # are the reconnect loop's, and a write fails fast with 503.
        self._client = self._make_client(retries=1)
        # The subscription: no retry, so that a lost connection is noticed and followed by a
        # full read (a silent re-subscribe would miss the changes made meanwhile).
        self._listener = self._make_client(retries=0)
        loop = asyncio.get_running_loop()
        for coro in (self._follow(), self._write_loop(), self._tick()):
            task = loop.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            await asyncio.wait_for(self._synced.wait(), timeout=3.0)
        except TimeoutError:
            log.warning(
                "shared state %s is unreachable (%s): serving the zone files' hosts and "
                "retrying in the background; writes get 503 until it answers",
                self.display_url,
                self._lost_reason,
            )

    async def close(self) -> None:
        self._closing = True
        pending = set(self._tasks)
        for _ in range(10):
            if not pending:
                break
            # Again each round: redis-py may turn a cancel that races its own timeout into a
            # TimeoutError, which the loops take for a lost connection; _closing ends them then.
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.5)
        for _, _, _, future in self._queue:
            if not future.done():
                future.set_exception(Unavailable("the server is stopping"))
        self._queue.clear()
        for client in (self._client, self._listener):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()

    def healthy(self) -> bool:
        return self._connected and not self._broken

    def status(self) -> dict[str, Any]:
        now = self.registry.clock()
        return {
            "kind": self.name,
            "healthy": self.healthy(),
            "connected": self._connected,
            "url": self.display_url,
            "server_id": self.server_id,
            "version": self.version,
            "unreachable_for": None if self._lost_at is None else round(now - self._lost_at, 3),
            "last_error": None if self.healthy() else self._lost_reason,
            "stale_budget": self.stale_budget,
            **self.counters,
        }

    def zones_loaded(self) -> None:
        self.overlay.apply(self.registry)

    def check_changed(self, farm_name: str, host_name: str) -> None:
        self.exchange.check_changed(farm_name, host_name)

    # -- connection state -------------------------------------------------------------------

    def _set_connected(self) -> None:
        was_lost = self._lost_at is not None and self._ever_connected
        self._connected = True
        self._broken = False
        if was_lost:
            log.warning(
                "shared state %s is back after %.1f s: re-read version %d",
                self.display_url,
                self.registry.clock() - (self._lost_at or 0.0),
                self.version,
            )
        self._lost_at = None
        self._ever_connected = True
        self._synced.set()

    def _set_lost(self, exc: BaseException | str) -> None:
        reason = exc if isinstance(exc, str) else (str(exc) or type(exc).__name__)
        self._lost_reason = reason
        self._broken = True
        if not self._connected:
            return
        self._connected = False
        self._lost_at = self.registry.clock()
        self._budget_spent = False
        self.counters["lost"] += 1
        log.warning(
            "lost shared state %s (%s): answering from the last snapshot; writes get 503; "
            "report ages are held for %.1f s (stale_budget)",
            self.display_url,
            reason,
            self.stale_budget,
        )

    def _unavailable(self) -> Unavailable:
        self.counters["refused"] += 1
        return Unavailable(
            f"the shared state ({self.display_url}) is unreachable ({self._lost_reason}); "
            "the change was not applied, try again"
        )

    # -- following the other servers --------------------------------------------------------

    async def _follow(self) -> None:
        """Subscribe, read everything, then apply each published change; reconnect on errors."""
        assert self._errors is not None
        delay = 0.05
        while not self._closing:
            pubsub = self._listener.pubsub()
            try:
                await pubsub.subscribe(self.channel_changes, *self.exchange.channels)
                if self._ever_connected:
                    # Back after a loss: the idle pooled connections of the write client may
                    # be the ones Redis closed, and a later write or check would fail on them
                    # (one retry is not enough when there are two). Drop them now.
                    await self._client.connection_pool.disconnect(inuse_connections=False)
                # Subscribed first, then read: no change can fall between the two.
                await self._resync()
                self._set_connected()
                delay = 0.05
                while not self._broken and not self._closing:
                    if self._need_resync:
                        await self._resync()
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.25)
                    if message is not None and message.get("type") == "message":
                        self._on_message(message["channel"], message["data"])
                if not self._closing:
                    self._set_lost(self._lost_reason)
            except asyncio.CancelledError:
                raise
            except self._errors.any as exc:
                self._set_lost(exc)
            except Exception as exc:  # a bug must not stop the follower for good
                log.exception("shared state follower failed")
                self._set_lost(exc)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    async def _resync(self) -> None:
        """Read the whole shared state and make the local registry match it."""
        self._need_resync = False
        client = self._client
        epoch = await client.get(self.key_epoch)
        if epoch is None or (self.epoch is not None and epoch != self.epoch):
            # Empty, or emptied and already re-seeded by another server since this one last
            # read it: add this server's view too; the later version of each host wins.
            await self._seed()
        async with client.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.key_hosts)
            pipe.hgetall(self.key_reports)
            pipe.get(self.key_version)
            pipe.get(self.key_epoch)
            hosts, reports, version, epoch = await pipe.execute()
        self._release_held_reports()
        overlay = Overlay()
        self._change_versions = {}
        for key, value in hosts.items():
            farm_name, host_name = split_field(key)
            data = json.loads(value)
            overlay.farms.setdefault(farm_name, {})[host_name] = HostChange.from_json(
                host_name, data
            )
            self._change_versions[key] = int(data.get("v") or 0)
        self.overlay = overlay
        self._rebuild_membership()
        for key, value in reports.items():
            farm_name, host_name = split_field(key)
            farm = self.registry.farms.get(farm_name)
            host = farm.hosts.get(host_name) if farm else None
            if host is None:
                continue
            report = Report.from_json(json.loads(value))
            # Keep a newer local report (accepted here after Redis lost it, or in flight).
            if host.report is None or report.received >= host.report.received:
                host.report = report
        for farm in self.registry.farms.values():
            farm.changed()
        self.version = int(version or 0)
        self.epoch = epoch
        # The first read at start is a load, not a resynchronisation.
        if self._ever_connected:
            self.counters["resyncs"] += 1

    async def _seed(self) -> None:
        """Redis holds no membership: write this server's view of the API changes into it."""
        token = secrets.token_hex(8)
        self._seed_tokens.append(token)
        del self._seed_tokens[:-4]  # only recent ones can still be in flight
        args: list[Any] = [self.channel_changes, token]
        count = 0
        for farm_name, hosts in self.overlay.farms.items():
            for host_name, change in hosts.items():
                key = field(farm_name, host_name)
                version = self._change_versions.get(key, 0)
                args += [key, json.dumps({**change.to_json(), "v": version}), version]
                count += 1
        keys = [self.key_hosts, self.key_version, self.key_epoch]
        seeded, written = await self._client.eval(SEED_SCRIPT, len(keys), *keys, *args)
        if not int(seeded):
            # Another server seeded it between our read and this script: nothing to announce.
            log.debug("shared state %s was seeded by another server", self.display_url)
            if int(written):
                log.info(
                    "shared state %s: added %d of this server's API host changes to it",
                    self.display_url,
                    int(written),
                )
            return
        if self._ever_connected:
            self.counters["reseeds"] += 1
            log.warning(
                "shared state %s came back empty (restarted without persistence?): re-seeded the "
                "membership from this server's last view (%d API host changes, the rest from the "
                "zone files; where servers differ the later change wins); loads return with the "
                "next reports",
                self.display_url,
                count,
            )
        else:
            log.info(
                "shared state %s holds no membership yet: seeded it from this server "
                "(%d API host changes, the rest from the zone files)",
                self.display_url,
                count,
            )

    def _rebuild_membership(self) -> None:
        """Zone-file hosts as the files say, then the overlay on top. Host objects that stay
        keep their reports and answer counts."""
        for farm in self.registry.farms.values():
            specs = {spec.name: spec for spec in farm.spec.hosts}
            api = self.overlay.farms.get(farm.name, {})
            for name in list(farm.hosts):
                change = api.get(name)
                if name not in specs and (change is None or change.spec is None):
                    del farm.hosts[name]
            for name, spec in specs.items():
                host = farm.hosts.get(name)
                if host is None:
                    farm.hosts[name] = Host(spec)
                else:
                    host.spec = spec
            for host in farm.hosts.values():
                host.admin = "enabled"  # the overlay says otherwise where it does
                host.drain_started = None
                host.drain = None
        self.overlay.apply(self.registry)

    def _on_message(self, channel: str, data: str) -> None:
        if channel in self.exchange.channels:
            self.exchange.receive(channel, data)
            return
        version_text, _, rest = data.partition(" ")
        if rest.startswith("resync"):
            # Another server seeded or merged into the shared state; our own seed was followed
            # by a full read already.
            if rest.partition(" ")[2] not in self._seed_tokens:
                self._need_resync = True
            return
        version = int(version_text)
        if version <= self.version:
            return  # already part of a full read
        if version != self.version + 1:
            self._need_resync = True  # a change went missing: re-read everything
            return
        self.version = version
        origin, _, body = rest.partition(" ")
        if origin == self.server_id and body.startswith('{"op":"report"'):
            return  # this server's own report, applied when Redis acknowledged it
        change = json.loads(body)
        farm_name, host_name = split_field(change["key"])
        if change["op"] == "report":
            self._apply_report(farm_name, host_name, Report.from_json(change["report"]))
        elif change["op"] == "host":
            # Applied even when it is this server's own change: in version order, so that two
            # servers changing one host end with what Redis holds.
            self._apply_host_change(farm_name, host_name, change["change"])

    def _apply_report(self, farm_name: str, host_name: str, report: Report) -> None:
        farm = self.registry.farms.get(farm_name)
        host = farm.hosts.get(host_name) if farm else None
        if farm is None or host is None:
            return
        if apply_report(host, report):
            farm.changed()

    def _apply_host_change(
        self, farm_name: str, host_name: str, data: dict[str, Any]
    ) -> Host | None:
        change = HostChange.from_json(host_name, data)
        self.overlay.farms.setdefault(farm_name, {})[host_name] = change
        self._change_versions[field(farm_name, host_name)] = int(data.get("v") or 0)
        farm = self.registry.farms.get(farm_name)
        if farm is None:
            return None  # the farm is not in this server's zone files (yet)
        if change.removed:
            # A zone-file host stays away while its entry in the file is the one removed; an
            # API host (no entry) is simply gone.
            entry = _zone_entry(self.registry, farm_name, host_name)
            if entry is None or spec_digest(entry) == change.removed_entry:
                self.registry.remove_host(farm, host_name)
            return None
        if change.spec is not None:
            self.registry.put_host(farm, change.spec)
        host = farm.hosts.get(host_name)
        if host is not None:
            host.admin = change.admin or "enabled"
            host.drain_started = change.admin_since if change.admin == "draining" else None
            host.drain = (change.drain or DrainOptions()) if change.admin == "draining" else None
            farm.changed()
        return host

    # -- writes -----------------------------------------------------------------------------

    async def _call(self, script: str, keys: list[str], args: list[str]) -> list[Any]:
        return await self._finish(self._submit(script, keys, args))

    def _submit(self, script: str, keys: list[str], args: list[str]) -> asyncio.Future:
        """Queue a write for the next pipeline; ``_finish`` awaits its result."""
        if not self.healthy():
            raise self._unavailable()
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.append((script, keys, args, future))
        self._wake.set()
        return future

    async def _finish(self, future: asyncio.Future) -> list[Any]:
        result = await future
        if int(result[0]) < 0:
            # Redis lost its data since this server last read it: re-seed before writing.
            self._need_resync = True
            self._broken = True
            self._lost_reason = "Redis came back empty; re-seeding the membership"
            raise self._unavailable()
        self.counters["writes"] += 1
        return result

    async def _write_loop(self) -> None:
        """Send the queued writes in pipelines: one round trip for many concurrent writes."""
        assert self._errors is not None
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = self._queue[:WRITE_BATCH]
                del self._queue[:WRITE_BATCH]
                try:
                    async with self._client.pipeline(transaction=False) as pipe:
                        for script, keys, args, _ in batch:
                            pipe.eval(script, len(keys), *keys, *args)
                        if self.sentinel:
                            # Acknowledge only what a replica has too (or after WAIT_MS), so a
                            # failover right after the reply does not lose the change.
                            pipe.execute_command("WAIT", 1, WAIT_MS)
                        results = await pipe.execute(raise_on_error=False)
                    if self.sentinel:
                        replicas = results.pop()
                        if replicas == 0 and not self._unreplicated:
                            log.warning(
                                "shared state %s: no replica confirmed a write within %d ms; "
                                "a failover now could lose it (see docs/cluster.md)",
                                self.display_url,
                                WAIT_MS,
                            )
                        self._unreplicated = replicas == 0
                except self._errors.any as exc:
                    self._set_lost(exc)
                    for *_, future in batch:
                        if not future.done():
                            future.set_exception(self._unavailable())
                    continue
                for (*_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        # Redis refused this one (e.g. min-replicas-to-write): it changed nothing.
                        self.counters["refused"] += 1
                        future.set_exception(
                            Unavailable(
                                f"the shared state ({self.display_url}) refused the change "
                                f"({result}); the change was not applied, try again"
                            )
                        )
                    else:
                        future.set_result(result)

    async def report(self, farm: Farm, host: Host, report: Report) -> bool:
        return (await self.reports([(farm, host, report)]))[0]

    def _submit_report(self, farm: Farm, host: Host, report: Report) -> asyncio.Future | None:
        """Queue a report's write; None when it is older than what is known."""
        previous = host.report
        if not apply_report(host, report):
            return None
        host.report = previous  # applied for real once Redis has it
        return self._submit(
            REPORT_SCRIPT,
            [self.key_reports, self.key_version, self.key_epoch],
            [
                field(farm.name, host.name),
                json.dumps(report.to_json()),
                self.channel_changes,
                self.server_id,
            ],
        )

    async def reports(self, items: Sequence[tuple[Farm, Host, Report]]) -> list[bool]:
        # The whole batch goes into the write queue before any reply is awaited, so it reaches
        # Redis in one pipeline instead of one round trip per report. A host named twice waits
        # for its first report, so Redis and this server keep the same (the newer) one.
        results: list[bool] = [False] * len(items)
        queued: list[tuple[int, asyncio.Future]] = []
        repeated: list[int] = []
        named: set[tuple[str, str]] = set()
        for i, (farm, host, report) in enumerate(items):
            if (farm.name, host.name) in named:
                repeated.append(i)
                continue
            named.add((farm.name, host.name))
            future = self._submit_report(farm, host, report)
            if future is not None:
                queued.append((i, future))
        failed: Unavailable | None = None
        for i, future in queued:  # every future is awaited, even after a failure
            try:
                await self._finish(future)
            except Unavailable as exc:
                failed = failed or exc
                continue
            farm, host, report = items[i]
            self._apply_report(farm.name, host.name, report)
            results[i] = True
        if failed is not None:
            raise failed
        for i in repeated:
            results[i] = await self.report(*items[i])
        return results

    async def _change_host(self, farm: Farm, host_name: str, patch: dict[str, Any]) -> Host | None:
        version, merged = await self._call(
            HOST_SCRIPT,
            [self.key_hosts, self.key_version, self.key_epoch],
            [field(farm.name, host_name), json.dumps(patch), self.channel_changes, self.server_id],
        )
        if int(version) <= self.version:
            # The published change (and maybe later ones from other servers) got here first:
            # applying this reply now would undo the later ones.
            return farm.hosts.get(host_name)
        return self._apply_host_change(farm.name, host_name, json.loads(merged))

    async def put_host(self, farm: Farm, spec: HostSpec) -> Host:
        host = await self._change_host(
            farm, spec.name, {"spec": spec.to_json(), "removed": False, "removed_entry": None}
        )
        assert host is not None
        return host

    async def remove_host(self, farm: Farm, host_name: str) -> None:
        entry = _zone_entry(self.registry, farm.name, host_name)
        patch = {
            "spec": None,
            "admin": None,
            "admin_since": None,
            "drain": None,
            "removed": True,
            "removed_entry": spec_digest(entry) if entry is not None else None,
        }
        await self._change_host(farm, host_name, patch)

    async def set_admin(
        self, farm: Farm, host: Host, admin: str, when: float, drain: DrainOptions | None = None
    ) -> None:
        # Applied locally from the acknowledged change (_apply_host_change), like every server.
        drain = drain or DrainOptions()
        patch = {
            "admin": None if admin == "enabled" else admin,
            "admin_since": when,
            "drain": drain.to_json() if admin == "draining" else None,
        }
        await self._change_host(farm, host.name, patch)

    # -- the clock: the exchange, the connection check, the held ages ----------------------

    async def _tick(self) -> None:
        assert self._errors is not None
        last_ping = last_expiry = 0.0
        while not self._closing:
            await asyncio.sleep(EXCHANGE_INTERVAL)
            now = self.registry.clock()
            if now - last_expiry >= PING_INTERVAL:
                last_expiry = now
                self.exchange.expire_peer_checks(now)
            if not self.healthy():
                self._hold_ages(now)
                self.exchange.drop_accounting()
                continue
            try:
                await self.exchange.send(self._client.publish, now)
                if time.monotonic() - last_ping >= PING_INTERVAL:
                    last_ping = time.monotonic()
                    await self._check_in_step()
            except self._errors.any as exc:
                self._set_lost(exc)

    async def _check_in_step(self) -> None:
        """The safety net of the subscription: Redis restarted (another epoch, or none) or a
        change was published and never arrived. Either way, read everything again."""
        epoch, version = await self._client.mget(self.key_epoch, self.key_version)
        if epoch != self.epoch:
            self._need_resync = True
        # A change in flight is normal; one still missing at the next check is not.
        if self._behind_at is not None and self.version < self._behind_at:
            self._need_resync = True
        behind = version is not None and int(version) > self.version
        self._behind_at = int(version) if behind else None

    def _hold_ages(self, now: float) -> None:
        """While Redis is away, report ages stand still for ``stale_budget`` seconds.

        A failover of a few seconds should not turn every host stale; an outage longer than the
        budget should, so that nothing is answered from old loads as if they were current. The
        reports' receipt times are moved in place (the same objects, so the farm's accounting
        does not take them for new reports) and put back when Redis returns or the budget is
        spent.
        """
        if self._lost_at is None or not self._ever_connected or self._budget_spent:
            return
        elapsed = now - self._lost_at
        spent = elapsed >= self.stale_budget
        for farm in self.registry.farms.values():
            for host in farm.hosts.values():
                report = host.report
                if report is None:
                    continue
                key = (farm.name, host.name)
                held = self._held.get(key)
                if held is None or held[0] is not report:
                    if held is not None:
                        held[0].received = held[1]
                    held = self._held[key] = (report, report.received)
                report.received = held[1] if spent else held[1] + elapsed
            farm.changed()
        if spent:
            self._budget_spent = True
            self._held.clear()
            log.warning(
                "shared state %s unreachable for %.1f s (stale_budget): reports count with "
                "their real ages now",
                self.display_url,
                elapsed,
            )

    def _release_held_reports(self) -> None:
        for report, received in self._held.values():
            report.received = received
        self._held.clear()
