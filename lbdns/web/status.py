"""The status page at ``/`` and its data at ``GET /v1/status``.

The page (``static/status.html``, ``.js``, ``.css``; plain files, no build step) polls
``/v1/status`` every second and draws every zone, farm and host. A background task samples each
farm once a second into a small ring buffer (``HISTORY_SECONDS`` samples): each host's load score
and the answers that named it in that second, which the page draws as a chart per farm.

The data is read-only and needs the ``read`` role when tokens are configured (the page takes the
token from ``#token=...`` in its address or asks for it). With no tokens, loopback clients only,
as for the rest of the API; the page itself is then loopback-only too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from lbdns.balance.capacity import balance, farm_load
from lbdns.balance.drain import drain_status
from lbdns.balance.explain import check_brief
from lbdns.balance.farm import Farm
from lbdns.balance.host import DOWN, STALE, UP
from lbdns.dnsserver.wire import rcode_name
from lbdns.errors import RequestError
from lbdns.server import Server
from lbdns.web.base import CONFIG, SERVER, authenticate, json_response

log = logging.getLogger("lbdns.http")

STATIC = Path(__file__).parent / "static"
HISTORY_SECONDS = 300  # samples kept per farm (one a second)
SHARE_WINDOW = 60  # seconds of samples behind a host's "share of recent answers"
PAGE_FILES = {"status.js": "text/javascript", "status.css": "text/css"}

routes = web.RouteTableDef()


@dataclass
class FarmHistory:
    """One farm's samples, oldest first: time, each host's score and answers in that second."""

    times: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY_SECONDS))
    load: dict[str, deque[float | None]] = field(default_factory=dict)
    answers: dict[str, deque[int]] = field(default_factory=dict)
    last_total: dict[str, int] = field(default_factory=dict)  # Host.answers at the last sample


class History:
    """Samples of every farm; also counts answers that were served from stale data."""

    def __init__(self, server: Server, clock: Callable[[], float] | None = None):
        self.server = server
        self.clock = clock or server.registry.clock  # the clock the farms' report ages use
        self.farms: dict[str, FarmHistory] = {}
        # Answers per farm that named a stale host, or were given while the shared store was
        # unhealthy, counted from each second's answer deltas.
        self.stale_answers: dict[str, int] = {}

    def sample(self) -> None:
        now = self.clock()
        farms = self.server.registry.farms
        for gone in set(self.farms) - set(farms):
            del self.farms[gone]
        store_ok = self.server.store.healthy()
        for name, farm in farms.items():
            history = self.farms.setdefault(name, FarmHistory())
            view = farm.view()
            history.times.append(now)
            filled = len(history.times)
            for gone in set(history.load) - set(farm.hosts):
                del history.load[gone], history.answers[gone]
                history.last_total.pop(gone, None)
            stale = 0
            for host_name, host in farm.hosts.items():
                load = history.load.get(host_name)
                if load is None:
                    # A host that joined late: pad its series so all line up with ``times``.
                    load = history.load[host_name] = deque(
                        [None] * (filled - 1), maxlen=HISTORY_SECONDS
                    )
                    history.answers[host_name] = deque([0] * (filled - 1), maxlen=HISTORY_SECONDS)
                    history.last_total[host_name] = host.answers
                reported = host.report is not None
                load.append(view.scores.get(host_name, 0.0) if reported else None)
                delta = max(0, host.answers - history.last_total.get(host_name, host.answers))
                history.last_total[host_name] = host.answers
                history.answers[host_name].append(delta)
                if delta and (not store_ok or view.states.get(host_name) == STALE):
                    stale += delta
            if stale:
                self.stale_answers[name] = self.stale_answers.get(name, 0) + stale

    async def run(self, period: float = 1.0) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # a bug in sampling must not end the page's updates for good
                log.exception("status sampling failed")
            await asyncio.sleep(period)

    def recent_answers(self, farm_name: str, window: int = SHARE_WINDOW) -> dict[str, int]:
        history = self.farms.get(farm_name)
        if history is None:
            return {}
        return {name: sum(list(series)[-window:]) for name, series in history.answers.items()}


HISTORY: web.AppKey[History] = web.AppKey("status_history", History)


def setup(app: web.Application) -> None:
    app[HISTORY] = History(app[SERVER])
    app.cleanup_ctx.append(_sampling)


async def _sampling(app: web.Application) -> AsyncIterator[None]:
    """The history's sampler for as long as the app runs (a cleanup context, as the drain
    watcher is: started with the app, cancelled when it is cleaned up)."""
    task = app[SERVER].spawn(app[HISTORY].run())
    yield
    task.cancel()


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def farm_status(
    farm: Farm, history: History | None, now: float, points: int, target: float = 0.7
) -> dict[str, Any]:
    """A farm with its hosts as the page and ``lbdns status`` show them.

    ``utilisation`` and ``scale`` come from ``lbdns.balance.capacity``, the one definition that
    ``/v1/farms`` and the metrics use too. A draining host carries its ``drain`` progress (what
    the drain waits for), as ``lbdns hosts drain`` shows it.
    """
    view = farm.view()
    recent = history.recent_answers(farm.name) if history else {}
    recent_total = sum(recent.values())
    hosts = []
    for name, host in farm.hosts.items():
        value = view.scores.get(name, 0.0)
        report = host.report
        entry: dict[str, Any] = {
            "name": name,
            "state": farm.host_state(host, now),
            "score": _round(value) if report is not None else None,
            "connections": report.metrics.get("connections") if report else None,
            "capacity": host.spec.capacity,
            "healthy": report.healthy if report else None,
            "report_age": _round(now - report.received, 2) if report else None,
            "interval": report.interval if report else None,
            "answers": host.answers,
            "recent_answers": recent.get(name, 0),
            "share": _round(recent.get(name, 0) / recent_total) if recent_total else None,
            "addresses": [*host.spec.a, *host.spec.aaaa],
            "reason": view.reasons.get(name),
            "check": check_brief(farm, host, now),
        }
        drain = drain_status(farm, host, now)
        if drain is not None:
            entry["drain"] = drain.to_json()
        hosts.append(entry)
    counts = {state: 0 for state in (UP, STALE, DOWN)}
    for state in view.states.values():
        if state in counts:
            counts[state] += 1
    scale = farm_load(farm, now, target).to_json()
    out: dict[str, Any] = {
        "name": farm.name,
        "policy": farm.spec.policy,
        "ttl": farm.spec.ttl,
        "all_unhealthy": farm.spec.all_unhealthy,
        "utilisation": scale["utilisation"],
        "balance": _round(balance(farm, now)),
        "scale": scale,
        "up": counts[UP],
        "stale": counts[STALE],
        "down": counts[DOWN],
        "hosts": hosts,
    }
    if history is not None and points > 0:
        samples = history.farms.get(farm.name)
        if samples is not None:
            start = max(0, len(samples.times) - points)
            out["history"] = {
                "times": [round(t, 3) for t in list(samples.times)[start:]],
                "load": {n: [_round(v) for v in list(s)[start:]] for n, s in samples.load.items()},
                "answers": {n: list(s)[start:] for n, s in samples.answers.items()},
            }
    return out


def status(server: Server, history: History | None, points: int = 120) -> dict[str, Any]:
    """Everything the status page shows, as JSON."""
    now = server.registry.clock()
    registry = server.registry
    zones = []
    for origin, zone in sorted(registry.zones.items()):
        farms = [
            farm_status(registry.farms[name], history, now, points, server.config.scale_target)
            for name in sorted(zone.farms)
            if name in registry.farms
        ]
        zones.append({"origin": origin, "serial": zone.serial, "farms": farms})
    counts = server.dns_counters()  # every worker's, added up
    return {
        "time": now,
        "uptime": round(time.time() - server.started, 1),
        "store": server.store.status(),
        "dns": {
            "udp_queries": counts["udp_queries"],
            "tcp_queries": counts["tcp_queries"],
            "rcodes": {
                rcode_name(int(k)): v
                for k, v in sorted(counts["rcodes"].items(), key=lambda item: int(item[0]))
            },
        },
        "workers": server.hub.status() if server.hub is not None else [],
        "reloads": dict(server.reloads),
        "zones": zones,
    }


def _page_auth(request: web.Request) -> None:
    # The page carries no data: with tokens configured anyone may load it and the data calls
    # need the token; without tokens it is loopback-only like everything else.
    if not request.app[CONFIG].tokens:
        authenticate(request, "read")


@routes.get("/v1/status")
async def get_status(request: web.Request) -> web.Response:
    authenticate(request, "read")
    text = request.query.get("history", "120")
    if not (text.isascii() and text.isdigit() and len(text) <= 6):
        raise RequestError(
            f"history must be a whole number of seconds (at most 3600), got {text[:20]!r}",
            field="history",
        )
    points = int(text)
    return json_response(status(request.app[SERVER], request.app.get(HISTORY), min(points, 3600)))


@routes.get("/")
async def page(request: web.Request) -> web.FileResponse:
    _page_auth(request)
    return web.FileResponse(STATIC / "status.html", headers={"Cache-Control": "no-cache"})


@routes.get("/static/{file}")
async def static_file(request: web.Request) -> web.FileResponse:
    _page_auth(request)
    name = request.match_info["file"]
    if name not in PAGE_FILES:
        raise web.HTTPNotFound()
    return web.FileResponse(
        STATIC / name, headers={"Content-Type": PAGE_FILES[name], "Cache-Control": "no-cache"}
    )
