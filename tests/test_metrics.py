"""/metrics over real HTTP after real DNS queries (UDP and TCP), reports and reloads."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys

import pytest
from obs_support import http, report, scrape, status, value
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from redis_support import RedisProcess, redis_available
from support import EXAMPLE_ZONES, LbdnsProcess, wait_for

FARM = "chat.example.test."
HOSTS = ("web1", "web2", "web3")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lbdns", *args], capture_output=True, text=True, timeout=30
    )


def test_query_counts_by_transport_type_and_rcode(lbdns):
    before = scrape(lbdns.http_url)
    assert value(before, "lbdns_dns_queries_total", transport="udp", qtype="none") == 0
    for _ in range(5):
        lbdns.query("chat.example.test.", "A")
    for _ in range(3):
        lbdns.query("chat.example.test.", "AAAA", tcp=True)
    lbdns.query("nope.example.test.", "A")
    lbdns.query("nope.example.test.", "A")
    lbdns.query("example.test.", "MX")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"\x00\x01", (lbdns.host, lbdns.port))  # shorter than a header: dropped
        # A question name running off the end of the message: FORMERR.
        sock.settimeout(3)
        sock.sendto(b"\x12\x34\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05abc", lbdns.dns[0])
        assert sock.recv(512)[3] & 0xF == 1

    samples = scrape(lbdns.http_url)
    # One family with transport and qtype labels; summed over qtype it counts every message.
    assert value(samples, "lbdns_dns_queries_total", transport="udp", qtype="A") == 7
    assert value(samples, "lbdns_dns_queries_total", transport="udp", qtype="MX") == 1
    assert value(samples, "lbdns_dns_queries_total", transport="udp", qtype="none") == 2
    assert value(samples, "lbdns_dns_queries_total", transport="tcp", qtype="AAAA") == 3
    assert value(samples, "lbdns_dns_queries_total", transport="tcp", qtype="none") == 0
    queries = {
        labels: v for (name, labels), v in samples.items() if name == "lbdns_dns_queries_total"
    }
    assert sum(v for labels, v in queries.items() if ("transport", "udp") in labels) == 10
    assert not any(name.startswith("lbdns_dns_queries_by_type") for name, _ in samples)
    assert value(samples, "lbdns_dns_responses_total", rcode="NOERROR") == 9
    assert value(samples, "lbdns_dns_responses_total", rcode="NXDOMAIN") == 2
    assert value(samples, "lbdns_dns_responses_total", rcode="FORMERR") == 1
    assert value(samples, "lbdns_dns_dropped_total") == 1
    assert value(samples, "lbdns_dns_tcp_connections_total", outcome="accepted") == 3

    # Every A answer names one host of the three; AAAA only the two with IPv6 addresses.
    answers = {h: value(samples, "lbdns_answers_total", farm=FARM, host=h) for h in HOSTS}
    assert sum(answers.values()) == 8
    assert answers["web2"] + answers["web3"] >= 3

    # The latency histogram is sampled: at least one query timed, never more than were sent.
    count = value(samples, "lbdns_dns_latency_seconds_count")
    assert 1 <= count <= 13
    assert value(samples, "lbdns_dns_latency_seconds_bucket", le="+Inf") == count
    assert 0 < value(samples, "lbdns_dns_latency_seconds_sum") < count * 0.1

    # No reports yet: every host is new.
    for host in HOSTS:
        assert value(samples, "lbdns_host_state", farm=FARM, host=host, state="new") == 1
        assert value(samples, "lbdns_host_state", farm=FARM, host=host, state="up") == 0
    assert value(samples, "lbdns_farm_hosts", farm=FARM, state="new") == 3
    assert value(samples, "lbdns_store_healthy") == 1
    assert value(samples, "lbdns_store_info", kind="memory") == 1


def test_reports_scores_ages_states_and_ingest(lbdns):
    code = report(lbdns.http_url, "web1", 1, 10)
    if code == 404:
        pytest.skip("the ingest endpoint (POST /v1/report) is not part of this build yet")
    assert code == 200
    assert report(lbdns.http_url, "web2", 1, 30) == 200
    assert report(lbdns.http_url, "web3", 1, 5, healthy=False) == 200
    assert report(lbdns.http_url, "web1", 1, 99) == 200  # an old seq: ignored, not applied
    assert report(lbdns.http_url, "nohost", 1, 1) == 404
    status, _, _ = http(lbdns.http_url + "/v1/report", body={"farm": FARM, "host": "web1"})
    assert status == 400
    for _ in range(4):
        lbdns.query("chat.example.test.", "A")

    samples = scrape(lbdns.http_url)
    assert value(samples, "lbdns_host_state", farm=FARM, host="web1", state="up") == 1
    assert value(samples, "lbdns_host_state", farm=FARM, host="web3", state="down") == 1
    assert value(samples, "lbdns_farm_hosts", farm=FARM, state="down") == 1
    assert value(samples, "lbdns_farm_hosts", farm=FARM, state="up") == 2
    assert value(samples, "lbdns_host_score", farm=FARM, host="web1") == pytest.approx(10.0)
    assert value(samples, "lbdns_host_score", farm=FARM, host="web2") == pytest.approx(15.0)
    assert value(samples, "lbdns_host_connections", farm=FARM, host="web2") == 30
    assert 0 <= value(samples, "lbdns_host_report_age_seconds", farm=FARM, host="web1") < 5
    # Down hosts get no answers while others are up.
    assert value(samples, "lbdns_answers_total", farm=FARM, host="web3") == 0
    assert (
        value(samples, "lbdns_answers_total", farm=FARM, host="web1")
        + value(samples, "lbdns_answers_total", farm=FARM, host="web2")
        == 4
    )
    batch = {
        "reports": [
            {"farm": FARM, "host": "web2", "seq": 2, "interval": 1.0, "metrics": {}},
            {"farm": FARM, "host": "web9", "seq": 1, "interval": 1.0, "metrics": {}},
        ]
    }
    assert http(lbdns.http_url + "/v1/reports", body=batch)[0] == 200
    samples = scrape(lbdns.http_url)
    ingest = {
        labels: v for (name, labels), v in samples.items() if name == "lbdns_ingest_reports_total"
    }
    accepted = sum(v for labels, v in ingest.items() if ("result", "accepted") in labels)
    others = sum(v for labels, v in ingest.items() if ("result", "accepted") not in labels)
    assert accepted == 4
    assert others == 4  # the old seq, the unknown host twice, the bad body
    assert value(samples, "lbdns_ingest_reports_total", result="ignored", reason="old_seq") == 1
    assert value(samples, "lbdns_ingest_reports_total", result="rejected", reason="invalid") == 1
    unknown = value(samples, "lbdns_ingest_reports_total", result="rejected", reason="unknown_host")
    assert unknown == 2


def test_scale_metrics_and_one_utilisation_everywhere(lbdns):
    """Load, capacity, utilisation and hosts needed: the same numbers in /metrics, /v1/status,
    /v1/farms and the CLI (one definition, lbdns.balance.capacity)."""
    assert report(lbdns.http_url, "web1", 1, 10) == 200  # capacity 1
    assert report(lbdns.http_url, "web2", 1, 30) == 200  # capacity 2
    assert report(lbdns.http_url, "web3", 1, 6, healthy=False) == 200  # capacity 2, down
    samples = scrape(lbdns.http_url)
    # Load from every fresh host (the down one's load is about to move), capacity from the up.
    assert value(samples, "lbdns_farm_load", farm=FARM) == pytest.approx(46)
    assert value(samples, "lbdns_farm_capacity", farm=FARM) == pytest.approx(3)
    assert value(samples, "lbdns_farm_utilisation_ratio", farm=FARM) == pytest.approx(46 / 3)
    # Hosts of the mean capacity (5/3) at 0.7 each: ceil(46 / (0.7 * 5/3)) = 40.
    assert value(samples, "lbdns_farm_hosts_needed", farm=FARM) == 40
    assert value(samples, "lbdns_host_capacity", farm=FARM, host="web2") == 2
    assert value(samples, "lbdns_farm_balance_ratio", farm=FARM) == pytest.approx(15 / 12.5)
    assert not any(name == "lbdns_farm_utilisation" for name, _ in samples)

    farm = status(lbdns.http_url, history=0)["zones"][0]["farms"][0]
    assert farm["utilisation"] == pytest.approx(46 / 3, abs=1e-4)
    assert farm["scale"]["hosts_needed"] == 40
    code, body, _ = http(lbdns.http_url + "/v1/farms")
    scale = json.loads(body)["farms"][0]["scale"]
    assert scale["utilisation"] == farm["utilisation"] and scale["hosts_needed"] == 40
    # The CLI shows it as one percentage, in `lbdns status` and in `lbdns farms list`.
    for command in (["status"], ["farms", "list"]):
        done = run_cli(*command, "--server", lbdns.http_url)
        assert done.returncode == 0, done.stderr
        assert "1533.3%" in done.stdout, done.stdout


def test_build_info_and_no_stray_created_series(lbdns):
    from lbdns import __version__

    samples = scrape(lbdns.http_url)
    info = [labels for name, labels in samples if name == "lbdns_build_info"]
    assert len(info) == 1 and ("version", __version__) in info[0]
    assert report(lbdns.http_url, "web1", 1, 10) == 200
    samples = scrape(lbdns.http_url)
    assert value(samples, "lbdns_ingest_reports_total", result="accepted", reason="ok") == 1
    assert not [name for name, _ in samples if name.endswith("_created")]


def test_openmetrics_when_asked_for(lbdns):
    code, body, headers = http(
        lbdns.http_url + "/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0; charset=utf-8"},
    )
    assert code == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    text = body.decode()
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in openmetrics_families(text)}
    assert families["lbdns_dns_queries"].type == "counter"
    code, body, headers = http(lbdns.http_url + "/metrics")
    assert headers["Content-Type"].startswith("text/plain") and b"# EOF" not in body


def test_status_rcodes_by_name(lbdns):
    lbdns.query("chat.example.test.", "A")
    lbdns.query("nope.example.test.", "A")
    rcodes = status(lbdns.http_url, history=0)["dns"]["rcodes"]
    assert rcodes == {"NOERROR": 1, "NXDOMAIN": 1}


def test_stale_hosts_and_answers_from_stale_data(lbdns):
    for seq, host in enumerate(HOSTS, 1):
        code = report(lbdns.http_url, host, seq, 1, interval=0.1)
        if code == 404:
            pytest.skip("the ingest endpoint (POST /v1/report) is not part of this build yet")
        assert code == 200

    def all_stale():
        samples = scrape(lbdns.http_url)
        return value(samples, "lbdns_farm_hosts", farm=FARM, state="stale") == 3

    wait_for(all_stale, timeout=3)
    # Every host stale: the farm fails open to the stale hosts, and the sampler counts it.
    for _ in range(6):
        lbdns.query("chat.example.test.", "A")

    def stale_answers():
        samples = scrape(lbdns.http_url)
        return value(samples, "lbdns_stale_answers_total", farm=FARM)

    assert wait_for(stale_answers, timeout=4) == 6


def test_zone_reloads_by_result(tmp_path):
    zones = tmp_path / "zones"
    shutil.copytree(EXAMPLE_ZONES, zones)
    with LbdnsProcess(tmp_path, zones=zones) as server:
        server.send_signal(signal.SIGHUP)

        def reloads(result):
            return lambda: value(scrape(server.http_url), "lbdns_zone_reloads_total", result=result)

        wait_for(reloads("ok"))
        (zones / "broken.yaml").write_text("zone: broken.test.\nsoa: 3\n")
        server.send_signal(signal.SIGHUP)
        wait_for(reloads("error"))
        samples = scrape(server.http_url)
        assert value(samples, "lbdns_zone_reloads_total", result="ok") == 1
        assert value(samples, "lbdns_zone_reloads_total", result="error") == 1
        assert value(samples, "lbdns_zone_serial", zone="example.test.") > 0


def test_metrics_need_the_read_token_when_tokens_are_configured(tmp_path):
    config = tmp_path / "lbdns.yaml"
    config.write_text(
        "tokens:\n"
        "  - {name: grafana, secret: read-secret-1, role: read}\n"
        "  - {name: agents, secret: report-secret, role: report}\n"
    )
    with LbdnsProcess(tmp_path, config=config) as server:
        assert http(server.http_url + "/metrics")[0] == 401
        assert http(server.http_url + "/metrics", token="wrong-secret")[0] == 401
        assert http(server.http_url + "/metrics", token="report-secret")[0] == 403
        samples = scrape(server.http_url, token="read-secret-1")
        assert value(samples, "lbdns_dns_queries_total", transport="udp", qtype="none") == 0


@pytest.mark.skipif(not redis_available(), reason="redis-server is not installed")
def test_redis_connection_state_and_resyncs(tmp_path):
    with RedisProcess(tmp_path / "redis") as redis:
        server = LbdnsProcess(tmp_path, extra=("--state", redis.url))
        with server:
            samples = scrape(server.http_url)
            assert value(samples, "lbdns_store_info", kind="redis") == 1
            assert value(samples, "lbdns_store_connected") == 1
            assert value(samples, "lbdns_store_healthy") == 1
            resyncs = value(samples, "lbdns_store_resyncs_total")
            redis.kill()

            def lost():
                samples = scrape(server.http_url)
                return value(samples, "lbdns_store_connected") == 0 and samples

            samples = wait_for(lost, timeout=10)
            assert value(samples, "lbdns_store_healthy") == 0
            assert value(samples, "lbdns_store_events_total", event="lost") >= 1
            redis.restart()

            def back():
                samples = scrape(server.http_url)
                return value(samples, "lbdns_store_connected") == 1 and samples

            samples = wait_for(back, timeout=15)
            assert value(samples, "lbdns_store_resyncs_total") > resyncs
            assert value(samples, "lbdns_store_healthy") == 1


@pytest.mark.skipif(not redis_available(), reason="redis-server is not installed")
def test_clean_start_of_two_servers_is_no_resync(tmp_path):
    """Two servers starting on an empty Redis: one seeds it (and says so), neither counts a
    resync, and neither re-reads because of the other's or its own seeding."""
    with RedisProcess(tmp_path / "redis") as redis:
        a = LbdnsProcess(tmp_path, extra=("--state", redis.url, "--data-dir", str(tmp_path / "a")))
        b = LbdnsProcess(tmp_path, extra=("--state", redis.url, "--data-dir", str(tmp_path / "b")))
        with a, b:
            # A change through A seen by B: every message published before it has reached B,
            # and A's own messages have reached A (one subscription, in order).
            code, body, _ = http(f"{a.http_url}/v1/farms/{FARM}/hosts/web1/disable", body={})
            assert code == 200, body

            def disabled_on(server):
                samples = scrape(server.http_url)
                state = value(samples, "lbdns_host_state", farm=FARM, host="web1", state="disabled")
                return state == 1 and samples

            for server in (a, b):
                samples = wait_for(lambda s=server: disabled_on(s), timeout=10)
                assert value(samples, "lbdns_store_resyncs_total") == 0
                assert value(samples, "lbdns_store_events_total", event="reseeds") == 0
            logs = a.log() + b.log()
            assert logs.count("holds no membership yet: seeded it") == 1, logs


def test_latency_buckets_are_cumulative():
    from lbdns.dnsserver.latency import BOUNDS, LatencyHistogram

    histogram = LatencyHistogram()
    for seconds in (0.000001, 0.000005, 0.00002, 0.003, 1.0):
        histogram.observe(seconds)
    buckets = dict(histogram.cumulative())
    assert buckets[str(BOUNDS[0])] == 2  # 1 us, and 5 us on the bound itself
    assert buckets["2.5e-05"] == 3
    assert buckets["0.005"] == 4
    assert buckets["+Inf"] == histogram.count == 5
    assert histogram.total == pytest.approx(1.003026)
