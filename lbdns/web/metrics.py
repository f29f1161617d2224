"""Prometheus metrics at ``GET /metrics``.

The DNS path never calls prometheus-client: it bumps plain integers (``Answerer.rcodes`` and
``qtypes``, ``TransportStats``, ``Host.answers``, the sampled ``LatencyHistogram``) and the
``ServerCollector`` below reads them when Prometheus scrapes. Farm and host gauges are computed
from each farm's current view at scrape time. Only ingest results are a regular
prometheus-client counter (``INGEST``): a report is an HTTP request, where a counter's cost does
not matter. docs/observability.md lists every metric with its type and labels.

``/metrics`` needs the ``read`` role when tokens are configured (Prometheus sends it with
``authorization: {credentials: ...}``); with none, loopback only, as the rest of the API.
"""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web
from dnslib import QTYPE, RCODE
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from lbdns.balance.host import DISABLED, DOWN, DRAINED, DRAINING, NEW, STALE, UP
from lbdns.dnsserver.rrl import CLASSES, RateLimiter
from lbdns.server import Server
from lbdns.web import ingest
from lbdns.web.assign import ASSIGNMENTS
from lbdns.web.base import SERVER, authenticate
from lbdns.web.status import HISTORY, History

STATES = (UP, NEW, STALE, DOWN, DRAINING, DRAINED, DISABLED)

routes = web.RouteTableDef()


