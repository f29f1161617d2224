"""Pushing reports to the lbdns servers, registration, and the drain on shutdown.

Each server has its own ``ServerLink``: a task with a one-report slot. The measuring loop puts
the newest report in every slot and moves on; a link sends whatever is newest when it is free.
So a server that is slow or away costs its own link retries with backoff, and never delays the
reports to the others or the measurements; memory stays bounded because an unsent report is
replaced, not queued (only the latest load matters).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp

from lbdns.agent.config import AgentConfig, Server
from lbdns.agent.ratelog import RateLimitedLog

log = logging.getLogger("lbdns.agent")

AdviceCallback = Callable[[int, str], None]

# Answers that retrying will not change until someone fixes the token, the farm or the host:
# logged at ERROR each time the answer changes (and retried, so that the fix is picked up).
PERMANENT = {
    401: "the server does not know this token (token, token_file or token_env)",
    403: "the token may not report for this farm or host (its farms: or host: scope)",
    404: "the server does not serve this farm or host (farm:, host:, or the zone file)",
}


class PushError(Exception):
    """One request to a server failed; the message says how (status and the server's error)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def backoff_delay(failures: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Delay before retry number ``failures`` (1, 2, ...): doubling from ``initial`` up to
    ``maximum``, with half of it random so agents that lost the same server spread out."""
    ceiling = min(maximum, initial * 2 ** min(failures - 1, 30))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


class ServerLink:
    """Reports to one server, with its own retries, registration and drain."""

    def __init__(
        self,
        server: Server,
        config: AgentConfig,
        session: aiohttp.ClientSession,
        ratelog: RateLimitedLog,
        on_advice: AdviceCallback | None = None,
        rng: random.Random | None = None,
    ):
        self.server = server
        self.config = config
        self.session = session
        self.ratelog = ratelog
        self.on_advice = on_advice
        self.rng = rng or random.Random()
        self._latest: dict[str, Any] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self.failures = 0
        self.sent = 0
        self.last_ok: float | None = None
        self.state: str | None = None  # the host's state as this server last told it
        self.refusal: str | None = None  # the permanent error this server last answered
        self.registered = config.register is None  # nothing to do without a registration
        self._register_at = 0.0  # monotonic time of the next registration attempt
        self._register_failures = 0
        farm, host = quote(config.farm, safe=""), quote(config.host, safe="")
        self._host_url = f"{server.url}/v1/farms/{farm}/hosts/{host}"
        self._task: asyncio.Task | None = None

    # -- the report slot -----------------------------------------------------------------------

    def offer(self, report: dict[str, Any]) -> None:
        """Make ``report`` the next one to send (replacing any not sent yet)."""
        self._latest = report
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"push {self.server.url}")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            report = self._latest
            if report is None:
                continue
            try:
                if not self.registered and time.monotonic() >= self._register_at:
                    await self._try_register()
                try:
                    reply = await self.request("POST", "/v1/report", report, self.server.token)
                except PushError as exc:
                    await self._failed(exc)
                    continue
                self._succeeded(reply)
            except Exception as exc:  # noqa: BLE001 - a bug here must not end this server's reports
                log.exception("sending to %s failed unexpectedly", self.server.url)
                await self._failed(PushError(f"internal error: {exc!r}"))

    async def _failed(self, exc: PushError) -> None:
        self.failures += 1
        if exc.status == 404 and self.config.register is not None:
            # The server forgot the host (a restart without a data dir): register again.
            self.registered = False
            self._register_at = 0.0
        elif exc.status in PERMANENT:
            refusal = str(exc)
            if refusal != self.refusal:
                self.refusal = refusal
                log.error(
                    "%s refuses the reports of %s in %s: %s: %s; retrying with backoff "
                    "(lbdns agent --check --online asks every server)",
                    self.server.url,
                    self.config.host,
                    self.config.farm,
                    refusal,
                    PERMANENT[exc.status],
                )
        delay = backoff_delay(
            self.failures, self.config.backoff_initial, self.config.backoff_max, self.rng
        )
        self.ratelog.log(
            logging.WARNING,
            f"push {self.server.url}",
            "report to %s failed (%s); %d failure(s) in a row, next try in %.1f s",
            self.server.url,
            exc,
            self.failures,
            delay,
        )
        await asyncio.sleep(delay)
        # Retry with whatever is newest by then (the same report if nothing newer came).
        self._wake.set()

    def _succeeded(self, reply: Any) -> None:
        if self.refusal is not None:
            log.info("%s accepts the reports again (it refused: %s)", self.server.url, self.refusal)
            self.refusal = None
        if self.failures:
            log.info(
                "reports to %s go through again after %d failure(s)", self.server.url, self.failures
            )
            self.ratelog.forget(f"push {self.server.url}")
        self.failures = 0
        self.sent += 1
        self.last_ok = time.time()
        if not isinstance(reply, dict):
            return
        state = reply.get("state")
        if state != self.state:
            if self.state is not None or state != "up":
                log.info("%s sees this host as %s", self.server.url, state)
            self.state = state
        if reply.get("ignored"):
            self.ratelog.log(
                logging.WARNING, f"ignored {self.server.url}", "%s: %s", self.server.url,
                reply["ignored"],
            )  # fmt: skip
        advice = reply.get("advice")
        if isinstance(advice, dict) and self.on_advice is not None:
            shed = advice.get("shed")
            if isinstance(shed, (int, float)) and not isinstance(shed, bool) and shed >= 1:
                self.on_advice(int(shed), self.server.url)

    # -- HTTP ------------------------------------------------------------------------------

    async def request(
        self, method: str, path: str, body: Any = None, token: str | None = None, url: str = ""
    ) -> Any:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body, separators=(",", ":"))
        timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        target = url or f"{self.server.url}{path}"
        try:
            async with self.session.request(
                method, target, data=data, headers=headers, timeout=timeout
            ) as response:
                raw = await response.read()
                status = response.status
        except TimeoutError:
            raise PushError(f"no answer within {self.config.timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise PushError(str(exc) or type(exc).__name__) from None
        try:
            reply = json.loads(raw) if raw else None
        except ValueError:
            reply = None
        if status >= 400:
            message = f"HTTP {status}"
            if isinstance(reply, dict) and reply.get("error"):
                message += f": {reply['error']}"
            raise PushError(message, status)
        return reply

    # -- registration and drain ----------------------------------------------------------------

    async def _try_register(self) -> None:
        registration = self.config.register
        assert registration is not None
        token = self.server.register_token
        try:
            reply = await self.request("PUT", "", registration.body(), token, self._host_url)
            if registration.enable and isinstance(reply, dict) and reply.get("admin") == "draining":
                # Left draining by an earlier shutdown whose drain did not finish.
                await self.request("POST", "", {}, token, f"{self._host_url}/enable")
        except PushError as exc:
            self._register_failures += 1
            delay = backoff_delay(
                self._register_failures,
                self.config.backoff_initial,
                self.config.backoff_max,
                self.rng,
            )
            self._register_at = time.monotonic() + delay
            self.ratelog.log(
                logging.WARNING,
                f"register {self.server.url}",
                "registering %s with %s failed (%s); next try in %.1f s",
                self.config.host,
                self.server.url,
                exc,
                delay,
            )
            return
        self._register_failures = 0
        self.ratelog.forget(f"register {self.server.url}")
        self.registered = True
        log.info("registered %s in %s with %s", self.config.host, self.config.farm, self.server.url)

    async def drain_and_deregister(self, deadline: float) -> bool:
        """Drain the host on this server, wait until drained (or ``deadline``, monotonic), then
        remove it. Reports keep flowing meanwhile so the server sees connections fall. Returns
        True when the host was removed."""
        registration = self.config.register
        if registration is None or not self.registered:
            return False
        token = self.server.register_token
        options: dict[str, Any] = {}
        if registration.drain_grace is not None:
            options["grace"] = registration.drain_grace
        if registration.drain_threshold is not None:
            options["threshold"] = registration.drain_threshold
        poll = min(1.0, max(0.1, self.config.interval))
        drained = False
        asked = False
        while time.monotonic() < deadline:
            try:
                if not asked:
                    await self.request("POST", "", options, token, f"{self._host_url}/drain")
                    asked = True
                    log.info("draining %s on %s", self.config.host, self.server.url)
                reply = await self.request("GET", "", None, token, self._host_url)
            except PushError as exc:
                if exc.status == 404:
                    log.info("%s no longer knows %s", self.server.url, self.config.host)
                    return True
                self.ratelog.log(
                    logging.WARNING,
                    f"drain {self.server.url}",
                    "drain on %s: %s",
                    self.server.url,
                    exc,
                )
                await asyncio.sleep(min(poll, max(0.0, deadline - time.monotonic())))
                continue
            if isinstance(reply, dict) and reply.get("state") == "drained":
                drained = True
                break
            await asyncio.sleep(min(poll, max(0.0, deadline - time.monotonic())))
        if not drained and not registration.force_remove:
            log.warning(
                "%s did not finish draining on %s in time; left draining (force_remove is off)",
                self.config.host,
                self.server.url,
            )
            return False
        query = "" if drained else "?force=true"
        try:
            await self.request("DELETE", "", None, token, f"{self._host_url}{query}")
        except PushError as exc:
            if exc.status != 404:
                log.warning(
                    "removing %s from %s failed: %s", self.config.host, self.server.url, exc
                )
                return False
        log.info(
            "removed %s from %s%s",
            self.config.host,
            self.server.url,
            "" if drained else " before it finished draining",
        )
        return True
