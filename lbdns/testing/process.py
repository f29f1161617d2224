"""The process harness shared by the tests and the benchmarks: ``lbdns serve`` in a subprocess
on port-0 addresses that it reports in its ready line, plus small HTTP and waiting helpers.

It is not used by the server itself; it lives in the package so that benchmarks and tests import
it the same way, without putting ``tests/`` on ``sys.path``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lbdns.testing.ports import PortTaken, bind_failed, free_port

__all__ = [
    "EXAMPLE_ZONES",
    "READY",
    "ROOT",
    "LbdnsProcess",
    "PortTaken",
    "free_port",
    "http_json",
    "http_request",
    "stop_process",
    "wait_for",
]

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLE_ZONES = ROOT / "zones"
READY = re.compile(r"ready dns=(\S*) http=(\S+)")


def http_request(
    url: str,
    body: Any = None,
    token: str | None = None,
    method: str | None = None,
    raw: bytes | None = None,
    timeout: float = 5.0,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, dict[str, str]]:
    """One HTTP request: ``body`` sent as JSON (or ``raw`` bytes as they are), an optional
    bearer ``token`` and extra ``headers``; returns (status, body bytes, headers), error
    statuses included."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = dict(headers or {})
    if data is not None:
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def http_json(
    url: str,
    body: Any = None,
    token: str | None = None,
    method: str | None = None,
    raw: bytes | None = None,
    timeout: float = 5.0,
) -> tuple[int, Any]:
    """``http_request`` with the reply parsed as JSON (None for an empty reply)."""
    status, content, _ = http_request(url, body, token, method, raw, timeout)
    return status, json.loads(content) if content else None


def wait_for(
    check: Callable[[], Any], timeout: float = 5.0, step: float = 0.05, what: str = "condition"
) -> Any:
    """Poll ``check`` until it returns something true, and return that; fail with its last value
    after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    result = None
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {result!r})")


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    """Ask ``proc`` to stop with ``sig``; kill it if it has not within ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _config_sets_workers(config: Path) -> bool:
    import yaml

    data = yaml.safe_load(config.read_text()) if config.exists() else None
    return isinstance(data, dict) and "workers" in data


class LbdnsProcess:
    """``lbdns serve`` in a subprocess, on port 0 addresses it reports once ready.

    ``workers`` is passed as ``--workers`` and is 1 unless a test asks for more: the server's
    default is one process per CPU, and a test that reads one process's state (the explain
    endpoint's last answer, the rate-limit buckets, the CH TXT view) or counts lines and
    counters as they happen must not depend on which process the kernel picked. ``workers=None`` leaves it to the config file or the default. A config file that
    sets ``workers`` needs ``workers=None`` (the command line would override it silently)."""

    def __init__(
        self,
        tmp: Path,
        zones: Path = EXAMPLE_ZONES,
        config: Path | None = None,
        dns: tuple[str, ...] = ("127.0.0.1:0",),
        http: str | None = "127.0.0.1:0",
        extra: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        workers: int | None = 1,
    ):
        self.tmp = tmp
        self.args = [sys.executable, "-m", "lbdns", "serve", "--zones", str(zones)]
        self.config = config
        self.workers = workers
        if config is not None:
            self.args += ["-c", str(config)]
        if workers is not None:
            self.args += ["--workers", str(workers)]
        for address in dns:
            self.args += ["--dns", address]
        self.args += ["--http", http or "off"]
        self.args += list(extra)
        self.env = {**os.environ, **(env or {})}
        self.log_path = tmp / f"lbdns-{id(self)}.log"
        self.proc: subprocess.Popen | None = None
        self.dns: list[tuple[str, int]] = []
        self.http_url: str | None = None

    def start(self, timeout: float = 15.0) -> LbdnsProcess:
        if self.workers is not None and self.config and _config_sets_workers(self.config):
            raise ValueError(
                f"{self.config} sets workers: pass workers=None (or workers=N, not in the file)"
            )
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            self.args, stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=self.tmp
        )
        deadline = time.monotonic() + timeout
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")[offset:] if offset else self.log()
            match = READY.search(text)
            if match:
                self.dns = []
                for item in filter(None, match.group(1).split(",")):
                    host, _, port = item.rpartition(":")
                    self.dns.append((host.strip("[]"), int(port)))
                http = match.group(2)
                self.http_url = None if http == "off" else f"http://{http}"
                return self
            if self.proc.poll() is not None:
                self._log.close()
                # A fixed --http or --dns port another process holds: the caller may try another.
                failed = PortTaken if bind_failed(self.log()[offset:]) else RuntimeError
                raise failed(f"lbdns exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"lbdns did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def host(self) -> str:
        return self.dns[0][0]

    @property
    def port(self) -> int:
        return self.dns[0][1]

    def query(self, qname: str, rdtype: str = "A", tcp: bool = False, **kw) -> Any:
        """One query with dnspython (a test dependency, imported here only)."""
        import dns.message
        import dns.query

        message = dns.message.make_query(qname, rdtype, **kw)
        if tcp:
            return dns.query.tcp(message, self.host, port=self.port, timeout=3)
        return dns.query.udp(message, self.host, port=self.port, timeout=3)

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None:
            return None
        stop_process(self.proc, sig)
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> LbdnsProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# Taken when a benchmark imports this module, at its start: before its own load.
_LOAD_AT_START = os.getloadavg()


def load_note() -> str:
    """How busy the machine was when the benchmark started: printed with its figures, so a
    reader sees whether other work shared the CPUs."""
    return "load average before the run: " + " ".join(f"{x:.2f}" for x in _LOAD_AT_START)
