"""``lbdns agent``: measure this host every interval and push the report to the lbdns servers.

The loop is fixed-rate: every ``interval`` it measures (connections, CPU, load, memory, then the
custom metrics and health checks concurrently, each bounded by its timeout), stamps a sequence
number and hands the report to every server link. Sending happens in the links, so the loop
never waits for a server.

Sequence numbers are milliseconds since the epoch (at least one more than the previous), so an
agent that restarts continues above the numbers it sent before and is never taken for old, as
long as the host's clock does not step back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from lbdns.agent.config import AgentConfig
from lbdns.agent.custom import MetricError, collect
from lbdns.agent.health import Health, Probes
from lbdns.agent.measure import CpuMeter, connection_counter, load_average, memory_used
from lbdns.agent.push import PERMANENT, PushError, ServerLink
from lbdns.agent.ratelog import RateLimitedLog
from lbdns.agent.shed import AdviceHook
from lbdns.errors import LbdnsError
from lbdns.sdnotify import Notifier

log = logging.getLogger("lbdns.agent")


class Agent:
    def __init__(self, config: AgentConfig, push: bool = True):
        self.config = config
        self.push = push
        self.counter = (
            connection_counter(config.ports, config.connections_method, config.connections_recount)
            if config.ports
            else None
        )
        if self.counter is not None:
            log.info(
                "counting established connections on port(s) %s with %s",
                ", ".join(map(str, config.ports)),
                self.counter.name,
            )
        self.cpu = CpuMeter(config.cpu_window)
        registration = config.register
        own = (*registration.a, *registration.aaaa) if registration is not None else ()
        self.probes = Probes(config.ports, own)
        self._accepted = 0  # the last ``accepted`` reported: it never goes down
        self.health = Health(config.checks, config.fail_after, config.recover_after, self.probes)
        self.ratelog = RateLimitedLog(log, config.log_every)
        self._seq = 0
        self._stop = asyncio.Event()
        self._signals = 0
        self.reload_to: AgentConfig | None = None  # set by request_reload: run again with it
        self.links: list[ServerLink] = []
        self.session: aiohttp.ClientSession | None = None  # to the lbdns servers
        self.local: aiohttp.ClientSession | None = None  # to the application (checks, metrics)
        self.advice: AdviceHook | None = None
        # systemd's NOTIFY_SOCKET (Type=notify): READY=1 once running, and a STATUS= line that
        # `systemctl status lbdns-agent` shows, naming any server that refuses the reports.
        self.notifier = Notifier()
        self._status = ""

    # -- measuring -------------------------------------------------------------------------------

    def next_seq(self) -> int:
        self._seq = max(self._seq + 1, int(time.time() * 1000))
        return self._seq

    async def measure(self) -> dict[str, Any]:
        """One report: the host's metrics, the custom ones and the health verdict."""
        assert self.local is not None
        metrics: dict[str, float] = {}
        try:
            metrics["cpu"] = round(self.cpu.sample(), 4)
            metrics["load1"] = load_average()
            metrics["memory"] = round(memory_used(), 4)
        except (OSError, ValueError, IndexError) as exc:
            self.ratelog.log(logging.ERROR, "host", "reading /proc failed: %s", exc)
        sources = self.config.metrics
        results = await asyncio.gather(
            self.health.run(self.local),
            *(collect(source, self.local) for source in sources),
            return_exceptions=True,
        )
        changed, custom = results[0], results[1:]
        if isinstance(changed, BaseException):
            raise changed
        if self.counter is not None:
            # After the checks: their own connections have closed and are not counted.
            try:
                metrics["connections"] = self.counter.count()
                accepted = getattr(self.counter, "accepted", None)
                if accepted is not None:  # the eBPF counter counts arrivals too
                    # Without the agent's own probes; a probe the counter has not seen yet
                    # must not make the counter go down.
                    self._accepted = max(self._accepted, accepted() - self.probes.opened)
                    metrics["accepted"] = self._accepted
            except OSError as exc:
                self.ratelog.log(
                    logging.ERROR, "connections", "counting connections failed: %s", exc
                )
        for state in changed:
            if state.healthy:
                log.info("check %s passes again", state.check.describe())
            else:
                log.warning(
                    "check %s failed %d time(s) in a row: %s; reporting unhealthy",
                    state.check.describe(),
                    state.failures,
                    state.last_error,
                )
        for source, result in zip(sources, custom, strict=True):
            label = source.url or " ".join(source.command or ())
            if isinstance(result, MetricError):
                self.ratelog.log(logging.WARNING, f"metric {label}", "custom metric: %s", result)
            elif isinstance(result, BaseException):
                raise result
            else:
                for name, value in result.items():
                    if name in metrics:
                        continue  # the first source to name a metric wins
                    if len(metrics) >= 32:
                        self.ratelog.log(
                            logging.WARNING, "too many", "more than 32 metrics; %s left out", name
                        )
                        break
                    metrics[name] = value
        return {
            "farm": self.config.farm,
            "host": self.config.host,
            "seq": self.next_seq(),
            "interval": self.config.interval,
            "healthy": self.health.healthy,
            "metrics": metrics,
        }

    # -- running ---------------------------------------------------------------------------------

    async def open(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit_per_host=4), auto_decompress=False
        )
        # Health checks open a fresh connection each time: a kept-alive connection would hide
        # an application that no longer accepts new ones.
        self.local = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True),
            trace_configs=[self.probes.trace()],
        )
        self.advice = AdviceHook(
            self.config.advice, self.config.farm, self.config.host, self.local, self.ratelog
        )
        if self.push:
            for server in self.config.servers:
                link = ServerLink(
                    server, self.config, self.session, self.ratelog, self.advice.offer
                )
                link.start()
                self.links.append(link)

    async def close(self) -> None:
        for link in self.links:
            await link.stop()
        if self.advice is not None:
            await self.advice.close()
        for session in (self.session, self.local):
            if session is not None:
                await session.close()
        if self.counter is not None:
            self.counter.close()
        self.notifier.close()

    def _update_status(self) -> None:
        refused = [
            f"{link.server.url} refuses: {link.refusal}" for link in self.links if link.refusal
        ]
        where = f"{len(self.links)} server(s)" if self.push else "nowhere (dry run)"
        status = (
            "; ".join(refused) or f"reporting {self.config.host} in {self.config.farm} to {where}"
        )
        if status != self._status:
            self._status = status
            self.notifier.send(status=status)

    def request_stop(self) -> None:
        self._signals += 1
        if self._signals == 1:
            self.notifier.stopping()
            if self._drains():
                log.info("stopping (draining first)")
            elif self.push and self.config.register is None:
                # Only a registered host is drained and removed on stop: a host from a zone
                # file stays as the zone says, and its reports simply go stale.
                log.info(
                    "stopping without a drain: the config has no register: section, so the "
                    "servers keep %s in %s and it turns stale after stale_after x interval; "
                    "drain it first with `lbdns hosts drain %s %s --wait` to move clients off",
                    self.config.host,
                    self.config.farm,
                    self.config.farm,
                    self.config.host,
                )
            else:
                log.info("stopping")
        else:
            log.warning("second stop signal: exiting without waiting for the drain")
        self._stop.set()

    def request_reload(self, config: AgentConfig) -> None:
        """Stop measuring without draining, so that the caller runs an agent with ``config``
        (the newest, when several reloads come before it does)."""
        if self._signals:
            return  # already stopping: the stop wins
        self.reload_to = config
        self._stop.set()

    def _drains(self) -> bool:
        return self.push and self.config.register is not None and self.reload_to is None

    async def run(self, printer=None) -> None:
        """Measure and push until a stop signal; then drain and deregister if registered."""
        await self.open()
        try:
            log.info(
                "agent for %s in %s: every %g s to %s",
                self.config.host,
                self.config.farm,
                self.config.interval,
                ", ".join(s.url for s in self.config.servers) if self.push else "nowhere (dry run)",
            )
            self._update_status()
            self.notifier.send(ready=1)
            await self._loop(self._stop, printer)
            if self._drains() and self._signals == 1:
                await self._drain(printer)
        finally:
            await self.close()

    async def _loop(self, until: asyncio.Event, printer=None) -> None:
        interval = self.config.interval
        start = time.monotonic()
        tick = 0
        while not until.is_set():
            try:
                report = await self.measure()
            except Exception:  # noqa: BLE001 - one bad measurement must not end the agent
                report = None
                self.ratelog.log(logging.ERROR, "measure", "measurement failed", exc_info=True)
            if report is not None:
                for link in self.links:
                    link.offer(report)
                if printer is not None:
                    printer(report)
            self._update_status()
            # Fixed rate: the next slot after now, skipping slots a slow measurement overran.
            tick = max(tick + 1, int((time.monotonic() - start) / interval) + 1)
            delay = start + tick * interval - time.monotonic()
            try:
                await asyncio.wait_for(until.wait(), max(0.0, delay))
            except TimeoutError:
                pass

    async def _drain(self, printer=None) -> None:
        registration = self.config.register
        assert registration is not None
        deadline = time.monotonic() + registration.drain_timeout
        done = asyncio.Event()
        # A second signal ends the wait at once.
        self._stop = asyncio.Event()
        reporting = asyncio.create_task(self._loop(done, printer))
        waiting = asyncio.gather(*(link.drain_and_deregister(deadline) for link in self.links))
        stop_wait = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({waiting, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            done.set()
            stop_wait.cancel()
            if not waiting.done():
                waiting.cancel()
            await asyncio.gather(reporting, waiting, return_exceptions=True)
        if waiting.cancelled():
            return
        removed = waiting.result()
        log.info("deregistered from %d of %d server(s)", sum(1 for r in removed if r), len(removed))


def once(config: AgentConfig) -> dict[str, Any]:
    """Measure once (CPU over a short sample) and return the report, for ``--once``."""

    async def run() -> dict[str, Any]:
        agent = Agent(config, push=False)
        agent.cpu.window = 0.0  # the sample below, not a moving average
        agent.cpu.sample()
        await asyncio.sleep(0.2)
        await agent.open()
        try:
            return await agent.measure()
        finally:
            await agent.close()

    return asyncio.run(run())


async def check_online(config: AgentConfig, out=sys.stdout) -> int:
    """Ask every server whether it takes this agent's reports: one real report (measured as
    ``--once`` does) per server, and with ``register:`` a read of the farm with the register
    token. Prints one line per server and question; returns the number of refusals."""
    agent = Agent(config, push=False)
    await agent.open()
    try:
        report = await agent.measure()
        assert agent.session is not None
        refusals = 0
        for server in config.servers:
            link = ServerLink(server, config, agent.session, agent.ratelog)
            try:
                reply = await link.request("POST", "/v1/report", report, server.token)
            except PushError as exc:
                if exc.status == 404 and config.register is not None:
                    print(
                        f"note: {server.url}: {exc} (the agent registers the host when it starts)",
                        file=out,
                    )
                else:
                    refusals += 1
                    hint = PERMANENT.get(exc.status or 0, "is the server running and reachable?")
                    print(f"error: {server.url}: report refused: {exc}: {hint}", file=out)
            else:
                state = reply.get("state") if isinstance(reply, dict) else None
                print(
                    f"ok: {server.url} takes the reports of {config.host} in {config.farm} "
                    f"(it sees the host as {state})",
                    file=out,
                )
            if config.register is not None:
                farm_url = f"{server.url}/v1/farms/{quote(config.farm, safe='')}"
                try:
                    await link.request("GET", "", None, server.register_token, farm_url)
                except PushError as exc:
                    refusals += 1
                    print(f"error: {server.url}: register token refused: {exc}", file=out)
                else:
                    print(f"ok: {server.url} takes the register token for {config.farm}", file=out)
        return refusals
    finally:
        await agent.close()


def register_command(commands) -> None:
    p = commands.add_parser(
        "agent", help="measure this host and report its load to the lbdns servers"
    )
    p.add_argument("-c", "--config", type=Path, required=True, help="agent config file (YAML)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="print one report as JSON and exit")
    mode.add_argument(
        "--dry-run",
        dest="dry_run",
        action="store_true",
        help="measure every interval and print the reports, without sending them",
    )
    mode.add_argument("--check", action="store_true", help="validate the config file and exit")
    p.add_argument(
        "--online",
        action="store_true",
        help="with --check: also ask every server whether it takes this host's reports "
        "(sends one real report) and, with register:, the register token",
    )
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from lbdns import logs
    from lbdns.agent import config as config_module

    config = config_module.load(args.config, need_servers=not (args.once or args.dry_run))
    logs.setup(config.log_format, config.log_level)
    if args.online and not args.check:
        raise LbdnsError("--online goes with --check")
    if args.check:
        print(f"ok: {args.config}: {config.host} in {config.farm}, {len(config.servers)} server(s)")
        if args.online:
            return 1 if asyncio.run(check_online(config)) else 0
        return 0
    if args.once:
        print(json.dumps(once(config), indent=2))
        return 0

    def printer(report: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(report) + "\n")
        sys.stdout.flush()

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def reload() -> None:
            # SIGHUP reloads the agent running now (``agent`` below, read at call time). The new
            # config must be valid and name the same host, else nothing changes.
            try:
                new = config_module.load(args.config, need_servers=not args.dry_run)
            except LbdnsError as exc:
                log.error("reload of %s failed; the running config stays:\n%s", args.config, exc)
                return
            if (new.farm, new.host) != (agent.config.farm, agent.config.host):
                log.error(
                    "reload of %s: farm and host cannot change while running (%s in %s); "
                    "restart the agent for that. The running config stays",
                    args.config,
                    new.host,
                    new.farm,
                )
                return
            logs.setup(new.log_format, new.log_level)
            log.info("reloading %s", args.config)
            agent.request_reload(new)

        current = config
        while True:
            agent = Agent(current, push=not args.dry_run)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, agent.request_stop)
            loop.add_signal_handler(signal.SIGHUP, reload)
            await agent.run(printer if args.dry_run else None)
            if agent.reload_to is None:
                return
            current = agent.reload_to

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(main())
    else:
        uvloop.run(main())
    return 0
