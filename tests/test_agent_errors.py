"""The agent against servers that refuse it: permanent errors at ERROR once per answer,
``--check --online``, stopping without a registration, and ``host:port`` server addresses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from obs_support import scrape
from support import ROOT, LbdnsProcess
from test_agent import FARM, INTERVAL, Agent, host_info, wait_for

from lbdns.testing.ports import retry_when_port_taken


def tokens(*entries: str) -> str:
    return "tokens:\n" + "".join(f"  - {entry}\n" for entry in entries)


ADMIN = "{name: ops, secret: admin-secret-1, role: admin}"


def rejected(server: LbdnsProcess, reason: str, token: str | None = "admin-secret-1") -> float:
    """Reports the server refused for ``reason``, from its /metrics."""
    samples = scrape(server.http_url, token=token)
    key = ("lbdns_ingest_reports_total", (("reason", reason), ("result", "rejected")))
    return samples.get(key, 0)


def error_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if " ERROR " in line]


def test_permanent_refusals_are_errors_once_per_answer(tmp_path):
    def scenario() -> None:
        work = Path(tempfile.mkdtemp(dir=tmp_path))  # a retry starts from nothing
        config = work / "lbdns.yaml"

        def server(token_entry: str, http: str) -> LbdnsProcess:
            config.write_text(tokens(ADMIN, token_entry))
            return LbdnsProcess(work, config=config, http=http)

        # The server does not know the agent's token: 401, logged at ERROR once however often
        # the agent retries. The servers after it come back on its port (PortTaken if another
        # process took the port meanwhile: the scenario again, on a new one).
        first = server("{name: other, secret: other-secret-1, role: report}", "127.0.0.1:0")
        first.start()
        try:
            http = first.http_url.removeprefix("http://")
            agent_config = f"""
                farm: {FARM}
                host: web1
                interval: {INTERVAL}
                backoff: {{initial: 0.05, max: 0.1}}
                token: agent-secret-1
                servers: ["{http}"]
            """
            with Agent(work, agent_config) as agent:
                wait_for(lambda: rejected(first, "unauthenticated") >= 3, what="three refusals")
                first.stop()
                errors = error_lines(agent.log())
                assert len(errors) == 1, agent.log()
                assert f"http://{http} refuses the reports of web1 in {FARM}: HTTP 401" in errors[0]
                assert "the server does not know this token" in errors[0]
                assert "lbdns agent --check --online" in errors[0]
                # The token, scoped to another host: 403, a new answer, a new ERROR line.
                with server(
                    "{name: agents, secret: agent-secret-1, role: report, farms: ["
                    + FARM
                    + "], host: web2}",
                    http,
                ):
                    wait_for(lambda: len(error_lines(agent.log())) == 2, what="a second ERROR")
                assert "HTTP 403" in error_lines(agent.log())[1]
                assert "host: scope" in error_lines(agent.log())[1]
                # Fixed: accepted again, said once at INFO.
                with server("{name: agents, secret: agent-secret-1, role: report}", http) as lbdns:
                    wait_for(
                        lambda: host_info(lbdns, "web1", "admin-secret-1")[1].get("state") == "up",
                        what="web1 up",
                    )
                    wait_for(lambda: "accepts the reports again" in agent.log(), what="recovery")
                assert len(error_lines(agent.log())) == 2, agent.log()
        finally:
            first.stop()

    retry_when_port_taken(scenario)


def test_unknown_host_is_an_error_too(lbdns, tmp_path):
    config = f"""
        farm: {FARM}
        host: web9
        interval: {INTERVAL}
        backoff: {{initial: 0.05, max: 0.1}}
        servers: [{lbdns.http_url}]
    """
    with Agent(tmp_path, config) as agent:
        wait_for(lambda: rejected(lbdns, "unknown_host", None) >= 3, what="three refusals")
        errors = error_lines(agent.log())
        assert len(errors) == 1 and "HTTP 404" in errors[0] and "farm:, host:" in errors[0]


def check_online(tmp_path, config: str) -> subprocess.CompletedProcess:
    path = tmp_path / "agent.yaml"
    path.write_text(textwrap.dedent(config))
    return subprocess.run(
        [sys.executable, "-m", "lbdns", "agent", "-c", str(path), "--check", "--online"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_check_online_asks_every_server(tmp_path):
    config = tmp_path / "lbdns.yaml"
    config.write_text(
        tokens(
            ADMIN,
            "{name: agents, secret: agent-secret-1, role: report}",
            "{name: reg, secret: register-secret-1, role: register, farms: [" + FARM + "],"
            " networks: [192.0.2.0/24]}",
        )
    )
    with LbdnsProcess(tmp_path, config=config) as one, LbdnsProcess(tmp_path) as other:
        address = one.http_url.removeprefix("http://")
        done = check_online(
            tmp_path,
            f"""
            farm: {FARM}
            host: web1
            servers:
              - {{url: "{address}", token: agent-secret-1}}
              - {{url: {other.http_url}, token: nobody-knows-1}}
            """,
        )
        # The second server has no tokens: loopback may do anything, so it takes the report.
        assert done.returncode == 0, done.stdout + done.stderr
        lines = done.stdout.splitlines()
        assert lines[1] == (
            f"ok: {one.http_url} takes the reports of web1 in {FARM} (it sees the host as up)"
        )
        assert lines[2].startswith(f"ok: {other.http_url} takes the reports")

        done = check_online(
            tmp_path,
            f"""
            farm: {FARM}
            host: web1
            token: wrong-secret-1
            servers: [{one.http_url}]
            """,
        )
        assert done.returncode == 1
        assert f"error: {one.http_url}: report refused: HTTP 401" in done.stdout
        assert "the server does not know this token" in done.stdout

        done = check_online(
            tmp_path,
            f"""
            farm: {FARM}
            host: web7
            token: agent-secret-1
            servers: [{one.http_url}]
            register: {{register_token: register-secret-1, a: 192.0.2.17}}
            """,
        )
        assert done.returncode == 0, done.stdout
        assert "(the agent registers the host when it starts)" in done.stdout
        assert f"ok: {one.http_url} takes the register token for {FARM}" in done.stdout


def test_sigterm_without_register_says_why_there_is_no_drain(lbdns, tmp_path):
    config = f"""
        farm: {FARM}
        host: web1
        interval: {INTERVAL}
        servers: ["{lbdns.http_url.removeprefix("http://")}"]
    """
    with Agent(tmp_path, config) as agent:
        wait_for(lambda: (host_info(lbdns, "web1")[1] or {}).get("state") == "up", what="up")
        agent.proc.send_signal(signal.SIGTERM)
        assert agent.proc.wait(timeout=10) == 0
        log = agent.log()
        assert "stopping without a drain: the config has no register: section" in log
        assert f"lbdns hosts drain {FARM} web1 --wait" in log


def test_unit_status_names_a_refusing_server(tmp_path):
    """Under systemd (Type=notify), `systemctl status lbdns-agent` shows the agent's STATUS=:
    here the server that refuses its token, then the recovery."""
    from test_systemd import NotifySocket

    config = tmp_path / "lbdns.yaml"
    config.write_text(tokens(ADMIN, "{name: agents, secret: agent-secret-1, role: report}"))
    notify = NotifySocket(tmp_path / "notify")
    agent_path = tmp_path / "agent.yaml"
    try:
        with LbdnsProcess(tmp_path, config=config) as lbdns:
            agent_path.write_text(
                textwrap.dedent(f"""
                farm: {FARM}
                host: web1
                interval: {INTERVAL}
                backoff: {{initial: 0.05, max: 0.1}}
                token: wrong-secret-1
                servers: [{lbdns.http_url}]
                """)
            )
            proc = subprocess.Popen(
                [sys.executable, "-m", "lbdns", "agent", "-c", str(agent_path)],
                env={**os.environ, "NOTIFY_SOCKET": str(notify.path)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=ROOT,
            )
            try:
                first = notify.until("STATUS")
                assert first["STATUS"] == f"reporting web1 in {FARM} to 1 server(s)"
                assert notify.until("READY")["READY"] == "1"
                refused = notify.until("STATUS")["STATUS"]
                assert refused.startswith(f"{lbdns.http_url} refuses: HTTP 401"), refused
                proc.send_signal(signal.SIGTERM)
                assert notify.until("STOPPING")["STOPPING"] == "1"
                assert proc.wait(timeout=10) == 0
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    finally:
        notify.close()