def _stat(obj: object, *names: str) -> float | None:
    for name in names:
        value = getattr(obj, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    return None


def _rrl(rrl: RateLimiter | None) -> Iterator[Metric]:
    """Response rate limiting (docs/dns.md): limited responses by class and action."""
    limited = CounterMetricFamily(
        "lbdns_dns_rrl_limited",
        "UDP responses over the rate limit, by response class and action (dropped, or "
        "slipped: sent as TC=1).",
        labels=["class", "action"],
    )
    networks = GaugeMetricFamily(
        "lbdns_dns_rrl_networks", "Client networks with a rate-limit bucket now."
    )
    resets = CounterMetricFamily(
        "lbdns_dns_rrl_resets", "Times the rate-limit tables were full and started over."
    )
    if rrl is not None:
        for index, name in enumerate(CLASSES):
            limited.add_metric([name, "dropped"], rrl.dropped[index])
            limited.add_metric([name, "slipped"], rrl.slipped[index])
        networks.add_metric([], len(rrl.networks))
        resets.add_metric([], rrl.resets)
    yield limited
    yield networks
    yield resets


class ServerCollector(Collector):
    """Reads one server's plain counters and farm views at scrape time."""

    def __init__(self, server: Server, history: History | None):
        self.server = server
        self.history = history

    def collect(self) -> Iterator[Metric]:
        yield from self._dns()
        yield from self._farms()
        yield from self._state()

    def _dns(self) -> Iterator[Metric]:
        server = self.server
        stats = server.stats
        answerer = server.answerer
        queries = CounterMetricFamily(
            "lbdns_dns_queries", "DNS messages received, by transport.", labels=["transport"]
        )
        queries.add_metric(["udp"], stats.udp_queries)
        queries.add_metric(["tcp"], stats.tcp_queries)
        yield queries
        by_type = CounterMetricFamily(
            "lbdns_dns_queries_by_type",
            "DNS questions of class IN, by query type.",
            labels=["qtype"],
        )
        qtypes = answerer.qtypes  # a list indexed by type (or a Counter in older builds)
        pairs = qtypes.items() if isinstance(qtypes, dict) else enumerate(qtypes)
        for qtype, count in pairs:
            if count:
                by_type.add_metric([QTYPE.get(qtype, f"TYPE{qtype}")], count)
        yield by_type
        responses = CounterMetricFamily(
            "lbdns_dns_responses", "DNS responses sent, by response code.", labels=["rcode"]
        )
        for rcode, count in sorted(answerer.rcodes.items()):
            label = "BADVERS" if rcode == 16 else RCODE.get(rcode, str(rcode))
            responses.add_metric([label], count)
        yield responses
        yield CounterMetricFamily(
            "lbdns_dns_dropped",
            "DNS messages dropped unanswered (shorter than a header, or a response).",
            value=answerer.dropped,
        )
        yield CounterMetricFamily(
            "lbdns_dns_internal_errors",
            "Queries answered SERVFAIL because of an internal error.",
            value=answerer.errors,
        )
        yield CounterMetricFamily(
            "lbdns_dns_udp_send_errors",
            "UDP responses the kernel refused to send.",
            value=stats.udp_send_errors,
        )
        tcp = CounterMetricFamily(
            "lbdns_dns_tcp_connections",
            "TCP connections by outcome: accepted, refused (the client's address or network "
            "held its share; also counted as refused_address or refused_network), evicted "
            "(closed at the global cap to take a new one), idle_timeout.",
            labels=["outcome"],
        )
        tcp.add_metric(["accepted"], stats.tcp_connections)
        tcp.add_metric(["refused"], stats.tcp_refused)
        tcp.add_metric(["refused_address"], stats.tcp_refused_address)
        tcp.add_metric(["refused_network"], stats.tcp_refused_prefix)
        tcp.add_metric(["evicted"], stats.tcp_evicted)
        tcp.add_metric(["idle_timeout"], stats.tcp_timeouts)
        yield tcp
        yield GaugeMetricFamily(
            "lbdns_dns_tcp_open", "TCP connections open now.", value=len(server.tcp.connections)
        )
        latency = stats.latency
        yield HistogramMetricFamily(
            "lbdns_dns_latency_seconds",
            "Time to answer a query, from query bytes to response bytes (sampled: the first "
            "query of each batch read from a socket).",
            buckets=latency.cumulative(),
            sum_value=latency.total,
        )
        yield from _rrl(answerer.rrl)
        cookies = CounterMetricFamily(
            "lbdns_dns_cookies",
            "Queries with a DNS COOKIE option, by what their server cookie was (client_only, "
            "valid, invalid, malformed), and BADCOOKIE replies sent.",
            labels=["result"],
        )
        for result, count in (answerer.cookies.results if answerer.cookies else {}).items():
            cookies.add_metric([result], count)
        yield cookies
        query_log = answerer.query_log
        lines = CounterMetricFamily(
            "lbdns_query_log_lines",
            "Query-log lines by result: written, or suppressed by query_log_rate.",
            labels=["result"],
        )
        lines.add_metric(["written"], getattr(query_log, "written", 0))
        lines.add_metric(["suppressed"], getattr(query_log, "suppressed", 0))
        yield lines

    def _farms(self) -> Iterator[Metric]:
        registry = self.server.registry
        now = registry.clock()
        answers = CounterMetricFamily(
            "lbdns_answers",
            "Answers that named the host (one per host per answer).",
            labels=["farm", "host"],
        )
        state = GaugeMetricFamily(
            "lbdns_host_state",
            "1 for the host's current state, 0 for the others.",
            labels=["farm", "host", "state"],
        )
        score = GaugeMetricFamily(
            "lbdns_host_score",
            "The host's load score (its weighted load / capacity).",
            labels=["farm", "host"],
        )
        age = GaugeMetricFamily(
            "lbdns_host_report_age_seconds",
            "Seconds since the host's last accepted report.",
            labels=["farm", "host"],
        )
        connections = GaugeMetricFamily(
            "lbdns_host_connections",
            "Connections in the host's last report.",
            labels=["farm", "host"],
        )
        counts = GaugeMetricFamily(
            "lbdns_farm_hosts", "Hosts of the farm in each state.", labels=["farm", "state"]
        )
        utilisation = GaugeMetricFamily(
            "lbdns_farm_utilisation",
            "Reported load / capacity of the farm's reporting hosts (1 = full).",
            labels=["farm"],
        )
        balance = GaugeMetricFamily(
            "lbdns_farm_balance",
            "Peak / mean score of the farm's up hosts (1 = perfectly even).",
            labels=["farm"],
        )
        stale_answers = CounterMetricFamily(
            "lbdns_stale_answers",
            "Answers served from stale data: naming a stale host, or while the shared store "
            "was unhealthy (counted per second by the status sampler).",
            labels=["farm"],
        )
        stale_by_farm = self.history.stale_answers if self.history else {}
        for farm_name, farm in sorted(registry.farms.items()):
            view = farm.view()
            in_state = dict.fromkeys(STATES, 0)
            used = capacity = 0.0
            up_scores = []
            for host_name, host in farm.hosts.items():
                labels = [farm_name, host_name]
                current = farm.host_state(host, now)
                in_state[current] = in_state.get(current, 0) + 1
                answers.add_metric(labels, host.answers)
                for name in STATES:
                    state.add_metric([*labels, name], 1.0 if name == current else 0.0)
                value = view.scores.get(host_name, 0.0)
                score.add_metric(labels, value)
                report = host.report
                if report is not None:
                    age.add_metric(labels, max(0.0, now - report.received))
                    conns = report.metrics.get("connections")
                    if conns is not None:
                        connections.add_metric(labels, float(conns))
                    if current != STALE:
                        used += value * host.spec.capacity
                        capacity += host.spec.capacity
                if current == UP:
                    up_scores.append(value)
            for name, count in in_state.items():
                counts.add_metric([farm_name, name], count)
            if capacity:
                utilisation.add_metric([farm_name], used / capacity)
            mean = sum(up_scores) / len(up_scores) if up_scores else 0.0
            if mean > 0:
                balance.add_metric([farm_name], max(up_scores) / mean)
            stale_answers.add_metric([farm_name], stale_by_farm.get(farm_name, 0))
        yield from (answers, state, score, age, connections, counts, utilisation, balance)
        yield stale_answers

    def _state(self) -> Iterator[Metric]:
        server = self.server
        reloads = CounterMetricFamily(
            "lbdns_zone_reloads", "Zone reloads by result (ok, error).", labels=["result"]
        )
        for result, count in sorted(server.reloads.items()):
            reloads.add_metric([result], count)
        yield reloads
        serial = GaugeMetricFamily("lbdns_zone_serial", "Serial of each zone.", labels=["zone"])
        for origin, zone in sorted(server.registry.zones.items()):
            serial.add_metric([origin], zone.serial)
        yield serial
        store = server.store
        status = store.status()
        kind = str(status.get("kind", store.name))
        yield GaugeMetricFamily(
            "lbdns_store_healthy",
            "1 when the state store accepts writes (Redis: connected and in sync).",
            value=1.0 if store.healthy() else 0.0,
        )
        connected = status.get("connected", _stat(store, "connected"))
        if connected is not None:
            yield GaugeMetricFamily(
                "lbdns_store_connected",
                "1 while connected to the shared store (Redis).",
                value=1.0 if connected else 0.0,
            )
        resyncs = status.get("resyncs", _stat(store, "resyncs"))
        if resyncs is not None:
            yield CounterMetricFamily(
                "lbdns_store_resyncs",
                "Full resynchronisations with the shared store.",
                value=float(resyncs),
            )
        events = CounterMetricFamily(
            "lbdns_store_events",
            "Shared-store events: resyncs, reseeds (Redis came back empty), lost (connection "
            "lost), writes, refused (writes refused while unhealthy).",
            labels=["event"],
        )
        for event in ("resyncs", "reseeds", "lost", "writes", "refused"):
            count = status.get(event)
            if isinstance(count, int) and not isinstance(count, bool):
                events.add_metric([event], count)
        if events.samples:
            yield events
        info = GaugeMetricFamily("lbdns_store_info", "The state store in use.", labels=["kind"])
        info.add_metric([kind], 1.0)
        yield info


METRICS: web.AppKey[CollectorRegistry] = web.AppKey("metrics_registry", CollectorRegistry)


def setup(app: web.Application) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(app[SERVER], app.get(HISTORY)))
    registry.register(ingest.OUTCOMES)
    registry.register(ASSIGNMENTS)
    ProcessCollector(registry=registry)
    app[METRICS] = registry


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    authenticate(request, "read")
    body = generate_latest(request.app[METRICS])
    response = web.Response(body=body)
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    response.charset = "utf-8"
    return response
