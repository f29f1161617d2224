"""``lbdns agent`` as a subprocess against real ``lbdns serve`` processes.

Connections are real loopback TCP connections the test opens; the application is a real TCP
server in a subprocess the test kills; the servers are real lbdns processes (one of them frozen
with SIGSTOP to play a server that is away). Intervals are 0.2 s to keep the file fast.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from support import EXAMPLE_ZONES, ROOT, LbdnsProcess, http_json
from support import wait_for as support_wait_for

from lbdns.testing.ports import PortTaken, bind_failed, retry_when_port_taken

FARM = "chat.example.test."
INTERVAL = 0.2


def get_json(url: str, token: str | None = None):
    return http_json(url, token=token, timeout=3)


def host_info(server: LbdnsProcess, host: str, token: str | None = None):
    return get_json(f"{server.http_url}/v1/farms/{FARM}/hosts/{host}", token)


def wait_for(predicate, timeout: float = 8.0, what: str = "condition"):
    # A longer default than elsewhere: an agent's report takes an interval to arrive.
    return support_wait_for(predicate, timeout, what=what)


class Agent:
    """``python -m lbdns agent -c <file>`` in a subprocess, its log in a file."""

    def __init__(self, tmp: Path, config: str, *args: str):
        self.path = tmp / f"agent-{time.monotonic_ns()}.yaml"
        self.path.write_text(textwrap.dedent(config))
        self.log_path = self.path.with_suffix(".log")
        self.args = [sys.executable, "-m", "lbdns", "agent", "-c", str(self.path), *args]
        self.proc: subprocess.Popen | None = None

    def start(self) -> Agent:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.args, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    def __enter__(self) -> Agent:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def listener(family: int = socket.AF_INET, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen(128)
    return sock


def connect(listen: socket.socket, n: int) -> list[socket.socket]:
    host, port = listen.getsockname()[:2]
    out = []
    for _ in range(n):
        out.append(socket.create_connection((host, port), timeout=3))
        out.append(listen.accept()[0])  # keep the server end open too: established on both
    return out


def reported(server: LbdnsProcess, host: str = "web1", token: str | None = None):
    status, body = host_info(server, host, token)
    if status != 200 or not body.get("report"):
        return None
    return body["report"]


@pytest.mark.parametrize("method", ["netlink", "ebpf", "proc"])
def test_loopback_connections_show_up_in_reports(lbdns, tmp_path, method, request):
    if method == "ebpf":
        request.getfixturevalue("tracefs")
    v4 = listener()
    v6 = listener(socket.AF_INET6, "::1")
    port4, port6 = v4.getsockname()[1], v6.getsockname()[1]
    held = connect(v4, 7) + connect(v6, 5)
    config = f"""
        farm: {FARM}
        host: web1
        interval: {INTERVAL}
        servers: [{lbdns.http_url}]
        connections: {{ports: [{port4}, {port6}], method: {method}}}
    """
    try:
        with Agent(tmp_path, config) as agent:
            wait_for(
                lambda: (r := reported(lbdns)) and r["metrics"].get("connections") == 12,
                what="12 connections reported",
            )
            held += connect(v6, 2)  # two arrivals after the agent started
            for sock in held[:6]:  # three client/server pairs on IPv4
                sock.close()
            report = wait_for(
                lambda: (r := reported(lbdns)) and r["metrics"].get("connections") == 11 and r,
                what="11 connections after opening 2 and closing 3",
            )
            assert report["healthy"] is True
            assert 0.0 <= report["metrics"]["cpu"] <= 1.0
            assert report["metrics"]["load1"] >= 0.0
            assert 0.0 < report["metrics"]["memory"] < 1.0
            assert report["interval"] == INTERVAL
            assert agent.proc.poll() is None, agent.log()
            assert f"port(s) {port4}, {port6} with {method}" in agent.log()
            # Only the eBPF counter sees arrivals (connections made after the agent started),
            # reported as the ``accepted`` counter the servers take arrival rates from.
            assert report["metrics"].get("accepted") == (2 if method == "ebpf" else None)
    finally:
        for sock in [*held, v4, v6]:
            sock.close()


APP = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError as exc:
    print("bind failed:", exc, flush=True)
    sys.exit(1)
s.listen(16)
print("listening", s.getsockname()[1], flush=True)
while True:
    s.accept()[0].close()
"""


def start_app(port: int = 0) -> tuple[subprocess.Popen, int]:
    """The application on ``port`` (0: a port of its own), and the port it listens on."""
    app = subprocess.Popen([sys.executable, "-c", APP, str(port)], stdout=subprocess.PIPE)
    line = app.stdout.readline().decode()
    if not line.startswith("listening"):
        app.wait()
        failed = PortTaken if bind_failed(line) else RuntimeError
        raise failed(f"the application did not start: {line!r}")
    return app, int(line.split()[1])


