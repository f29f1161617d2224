"""Health checks from a real ``lbdns serve`` against real TCP, HTTP and TLS listeners that the
tests start, stop, hang (accept and never answer) and make answer 500.

Short intervals (0.2 s, timeout 0.2 s, rise 2, fall 3): a failing host must be down within
fall x interval + timeout (plus the jitter of 10 % per interval and a margin for a busy machine),
and back only after ``rise`` successes in a row.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest
from obs_support import scrape, value
from probe_support import FARM, host, state, zone_folder
from support import LbdnsProcess, http_json, wait_for

from lbdns.testing.backend import Backend, make_certificate

INTERVAL, TIMEOUT, RISE, FALL = 0.2, 0.2, 2, 3
# Down within fall x interval (each stretched by up to 10 %) + timeout; the margin is for the
# API polling and a machine shared with other work.
DOWN_WITHIN = FALL * INTERVAL * 1.1 + TIMEOUT + 0.8
CHECK = f"interval: {INTERVAL}, timeout: {TIMEOUT}, rise: {RISE}, fall: {FALL}"


def wait_state(server, name: str, wanted: str, timeout: float = 5.0) -> float:
    """Seconds until host ``name`` is in state ``wanted`` (polled every 20 ms)."""
    started = time.monotonic()
    wait_for(lambda: state(server, name)[0] == wanted, timeout, 0.02, f"{name} {wanted}")
    return time.monotonic() - started


def answered(server, rounds: int = 20) -> set[str]:
    names = set()
    for _ in range(rounds):
        reply = server.query(FARM)
        names |= {rr.address for rrset in reply.answer for rr in rrset}
    return names


def tracker(server, name: str) -> dict:
    (only,) = host(server, name)["check"]["here"]["addresses"].values()
    return only


@pytest.fixture
def backends():
    started = [Backend("127.0.0.11").start(), Backend("127.0.0.12").start()]
    yield started
    for backend in started:
        backend.stop()


def start(tmp_path, body: str, **kw) -> LbdnsProcess:
    """A server for ``with``, which starts and stops it."""
    return LbdnsProcess(tmp_path, zones=zone_folder(tmp_path, body), **kw)


def two_hosts(kind: str, b1: Backend, b2: Backend, extra: str = "") -> str:
    return f"""\
check: {{type: {kind}, port: {b1.port}, {CHECK}{extra}}}
hosts:
  h1: {{a: 127.0.0.11}}
  h2: {{a: 127.0.0.12, check: {{port: {b2.port}}}}}
