"""Handing the server's advice ("shed N connections") to the application.

The agent never closes connections itself: only the application knows which ones it can move
(idle ones, or those that reconnect cheaply). The hook is a command run with the number, or a
JSON POST to a local URL. It is off unless configured, runs at most once per ``min_interval``,
and never twice at the same time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import aiohttp

from lbdns.agent.config import Advice
from lbdns.agent.custom import MetricError, run_command
from lbdns.agent.ratelog import RateLimitedLog

log = logging.getLogger("lbdns.agent")


class AdviceHook:
    def __init__(
        self,
        advice: Advice | None,
        farm: str,
        host: str,
        session: aiohttp.ClientSession,
        ratelog: RateLimitedLog,
    ):
        self.advice = advice
        self.farm = farm
        self.host = host
        self.session = session
        self.ratelog = ratelog
        self._last = float("-inf")
        self._task: asyncio.Task | None = None
        self.handed = 0  # hand-overs started

    def offer(self, shed: int, server: str) -> None:
        if self.advice is None:
            self.ratelog.log(
                logging.INFO,
                "advice off",
                "%s advises shedding %d connection(s); no advice hook is configured",
                server,
                shed,
            )
            return
        now = time.monotonic()
        if self._task is not None and not self._task.done():
            return
        if now - self._last < self.advice.min_interval:
            return
        self._last = now
        self.handed += 1
        log.info(
            "%s advises shedding %d connection(s); handing it to the application", server, shed
        )
        self._task = asyncio.create_task(self._hand(shed))

    async def _hand(self, shed: int) -> None:
        advice = self.advice
        assert advice is not None
        try:
            if advice.command is not None:
                argv = tuple(arg.replace("{n}", str(shed)) for arg in advice.command)
                if argv[:2] == ("/bin/sh", "-c"):
                    # A shell line gets the number as $1 too, so it needs no quoting.
                    argv = (*argv, "lbdns-advice", str(shed))
                await run_command(argv, advice.timeout)
            else:
                body = json.dumps({"shed": shed, "farm": self.farm, "host": self.host})
                timeout = aiohttp.ClientTimeout(total=advice.timeout)
                async with self.session.post(
                    advice.url,
                    data=body,
                    headers={"Content-Type": "application/json"},
                    timeout=timeout,
                ) as response:
                    await response.read()
                    if response.status >= 400:
                        raise MetricError(f"{advice.url}: status {response.status}")
        except (MetricError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("advice hook failed: %s", exc or type(exc).__name__)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