def test_killed_application_turns_the_host_down(lbdns, tmp_path):
    # The application comes back on its port; if another process took it meanwhile
    # (PortTaken), the scenario again with a new one.
    retry_when_port_taken(lambda: killed_application_scenario(lbdns, tmp_path))


def killed_application_scenario(lbdns: LbdnsProcess, tmp_path: Path) -> None:
    app, port = start_app()
    config = f"""
        farm: {FARM}
        host: web1
        interval: {INTERVAL}
        servers: [{lbdns.http_url}]
        connections: {{ports: [{port}]}}
        health:
          fail_after: 2
          recover_after: 2
          checks:
            - tcp: 127.0.0.1:{port}
              timeout: 0.1
    """
    try:
        with Agent(tmp_path, config) as agent:
            wait_for(lambda: host_info(lbdns, "web1")[1]["state"] == "up", what="web1 up")
            app.kill()
            app.wait()
            killed = time.monotonic()
            wait_for(lambda: host_info(lbdns, "web1")[1]["state"] == "down", what="web1 down")
            # Two failed checks at 0.2 s, plus one report: about 0.6 s (margin for a busy box).
            assert time.monotonic() - killed < 3.0
            # The DNS answer no longer names web1 (its peers have never reported, so they are
            # the least bad).
            for _ in range(5):
                answer = lbdns.query(FARM, "A")
                addresses = {rr.address for rrset in answer.answer for rr in rrset}
                assert "192.0.2.10" not in addresses
            assert "reporting unhealthy" in agent.log()
            assert agent.proc.poll() is None, agent.log()
            # The application comes back: up again after recover_after good checks.
            app, _ = start_app(port)
            wait_for(lambda: host_info(lbdns, "web1")[1]["state"] == "up", what="web1 up again")
    finally:
        app.kill()
        app.wait()


def test_a_stopped_server_does_not_stop_reports_to_another(tmp_path):
    with LbdnsProcess(tmp_path) as first, LbdnsProcess(tmp_path) as second:
        config = f"""
            farm: {FARM}
            host: web2
            interval: {INTERVAL}
            timeout: 0.5
            backoff: {{initial: 0.1, max: 0.5}}
            servers: [{first.http_url}, {second.http_url}]
        """
        with Agent(tmp_path, config) as agent:
            for server in (first, second):
                wait_for(lambda s=server: reported(s, "web2"), what="first reports")
            # Frozen, the first server still completes TCP handshakes but never answers: the
            # worst kind of away (each request to it runs into the timeout).
            first.send_signal(signal.SIGSTOP)
            try:
                start = reported(second, "web2")["seq"]
                seqs = set()
                ages = []
                deadline = time.monotonic() + 2.0
                while time.monotonic() < deadline:
                    report = reported(second, "web2")
                    seqs.add(report["seq"])
                    ages.append(host_info(second, "web2")[1]["report_age"])
                    time.sleep(0.05)
                # About ten reports in two seconds at 0.2 s; allow for a loaded machine.
                assert len(seqs - {start}) >= 6, (seqs, agent.log())
                assert max(ages) < 4 * INTERVAL, ages
                assert host_info(second, "web2")[1]["state"] == "up"
            finally:
                first.send_signal(signal.SIGCONT)
            # The first server gets fresh reports again once it is back.
            before = reported(first, "web2")["seq"]
            wait_for(lambda: reported(first, "web2")["seq"] > before, what="reports resume")
            assert agent.proc.poll() is None
            assert "failed" in agent.log()


SERVER_CONFIG = """
tokens:
  - {name: agents, secret: "report-secret-1", role: report, farms: [chat.example.test.]}
  - {name: scaler, secret: "register-secret-1", role: register, farms: [chat.example.test.],
     networks: [192.0.2.0/24]}
  - {name: ops, secret: "admin-secret-1", role: admin}
"""


def short_ttl_zones(tmp_path: Path) -> Path:
    zones = tmp_path / "zones"
    zones.mkdir()
    text = (EXAMPLE_ZONES / "example.test.yaml").read_text().replace("ttl: 5", "ttl: 1")
    (zones / "example.test.yaml").write_text(text)
    return zones


