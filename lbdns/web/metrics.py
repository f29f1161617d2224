"""Prometheus metrics at ``GET /metrics``.

The DNS path never calls prometheus-client: it bumps plain integers (``Answerer.rcodes`` and
``qtypes``, ``TransportStats``, ``Host.answers``, the sampled ``LatencyHistogram``) and the
``ServerCollector`` below reads them when Prometheus scrapes. Farm and host gauges are computed
from each farm's current view at scrape time, utilisation and scale advice from
``lbdns.balance.capacity`` (the one definition the status page and the API use too). Ingest
results are counted in ``lbdns.web.ingest`` where each is decided (``OUTCOMES``).
docs/observability.md lists every metric with its type and labels.

``/metrics`` needs the ``read`` role when tokens are configured (Prometheus sends it with
``authorization: {credentials: ...}``); with none, loopback only, as the rest of the API.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator

from aiohttp import web
from dnslib import QTYPE
from prometheus_client import CollectorRegistry, disable_created_metrics
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from lbdns import __version__
from lbdns.balance.capacity import balance, farm_load
from lbdns.balance.explain import check_brief
from lbdns.balance.host import DISABLED, DOWN, DRAINED, DRAINING, NEW, STALE, UP
from lbdns.dnsserver.latency import LatencyHistogram
from lbdns.dnsserver.rrl import CLASSES
from lbdns.dnsserver.wire import TCP_QTYPES, rcode_name
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


def _rrl(rrl: dict[str, int] | None) -> Iterator[Metric]:
    """Response rate limiting (docs/dns.md): limited responses by class and action, summed
    over the workers (each keeps its own buckets)."""
    limited = CounterMetricFamily(
        "lbdns_dns_rrl_limited",
        "UDP responses over the rate limit, by response class and action (dropped, or "
        "slipped: sent as TC=1).",
        labels=["class", "action"],
    )
    networks = GaugeMetricFamily(
        "lbdns_dns_rrl_networks",
        "Client networks with a rate-limit bucket now (summed over the workers' tables).",
    )
    resets = CounterMetricFamily(
        "lbdns_dns_rrl_resets", "Times the rate-limit tables were full and started over."
    )
    if rrl is not None:
        for name in CLASSES:
            limited.add_metric([name, "dropped"], rrl.get(f"{name} dropped", 0))
            limited.add_metric([name, "slipped"], rrl.get(f"{name} slipped", 0))
        networks.add_metric([], rrl.get("networks", 0))
        resets.add_metric([], rrl.get("resets", 0))
    yield limited
    yield networks
    yield resets


class ServerCollector(Collector):
    """Reads one server's plain counters and farm views at scrape time."""

    def __init__(self, server: Server, history: History | None):
        self.server = server
        self.history = history

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "lbdns_build_info",
            "Always 1; the labels say which lbdns and Python this server runs.",
            labels=["version", "python"],
        )
        info.add_metric([__version__, platform.python_version()], 1.0)
        yield info
        yield from self._dns()
        yield from self._farms()
        yield from self._state()
        yield from self._checks()

    def _dns(self) -> Iterator[Metric]:
        server = self.server
        stats = server.stats
        counts = server.dns_counters()  # every worker's counters added up
        queries = CounterMetricFamily(
            "lbdns_dns_queries",
            "DNS messages received, by transport and query type (qtype none: no question of "
            "class IN, such as a malformed message or another class).",
            labels=["transport", "qtype"],
        )
        # qtype slots: UDP at [qtype], TCP at [TCP_QTYPES + qtype] (only the non-zero ones)
        by_slot = {int(slot): count for slot, count in counts["qtypes"].items()}
        for transport, received, first in (
            ("udp", counts["udp_queries"], 0),
            ("tcp", counts["tcp_queries"], TCP_QTYPES),
        ):
            questions = 0
            for slot in sorted(by_slot):
                qtype = slot - first
                if 0 <= qtype < TCP_QTYPES:
                    count = by_slot[slot]
                    questions += count
                    queries.add_metric([transport, QTYPE.get(qtype, f"TYPE{qtype}")], count)
            queries.add_metric([transport, "none"], max(0, received - questions))
        yield queries
        by_worker = CounterMetricFamily(
            "lbdns_dns_worker_queries",
            "DNS messages received by each worker process (0 is the main process).",
            labels=["worker"],
        )
        for worker, count in sorted(server.worker_queries().items()):
            by_worker.add_metric([str(worker)], count)
        yield by_worker
        restarts = server.hub.restarts if server.hub is not None else 0
        yield CounterMetricFamily(
            "lbdns_worker_restarts",
            "Worker processes started again after they exited.",
            value=restarts,
        )
        responses = CounterMetricFamily(
            "lbdns_dns_responses", "DNS responses sent, by response code.", labels=["rcode"]
        )
        for rcode, count in sorted(counts["rcodes"].items(), key=lambda item: int(item[0])):
            responses.add_metric([rcode_name(int(rcode))], count)
        yield responses
        yield CounterMetricFamily(
            "lbdns_dns_dropped",
            "DNS messages dropped unanswered (shorter than a header, or a response).",
            value=counts["dropped"],
        )
        yield CounterMetricFamily(
            "lbdns_dns_internal_errors",
            "Queries answered SERVFAIL because of an internal error.",
            value=counts["errors"],
        )
        yield CounterMetricFamily(
            "lbdns_dns_udp_send_errors",
            "UDP responses the kernel refused to send.",
            value=counts["udp_send_errors"],
        )
        tcp = CounterMetricFamily(
            "lbdns_dns_tcp_connections",
            "TCP connections by outcome: accepted, refused (the client's address or network "
            "held its share; also counted as refused_address or refused_network), evicted "
            "(closed at the global cap to take a new one), idle_timeout.",
            labels=["outcome"],
        )
        tcp.add_metric(["accepted"], counts["tcp_connections"])
        tcp.add_metric(["refused"], counts["tcp_refused"])
        tcp.add_metric(["refused_address"], counts["tcp_refused_address"])
        tcp.add_metric(["refused_network"], counts["tcp_refused_prefix"])
        tcp.add_metric(["evicted"], counts["tcp_evicted"])
        tcp.add_metric(["idle_timeout"], counts["tcp_timeouts"])
        yield tcp
        yield GaugeMetricFamily(
            "lbdns_dns_tcp_open", "TCP connections open now.", value=len(server.tcp.connections)
        )
        latency = LatencyHistogram(stats.latency.bounds)  # every worker's buckets added up
        latency.add_counts(counts["latency"], counts["latency_seconds"])
        yield HistogramMetricFamily(
            "lbdns_dns_latency_seconds",
            "Time to answer a query, from query bytes to response bytes (sampled: the first "
            "query of each batch read from a socket).",
            buckets=latency.cumulative(),
            sum_value=latency.total,
        )
        yield from _rrl(counts.get("rrl"))
        cookies = CounterMetricFamily(
            "lbdns_dns_cookies",
            "Queries with a DNS COOKIE option, by what their server cookie was (client_only, "
            "valid, invalid, malformed), and BADCOOKIE replies sent.",
            labels=["result"],
        )
        for result, count in counts.get("cookies", {}).items():  # every worker's
            cookies.add_metric([result], count)
        yield cookies
        query_log = counts.get("query_log", {})  # every worker's
        lines = CounterMetricFamily(
            "lbdns_query_log_lines",
            "Query-log lines by result: written, or suppressed by query_log_rate.",
            labels=["result"],
        )
        lines.add_metric(["written"], query_log.get("written", 0))
        lines.add_metric(["suppressed"], query_log.get("suppressed", 0))
        yield lines

    def _farms(self) -> Iterator[Metric]:
        registry = self.server.registry
        target = self.server.config.scale_target
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
        host_capacity = GaugeMetricFamily(
            "lbdns_host_capacity",
            "The host's capacity, in the units of the farm's score.",
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
        draining = GaugeMetricFamily(
            "lbdns_host_drain_seconds",
            "Seconds since the host's drain started (draining hosts only).",
            labels=["farm", "host"],
        )
        counts = GaugeMetricFamily(
            "lbdns_farm_hosts", "Hosts of the farm in each state.", labels=["farm", "state"]
        )
        load = GaugeMetricFamily(
            "lbdns_farm_load",
            "The farm's load: the weighted metrics of its hosts with a fresh report that are "
            "not disabled, in capacity units.",
            labels=["farm"],
        )
        capacity = GaugeMetricFamily(
            "lbdns_farm_capacity",
            "Capacity of the farm's hosts that are up, in the units of the farm's score.",
            labels=["farm"],
        )
        utilisation = GaugeMetricFamily(
            "lbdns_farm_utilisation_ratio",
            "lbdns_farm_load / lbdns_farm_capacity (1 = full); absent when no host is up.",
            labels=["farm"],
        )
        needed = GaugeMetricFamily(
            "lbdns_farm_hosts_needed",
            "Hosts of the farm's mean capacity that bring its utilisation to scale_target; "
            "absent until a host has reported.",
            labels=["farm"],
        )
        balance_ratio = GaugeMetricFamily(
            "lbdns_farm_balance_ratio",
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
            for host_name, host in farm.hosts.items():
                labels = [farm_name, host_name]
                current = farm.host_state(host, now)
                in_state[current] = in_state.get(current, 0) + 1
                answers.add_metric(labels, host.answers)
                for name in STATES:
                    state.add_metric([*labels, name], 1.0 if name == current else 0.0)
                score.add_metric(labels, view.scores.get(host_name, 0.0))
                host_capacity.add_metric(labels, host.spec.capacity)
                report = host.report
                if report is not None:
                    age.add_metric(labels, max(0.0, now - report.received))
                    conns = report.metrics.get("connections")
                    if conns is not None:
                        connections.add_metric(labels, float(conns))
                if host.admin == DRAINING and host.drain_started is not None:
                    draining.add_metric(labels, max(0.0, now - host.drain_started))
            for name, count in in_state.items():
                counts.add_metric([farm_name, name], count)
            scale = farm_load(farm, now, target)
            load.add_metric([farm_name], scale.load)
            capacity.add_metric([farm_name], scale.capacity)
            if scale.utilisation is not None:
                utilisation.add_metric([farm_name], scale.utilisation)
            if scale.hosts_needed is not None:
                needed.add_metric([farm_name], scale.hosts_needed)
            peak_over_mean = balance(farm, now)
            if peak_over_mean is not None:
                balance_ratio.add_metric([farm_name], peak_over_mean)
            stale_answers.add_metric([farm_name], stale_by_farm.get(farm_name, 0))
        yield from (answers, state, score, host_capacity, age, connections, draining, counts)
        yield from (load, capacity, utilisation, needed, balance_ratio, stale_answers)

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

    def _checks(self) -> Iterator[Metric]:
        prober = self.server.prober
        if prober is None:
            return
        stats = prober.stats
        results = CounterMetricFamily(
            "lbdns_probes",
            "Health-check probes sent by this server, by farm, host and result (ok, fail).",
            labels=["farm", "host", "result"],
        )
        for (farm, host, result), count in sorted(stats.results.items()):
            results.add_metric([farm, host, result], count)
        yield results
        latency = HistogramMetricFamily(
            "lbdns_probe_latency_seconds",
            "Time of each probe, from connect to verdict (failures included), by check type.",
            labels=["type"],
        )
        for kind, histogram in sorted(stats.latency.items()):
            latency.add_metric([kind], histogram.cumulative(), sum_value=histogram.total)
        yield latency
        transitions = CounterMetricFamily(
            "lbdns_check_transitions",
            "Times this server's probes turned a host up or down, by farm, host and new state.",
            labels=["farm", "host", "to"],
        )
        for (farm, host, to), count in sorted(stats.transitions.items()):
            transitions.add_metric([farm, host, to], count)
        yield transitions
        verdict = GaugeMetricFamily(
            "lbdns_host_check_up",
            "1 when the checks find the host up, 0 when down (no sample while unknown); "
            "scope=here: this server's probes, scope=servers: the quorum of all servers'.",
            labels=["farm", "host", "scope"],
        )
        registry = self.server.registry
        now = registry.clock()
        for farm_name, farm in sorted(registry.farms.items()):
            for host_name, host in farm.hosts.items():
                brief = check_brief(farm, host, now)
                if brief is None:
                    continue
                for scope, value in (("here", brief["here"]), ("servers", brief["verdict"])):
                    if value in ("up", "down"):
                        verdict.add_metric(
                            [farm_name, host_name, scope], 1.0 if value == "up" else 0.0
                        )
        yield verdict
        yield GaugeMetricFamily(
            "lbdns_probe_targets", "Addresses this server probes.", value=len(prober.targets)
        )
        yield GaugeMetricFamily(
            "lbdns_probes_in_flight", "Probes in flight now.", value=prober.in_flight
        )
        yield CounterMetricFamily(
            "lbdns_probes_late",
            "Probes started over a second late (check_concurrency was full).",
            value=stats.late,
        )


METRICS: web.AppKey[CollectorRegistry] = web.AppKey("metrics_registry", CollectorRegistry)


def setup(app: web.Application) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(app[SERVER], app.get(HISTORY)))
    # No counter has a _created series (prometheus-client would add one to each of ours).
    disable_created_metrics()
    registry.register(ingest.OUTCOMES)
    registry.register(ASSIGNMENTS)
    ProcessCollector(registry=registry)
    app[METRICS] = registry


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    authenticate(request, "read")
    # The text format by default; OpenMetrics when the scraper asks for it (Prometheus does),
    # chosen from the Accept header as prometheus-client's own exporters choose.
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encode(request.app[METRICS]), headers={"Content-Type": content_type})