"""


def test_http_500_takes_a_host_down_and_rise_successes_bring_it_back(tmp_path, backends):
    b1, b2 = backends
    with start(tmp_path, two_hosts("http", b1, b2)) as server:
        wait_state(server, "h1", "up")
        wait_state(server, "h2", "up")
        assert state(server, "h1") == ("up", "check")  # no agent: the probes alone
        assert answered(server) == {"127.0.0.11", "127.0.0.12"}
        b1.mode = "error"
        assert wait_state(server, "h1", "down") < DOWN_WITHIN
        detail = tracker(server, "h1")
        assert detail["error"] == "status 500" and detail["failures"] >= FALL
        assert state(server, "h1") == ("down", "check")
        assert answered(server) == {"127.0.0.12"}
        b1.mode = "ok"
        took = wait_state(server, "h1", "up")
        # Back after `rise` successes in a row, not on the first one.
        assert tracker(server, "h1")["successes"] >= RISE
        assert took >= (RISE - 1) * INTERVAL * 0.9
        assert "127.0.0.11" in answered(server)


def test_hung_listener_is_down_by_timeout(tmp_path, backends):
    b1, b2 = backends
    with start(tmp_path, two_hosts("http", b1, b2)) as server:
        wait_state(server, "h1", "up")
        b1.mode = "hang"  # accepts, never answers
        assert wait_state(server, "h1", "down") < DOWN_WITHIN
        detail = tracker(server, "h1")
        assert detail["error"] == f"timeout after {TIMEOUT:g} s"
        assert detail["latency"] >= TIMEOUT * 0.9
        b1.mode = "ok"
        wait_state(server, "h1", "up")


def test_stopped_listener_is_down_and_back_when_restarted(tmp_path, backends):
    b1, b2 = backends
    with start(tmp_path, two_hosts("tcp", b1, b2)) as server:
        wait_state(server, "h1", "up")
        b1.stop()
        assert wait_state(server, "h1", "down") < DOWN_WITHIN
        assert tracker(server, "h1")["error"] == "connection refused"
        b1.start()  # the same port again
        wait_state(server, "h1", "up")
        assert state(server, "h2") == ("up", "check")


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl makes the test certificate")
def test_tls_check_sees_a_hung_handshake_that_a_tcp_check_would_miss(tmp_path):
    cert = make_certificate(tmp_path)
    b1 = Backend("127.0.0.11", tls=cert).start()
    b2 = Backend("127.0.0.12", tls=cert).start()
    try:
        body = two_hosts("tls", b1, b2).replace(
            "  h2: {a: 127.0.0.12, check: {port: ",
            "  h2: {a: 127.0.0.12, check: {type: tcp, port: ",
        )
        with start(tmp_path, body) as server:
            wait_state(server, "h1", "up")
            wait_state(server, "h2", "up")
            b1.mode = b2.mode = "hang"  # TCP accepted, no TLS handshake
            assert wait_state(server, "h1", "down") < DOWN_WITHIN
            assert "timeout" in tracker(server, "h1")["error"]
            # The TCP check of h2 connects, so it cannot tell.
            assert state(server, "h2") == ("up", "check")
    finally:
        b1.stop()
        b2.stop()


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl makes the test certificate")
def test_https_check_status_and_body(tmp_path):
    cert = make_certificate(tmp_path)
    b1 = Backend("127.0.0.11", tls=cert).start()
    b2 = Backend("127.0.0.12", tls=cert).start()
    try:
        extra = ", path: /health, expect_body: ok, host_header: backend.test"
        with start(tmp_path, two_hosts("https", b1, b2, extra)) as server:
            wait_state(server, "h1", "up")
            b1.mode = "error"
            assert wait_state(server, "h1", "down") < DOWN_WITHIN
            assert tracker(server, "h1")["error"] == "status 500"
            assert state(server, "h2") == ("up", "check")
            b1.mode = "ok"
            wait_state(server, "h1", "up")
    finally:
        b1.stop()
        b2.stop()


def report(server, name: str, seq: int, healthy: bool = True) -> None:
    body = {
        "farm": FARM,
        "host": name,
        "seq": seq,
        "interval": 10.0,
        "healthy": healthy,
        "metrics": {"connections": 5},
    }
    status, reply = http_json(f"{server.http_url}/v1/report", body, method="POST")
    assert status == 200, reply


@pytest.mark.parametrize("require,expected", [("both", "down"), ("agent", "up"), ("check", "down")])
def test_require_combines_the_agent_and_the_probes(tmp_path, backends, require, expected):
    b1, b2 = backends
    body = two_hosts("http", b1, b2) + f"require: {require}\n"
    with start(tmp_path, body) as server:
        report(server, "h1", 1)
        report(server, "h2", 1)
        wait_state(server, "h1", "up")
        b1.mode = "error"  # the agent still says healthy: the application answers 500
        wait_for(lambda: tracker(server, "h1")["state"] == "down", 5, 0.02, "h1's probes down")
        assert state(server, "h1") == (expected, "check" if expected == "down" else None)
        if require == "check":
            # The probes decide: an agent that says unhealthy does not take it out.
            b1.mode = "ok"
            report(server, "h1", 2, healthy=False)
            wait_for(lambda: state(server, "h1") == ("up", "check"), 5, 0.02, "h1 up")


def test_removed_host_is_not_probed(tmp_path, backends):
    b1, b2 = backends
    with start(tmp_path, two_hosts("tcp", b1, b2)) as server:
        wait_state(server, "h1", "up")
        status, reply = http_json(
            f"{server.http_url}/v1/farms/{FARM}/hosts/h1?force=true", method="DELETE"
        )
        assert status == 200, reply
        seen = b1.accepted
        # h2's probes go on: ten more of them are ten intervals in which h1 got none.
        witness = b2.accepted
        wait_for(lambda: b2.accepted >= witness + 10, 10, 0.05, "ten more probes of h2")
        assert b1.accepted <= seen + 1  # at most one that was already in flight
        assert answered(server) == {"127.0.0.12"}
        samples = scrape(server.http_url)
        assert value(samples, "lbdns_probe_targets") == 1


def test_probes_are_visible_in_explain_status_cli_and_metrics(tmp_path, backends):
    b1, b2 = backends
    config = tmp_path / "lbdns.yaml"
    config.write_text("explain_queries: true\n")
    options = {"extra": ("--log-format", "json"), "config": config}
    with start(tmp_path, two_hosts("http", b1, b2), **options) as server:
        wait_state(server, "h1", "up")
        wait_state(server, "h2", "up")
        b1.mode = "error"
        wait_state(server, "h1", "down")
        base = server.http_url
        detail = host(server, "h1")
        check = detail["check"]
        assert check["verdict"] == "down" and check["servers"] == 1 and check["down"] == 1
        assert check["settings"]["interval"] == INTERVAL and check["settings"]["fall"] == FALL
        here = check["here"]["addresses"]["127.0.0.11"]
        assert here["last_ok"] is False and here["latency"] > 0 and here["error"] == "status 500"
        assert check["peers"] == {}
        status, explain = http_json(f"{base}/v1/farms/{FARM}/explain")
        assert status == 200
        hosts = {h["host"]: h for h in explain["hosts"]}
        assert hosts["h1"]["state"] == "down" and hosts["h1"]["reason"] == "check"
        assert hosts["h1"]["check"]["verdict"] == "down"
        assert hosts["h2"]["check"]["verdict"] == "up"
        txt = server.query(f"_lbdns.{FARM}", "TXT", rdclass="CH")
        lines = [b"".join(rr.strings).decode() for rrset in txt.answer for rr in rrset]
        (h1_line,) = [line for line in lines if line.startswith("h1 ")]
        assert "h1 down" in h1_line and "reason=check check=down down=1/1" in h1_line
        status, page = http_json(f"{base}/v1/status?history=0")
        (farm,) = page["zones"][0]["farms"]
        by_name = {h["name"]: h for h in farm["hosts"]}
        assert by_name["h1"]["reason"] == "check" and by_name["h1"]["check"]["verdict"] == "down"
        out = subprocess.run(
            [sys.executable, "-m", "lbdns", "status", "--server", base],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        line = next(line for line in out.splitlines() if line.strip().startswith("h1 "))
        assert "down" in line and "(check)" in line
        samples = scrape(base)
        farm_host = {"farm": FARM, "host": "h1"}
        assert value(samples, "lbdns_probes_total", **farm_host, result="fail") >= FALL
        assert value(samples, "lbdns_probes_total", **farm_host, result="ok") >= 1
        assert value(samples, "lbdns_check_transitions_total", **farm_host, to="down") == 1
        assert value(samples, "lbdns_host_check_up", **farm_host, scope="here") == 0
        assert value(samples, "lbdns_host_check_up", farm=FARM, host="h2", scope="servers") == 1
        assert value(samples, "lbdns_probe_latency_seconds_count", type="http") >= FALL + 2
        logged = [json.loads(line) for line in server.log().splitlines() if '"check"' in line]
        assert any(e.get("host") == "h1" and e.get("result") == "down" for e in logged), logged


def test_a_reload_that_changes_the_check_probes_the_new_port(tmp_path, backends):
    b1, b2 = backends
    moved = Backend("127.0.0.11").start()
    try:
        with start(tmp_path, two_hosts("http", b1, b2)) as server:
            wait_state(server, "h1", "up")
            b1.mode = "hang"  # probes of the old port are nearly always in flight
            wait_state(server, "h1", "down")
            zone_folder(tmp_path, two_hosts("http", moved, b2))  # h1's check on another port
            status, reply = http_json(f"{server.http_url}/v1/reload", method="POST")
            assert status == 200, reply
            # The new check takes over even though a probe under the old one was out.
            wait_state(server, "h1", "up")
            assert host(server, "h1")["check"]["settings"]["port"] == moved.port
            seen = b1.accepted
            witness = moved.accepted
            wait_for(lambda: moved.accepted >= witness + 5, 5, 0.02, "five more on the new port")
            assert b1.accepted <= seen + 1
    finally:
        moved.stop()


def test_every_address_is_probed_and_any_down_takes_the_host_out(tmp_path):
    v4 = Backend("127.0.0.11").start()
    v6 = Backend("::1", port=v4.port).start()  # the same port on the host's AAAA address
    other = Backend("127.0.0.12").start()
    try:
        body = f"""\
check: {{type: tcp, port: {v4.port}, {CHECK}}}
hosts:
  h1: {{a: 127.0.0.11, aaaa: "::1"}}
  h2: {{a: 127.0.0.12, check: {{port: {other.port}}}}}
"""
        with start(tmp_path, body) as server:
            wait_state(server, "h1", "up")
            addresses = host(server, "h1")["check"]["here"]["addresses"]
            assert set(addresses) == {"127.0.0.11", "::1"}
            assert v6.accepted > 0 and v4.accepted > 0
            v6.stop()
            assert wait_state(server, "h1", "down") < DOWN_WITHIN
            addresses = host(server, "h1")["check"]["here"]["addresses"]
            assert addresses["::1"]["state"] == "down" and addresses["127.0.0.11"]["state"] == "up"
    finally:
        for backend in (v4, v6, other):
            backend.stop()