def test_sigterm_drains_and_deregisters(tmp_path):
    server_config = tmp_path / "lbdns.yaml"
    server_config.write_text(SERVER_CONFIG)
    app = listener()
    port = app.getsockname()[1]
    with LbdnsProcess(tmp_path, zones=short_ttl_zones(tmp_path), config=server_config) as lbdns:
        config = f"""
            farm: {FARM}
            host: web9
            interval: {INTERVAL}
            servers:
              - url: {lbdns.http_url}
                token: report-secret-1
            connections: {{ports: [{port}]}}
            register:
              register_token: register-secret-1
              a: 192.0.2.19
              capacity: 2
              labels: {{rack: r1}}
              drain_grace: 0
              drain_timeout: 20
        """
        admin = "admin-secret-1"
        held = connect(app, 2)
        with Agent(tmp_path, config) as agent:
            body = wait_for(
                lambda: (b := host_info(lbdns, "web9", admin)[1]) and b.get("state") == "up" and b,
                what="web9 registered and up",
            )
            assert body["a"] == ["192.0.2.19"] and body["capacity"] == 2
            assert body["labels"]["rack"] == "r1" and body["source"] == "registered"
            agent.proc.send_signal(signal.SIGTERM)
            wait_for(
                lambda: host_info(lbdns, "web9", admin)[1].get("state") == "draining",
                what="web9 draining",
            )
            # Two connections are still open: the drain waits, and the agent keeps reporting.
            # The witness that time passed in the server: five more reports applied (1 s).
            seq = host_info(lbdns, "web9", admin)[1]["report"]["seq"]
            wait_for(
                lambda: host_info(lbdns, "web9", admin)[1]["report"]["seq"] >= seq + 5,
                what="five more reports while draining",
            )
            body = host_info(lbdns, "web9", admin)[1]
            assert body["state"] == "draining", body
            assert body["report"]["metrics"]["connections"] == 2
            assert body["report_age"] < 3 * INTERVAL
            assert agent.proc.poll() is None
            for sock in held:
                sock.close()
            assert agent.proc.wait(timeout=10) == 0, agent.log()
            assert host_info(lbdns, "web9", admin)[0] == 404
            log = agent.log()
            assert "draining web9" in log and "removed web9" in log, log
    app.close()


def test_agent_registers_again_when_a_server_forgets_the_host(tmp_path):
    server_config = tmp_path / "lbdns.yaml"
    server_config.write_text(SERVER_CONFIG)
    admin = "admin-secret-1"

    def server(work: Path, data: str, http: str) -> LbdnsProcess:
        extra = ("--data-dir", str(work / data))
        return LbdnsProcess(work, config=server_config, http=http, extra=extra)

    def scenario() -> None:
        work = Path(tempfile.mkdtemp(dir=tmp_path))  # a retry starts from nothing
        first = server(work, "first", "127.0.0.1:0").start()
        try:
            http = first.http_url.removeprefix("http://")
            config = f"""
                farm: {FARM}
                host: web8
                interval: {INTERVAL}
                backoff: {{initial: 0.1, max: 0.4}}
                token: report-secret-1
                servers: [http://{http}]
                register: {{register_token: register-secret-1, a: 192.0.2.18}}
            """
            with Agent(work, config) as agent:
                wait_for(lambda: host_info(first, "web8", admin)[1].get("state") == "up", what="up")
                first.stop()
                # A new server on the same address that never heard of web8 (another data dir);
                # PortTaken if another process took the port meanwhile: the scenario again.
                with server(work, "second", http) as lbdns:
                    wait_for(
                        lambda: host_info(lbdns, "web8", admin)[1].get("state") == "up",
                        what="web8 registered again and up",
                    )
                assert agent.log().count("registered web8") == 2, agent.log()
                assert agent.proc.poll() is None
        finally:
            first.stop()

    retry_when_port_taken(scenario)


def test_shed_advice_reaches_the_application_hook(tmp_path):
    server_config = tmp_path / "lbdns.yaml"
    server_config.write_text("advice: true\n")
    app = listener()
    held = connect(app, 10)
    shed_file = tmp_path / "shed"
    with LbdnsProcess(tmp_path, config=server_config) as lbdns:
        # web2 (capacity 2) reports no connections and stays fresh for a minute.
        body = {"farm": FARM, "host": "web2", "seq": 1, "interval": 60.0, "healthy": True,
                "metrics": {"connections": 0}}  # fmt: skip
        status, reply = http_json(f"{lbdns.http_url}/v1/report", body, method="POST", timeout=3)
        assert status == 200, reply
        config = f"""
            farm: {FARM}
            host: web1
            interval: {INTERVAL}
            servers: [{lbdns.http_url}]
            connections: {{ports: [{app.getsockname()[1]}]}}
            advice:
              command: 'echo "$1" >> {shed_file}'
              min_interval: 60
        """
        try:
            with Agent(tmp_path, config) as agent:
                # web1 carries 10 against a farm mean of 5 per unit of capacity: shed 5.
                wait_for(lambda: shed_file.exists() and shed_file.read_text(), what="hook ran")
                # More reports with the same advice: still one run. The witness: the server
                # applied five more reports, so the agent had the replies (the advice) to four.
                seq = reported(lbdns)["seq"]
                wait_for(lambda: reported(lbdns)["seq"] >= seq + 5, what="five more reports")
                assert agent.log().count("handing it to the application") == 1, agent.log()
                assert shed_file.read_text() == "5\n", agent.log()
                assert "advises shedding 5 connection(s)" in agent.log()
                assert agent.proc.poll() is None
                # The agent closed nothing itself.
                assert reported(lbdns)["metrics"]["connections"] == 10
        finally:
            for sock in [*held, app]:
                sock.close()


