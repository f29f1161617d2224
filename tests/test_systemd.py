"""Running under systemd: the units pass ``systemd-analyze verify``, and a real ``lbdns serve``
speaks the notification protocol to a real NOTIFY_SOCKET (a unix datagram socket bound here)."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import EXAMPLE_ZONES, ROOT, LbdnsProcess

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
UNITS = (ROOT / "systemd" / "lbdns.service", ROOT / "agents" / "lbdns-agent.service")


class NotifySocket:
    """The service manager's end: collects the datagrams lbdns sends."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[dict[str, str]] = []

    def next(self, timeout: float = 10.0) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        message = dict(line.split("=", 1) for line in data.splitlines())
        self.messages.append(message)
        return message

    def until(self, key: str, timeout: float = 10.0) -> dict[str, str]:
        """The next message carrying ``key``, skipping watchdog pings."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.next(max(0.01, deadline - time.monotonic()))
            if key in message:
                return message

    def close(self) -> None:
        self.sock.close()


def test_ready_reloading_watchdog_and_stopping(tmp_path):
    zones = tmp_path / "zones"
    shutil.copytree(EXAMPLE_ZONES, zones)
    notify = NotifySocket(tmp_path / "notify")
    # A 0.4 s watchdog: pings every 0.2 s. No WATCHDOG_PID: systemd sets it only when the main
    # process is not the one it started; absent, the pings are for us.
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}
    try:
        with LbdnsProcess(tmp_path, zones=zones, env=env) as server:
            ready = notify.until("READY")
            assert ready["READY"] == "1" and "serving 1 zone(s)" in ready["STATUS"]
            # READY came after the zones loaded and the sockets were bound: a query is answered.
            assert server.query("chat.example.test.", "A").answer
            first = [m for m in notify.messages if m != {"WATCHDOG": "1"}]
            assert first[0].get("READY") == "1", "nothing but watchdog pings before READY"

            pings = 0
            started = time.monotonic()
            while pings < 3:
                pings += notify.next(timeout=5).get("WATCHDOG") == "1"
            assert time.monotonic() - started < 3

            before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            server.send_signal(signal.SIGHUP)
            reloading = notify.until("RELOADING")
            assert reloading["RELOADING"] == "1"
            after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            assert before <= int(reloading["MONOTONIC_USEC"]) <= after
            assert notify.until("READY")["STATUS"].startswith("reloaded")

            # A bad zone: READY again (the old zones serve), with the failure in STATUS.
            (zones / "broken.yaml").write_text("zone: broken.test.\nsoa: 3\n")
            server.send_signal(signal.SIGHUP)
            notify.until("RELOADING")
            assert notify.until("READY")["STATUS"].startswith("reload failed")

            server.send_signal(signal.SIGTERM)
            assert notify.until("STOPPING")["STOPPING"] == "1"
            assert server.proc.wait(timeout=10) == 0
    finally:
        notify.close()


def test_no_watchdog_pings_without_watchdog_usec(tmp_path):
    notify = NotifySocket(tmp_path / "notify")
    try:
        with LbdnsProcess(tmp_path, env={"NOTIFY_SOCKET": str(notify.path)}) as server:
            assert notify.until("READY")["READY"] == "1"
            server.send_signal(signal.SIGTERM)
            assert notify.until("STOPPING")  # the next message after READY: no ping between
            assert not [m for m in notify.messages if "WATCHDOG" in m]
    finally:
        notify.close()


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_passes_systemd_analyze_verify(unit, tmp_path):
    # verify checks that ExecStart= binaries exist: point them at a real lbdns in a copy.
    problems = _verify(unit, tmp_path)
    assert not problems, "\n".join(problems)


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_server_unit_runs_unprivileged_with_port_53_and_notify():
    text = (ROOT / "systemd" / "lbdns.service").read_text()
    settings = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    assert settings["Type"] == ["notify"]
    assert settings["DynamicUser"] == ["yes"]
    assert settings["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert settings["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert settings["ExecReload"][-1] == "/bin/kill -HUP $MAINPID"
    assert "WatchdogSec" in settings and settings["NotifyAccess"] == ["main"]
    assert settings["StateDirectory"] == ["lbdns"] and settings["ConfigurationDirectory"]


def _verify(unit: Path, tmp_path: Path, edit=lambda text: text) -> list[str]:
    lbdns = str(Path(sys.executable).parent / "lbdns")
    copy = tmp_path / unit.name
    copy.write_text(edit(unit.read_text().replace("/usr/local/bin/lbdns", lbdns)))
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return [
        line
        for line in done.stderr.splitlines()
        # Not about the unit: this machine may run without systemd as PID 1.
        if line.strip() and not re.search(r"System has not been booted|Failed to connect", line)
    ] + ([f"exit status {done.returncode}"] if done.returncode else [])


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_verify_catches_a_misspelt_unit(tmp_path):
    unit = UNITS[0]
    problems = _verify(unit, tmp_path, lambda t: t.replace("ProtectSystem=", "ProtectSytem="))
    assert any("ProtectSytem" in line for line in problems)


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit, most", [(UNITS[0], 2.0), (UNITS[1], 2.5)], ids=("lbdns", "agent"))
def test_security_exposure(unit, most, tmp_path):
    """The exposure docs/deploy.md prints; the unit must not drift above it."""
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text())
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=yes", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout + done.stderr)
    assert match, done.stdout + done.stderr
    print(f"{unit.name}: exposure {match.group(1)}")
    assert float(match.group(1)) <= most


SETPRIV = shutil.which("setpriv")


@pytest.mark.skipif(SETPRIV is None, reason="setpriv (util-linux) is not installed")
def test_port_53_without_privilege_says_what_to_do(tmp_path):
    # Without CAP_NET_BIND_SERVICE (dropped from the bounding set, so even root lacks it), the
    # bind is refused and the error gives the ways out; the default port follows the capability.
    drop = [SETPRIV, "--bounding-set", "-net_bind_service"]
    serve = [sys.executable, "-m", "lbdns", "serve", "--zones", str(EXAMPLE_ZONES)]
    done = subprocess.run(
        [*drop, *serve, "--dns", "127.0.0.1:53", "--http", "off"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "cannot listen on UDP 127.0.0.1:53: Permission denied" in done.stderr
    for advice in ("CAP_NET_BIND_SERVICE", "systemd/lbdns.service", "setcap", "5353"):
        assert advice in done.stderr, done.stderr
    probe = "from lbdns.config import default_dns_port as p; print(p())"
    without = subprocess.run([*drop, sys.executable, "-c", probe], capture_output=True, text=True)
    assert without.stdout.strip() == "5353", without.stderr


def test_agent_unit_is_type_notify():
    text = (ROOT / "agents" / "lbdns-agent.service").read_text()
    assert "\nType=notify\n" in text and "\nNotifyAccess=main\n" in text