def test_bad_config_is_rejected_with_key_and_reason(tmp_path):
    config = tmp_path / "agent.yaml"
    config.write_text(
        "farm: chat.example.test.\n"
        "servers: [http://127.0.0.1:8053]\n"
        "interval: fast\n"
        "health:\n"
        "  checks:\n"
        "    - tcp: 127.0.0.1\n"
        "  retries: 3\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "lbdns", "agent", "-c", str(config), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert result.returncode == 1
    errors = result.stderr
    assert f"{config}: line 3: interval: must be a number, got 'fast'" in errors
    assert "line 6: health.checks.0.tcp: must be host:port" in errors
    assert "line 7: health.retries: unknown key" in errors


def test_once_prints_one_report(tmp_path):
    app = listener()
    held = connect(app, 3)
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"farm: chat.example.test\nhost: web3\nconnections: {{ports: [{app.getsockname()[1]}]}}\n"
        f"metrics:\n  - {{name: queue, command: 'echo 17'}}\n"
    )
    try:
        result = subprocess.run(
            [sys.executable, "-m", "lbdns", "agent", "-c", str(config), "--once"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=30,
        )
    finally:
        for sock in [*held, app]:
            sock.close()
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["farm"] == FARM and report["host"] == "web3" and report["healthy"] is True
    assert report["metrics"]["connections"] == 3
    assert report["metrics"]["queue"] == 17
    # Milliseconds since the epoch: a restarted agent is never behind its previous run.
    assert abs(report["seq"] / 1000 - time.time()) < 60


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs Linux /proc")
def test_dry_run_measures_without_pushing(tmp_path):
    config = tmp_path / "agent.yaml"
    # A server that cannot be reached: a dry run must not try.
    config.write_text("farm: chat.example.test.\nhost: web1\ninterval: 0.1\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lbdns", "agent", "-c", str(config), "--dry-run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    lines = [json.loads(proc.stdout.readline()) for _ in range(3)]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    seqs = [line["seq"] for line in lines]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert all("cpu" in line["metrics"] for line in lines)


def test_shell_agent_reports_connections(tmp_path):
    server_config = tmp_path / "lbdns.yaml"
    server_config.write_text(SERVER_CONFIG)
    app = listener()
    held = connect(app, 3)
    away = listener()  # a server that never answers: accepted by the kernel, never read
    env = {
        "PATH": os.environ["PATH"],
        "LBDNS_FARM": FARM,
        "LBDNS_HOST": "web3",
        "LBDNS_PORTS": f"{app.getsockname()[1]} 9",
        "LBDNS_TOKEN": "report-secret-1",
        "LBDNS_TIMEOUT": "1",
    }
    with LbdnsProcess(tmp_path, config=server_config) as lbdns:
        env["LBDNS_SERVERS"] = f"http://127.0.0.1:{away.getsockname()[1]} {lbdns.http_url}"
        proc = subprocess.Popen(
            ["sh", str(ROOT / "agents" / "lbdns-agent.sh")],
            env=env,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            report = wait_for(
                lambda: reported(lbdns, "web3", "admin-secret-1"), what="shell agent report"
            )
            assert report["metrics"]["connections"] == 3 and report["healthy"] is True
            first = report["seq"]
            wait_for(
                lambda: reported(lbdns, "web3", "admin-secret-1")["seq"] > first,
                timeout=2.5,  # the interval is 1 s: the away server does not stretch it
                what="a second report despite the server that is away",
            )
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=5) == 0
            assert b"failed" in proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for sock in [*held, app, away]:
                sock.close()


def test_sighup_reloads_the_config_without_draining(tmp_path):
    server_config = tmp_path / "lbdns.yaml"
    server_config.write_text(SERVER_CONFIG)
    first, second = listener(), listener()
    held = connect(first, 1) + connect(second, 3)
    admin = "admin-secret-1"
    with LbdnsProcess(tmp_path, config=server_config) as lbdns:
        template = """
            farm: {farm}
            host: web9
            interval: {interval}
            servers:
              - url: {url}
                token: report-secret-1
            connections: {{ports: [{port}]}}
            register: {{register_token: register-secret-1, a: 192.0.2.19, drain_grace: 0}}
        """

        def config(port: int, farm: str = FARM, interval: float = INTERVAL) -> str:
            text = template.format(farm=farm, interval=interval, url=lbdns.http_url, port=port)
            return textwrap.dedent(text)

        def report() -> dict | None:
            status, body = host_info(lbdns, "web9", admin)
            return body.get("report") if status == 200 else None

        try:
            with Agent(tmp_path, config(first.getsockname()[1])) as agent:
                wait_for(
                    lambda: (r := report()) and r["metrics"].get("connections") == 1,
                    what="web9 registered, 1 connection on the first port",
                )
                # A new port and interval: the agent counts the new port and is never drained.
                agent.path.write_text(config(second.getsockname()[1], interval=0.3))
                agent.proc.send_signal(signal.SIGHUP)
                body = wait_for(
                    lambda: (r := report()) and r["metrics"].get("connections") == 3 and r,
                    what="3 connections on the second port after SIGHUP",
                )
                assert body["interval"] == 0.3
                assert host_info(lbdns, "web9", admin)[1]["state"] == "up"
                assert "reloading" in agent.log() and "draining" not in agent.log()
                # A bad file, and one naming another farm: logged, and the running config stays.
                agent.path.write_text(config(second.getsockname()[1]) + "interval: -1\n")
                agent.proc.send_signal(signal.SIGHUP)
                wait_for(lambda: "reload of" in agent.log(), what="the failed reload logged")
                agent.path.write_text(config(second.getsockname()[1], farm="other.example.test."))
                agent.proc.send_signal(signal.SIGHUP)
                wait_for(
                    lambda: "farm and host cannot change" in agent.log(),
                    what="the farm change refused",
                )
                seq = report()["seq"]
                wait_for(lambda: report()["seq"] > seq, what="reports going on")
                assert report()["interval"] == 0.3 and agent.proc.poll() is None
                assert "line 10: interval: duplicate key 'interval'" in agent.log()
        finally:
            for sock in [*held, first, second]:
                sock.close()


@pytest.mark.parametrize("kind", ["tcp", "http"])
def test_health_checks_on_the_counted_port_are_neither_connections_nor_arrivals(
    lbdns, tmp_path, request, kind
):
    """The agent's own checks connect to the application's port every interval: the reports
    must show neither those connections nor those arrivals, only the real ones."""
    request.getfixturevalue("tracefs")
    app = subprocess.Popen(
        [sys.executable, "-c", APP_HTTP],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    held: list[socket.socket] = []
    try:
        port = int(app.stdout.readline())
        check = (
            f"{{tcp: '127.0.0.1:{port}'}}"
            if kind == "tcp"
            else f"{{http: 'http://127.0.0.1:{port}/'}}"
        )
        config = f"""
            farm: {FARM}
            host: web1
            interval: {INTERVAL}
            servers: [{lbdns.http_url}]
            connections: {{ports: [{port}], method: ebpf}}
            health: {{checks: [{check}]}}
        """
        with Agent(tmp_path, config) as agent:
            first = wait_for(lambda: reported(lbdns), what="a first report")
            seq = first["seq"]
            # Ten more intervals, ten more checks each: nothing arrived, nothing is held.
            for _ in range(10):
                seq = wait_for(
                    lambda s=seq: (r := reported(lbdns)) and r["seq"] > s and r["seq"],
                    what="the next report",
                )
                report = reported(lbdns)
                assert report["healthy"] is True, agent.log()
                assert report["metrics"]["accepted"] == 0, report
                assert report["metrics"]["connections"] == 0, report
            for _ in range(3):  # three real clients, held open
                held.append(socket.create_connection(("127.0.0.1", port), timeout=3))
            wait_for(
                lambda: (
                    (r := reported(lbdns))
                    and r["metrics"]["accepted"] == 3
                    and r["metrics"]["connections"] == 3
                ),
                what="3 arrivals and 3 connections, the checks still not counted",
            )
    finally:
        for sock in held:
            sock.close()
        app.kill()
        app.wait()


# A tiny HTTP application: prints its port, answers 200 to every request, holds idle sockets.
APP_HTTP = """
import http.server, socketserver, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a):
        pass
server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(server.server_address[1], flush=True)
server.serve_forever()
"""
