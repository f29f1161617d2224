"""A real ``unbound`` recursive resolver for tests and benchmarks: it resolves one stub zone from
an lbdns server on loopback, its config checked with ``unbound-checkconf`` before it starts.

unbound needs its port in its config, so it gets one from ``free_port()``: ready means that the
server answering ``id.server`` on that port names this run's identity, and a start that could not
bind the port is tried again on another (``lbdns.testing.ports``)."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

from lbdns.testing.ports import PortTaken, bind_failed, dns_identity, start_on_free_port
from lbdns.testing.process import stop_process


def which(tool: str) -> str | None:
    return shutil.which(tool) or (
        f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None
    )


UNBOUND = which("unbound")

# What every resolver here has: loopback only, no daemon, no chroot, the test. TLD unblocked
# (one of unbound's default blocked zones, RFC 6761), no DNSSEC for the stub zone. No
# SO_REUSEPORT, so that a port another process holds fails the bind instead of being shared.
CONFIG = """\
server:
    interface: 127.0.0.1
    port: {port}
    so-reuseport: no
    identity: "{identity}"
    do-ip6: no
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "{tmp}"
    pidfile: ""
    use-syslog: no
    logfile: "{tmp}/unbound.log"
    verbosity: 1
    num-threads: 1
    module-config: "{modules}"
    do-not-query-localhost: no
    access-control: 127.0.0.0/8 allow
    local-zone: "test." nodefault
    domain-insecure: "{zone}"
{server_extra}
remote-control:
    control-enable: no

stub-zone:
    name: "{zone}"
    stub-addr: 127.0.0.1@{lbdns_port}
"""


class UnboundProcess:
    """``unbound -d`` resolving ``zone`` from lbdns at 127.0.0.1:``lbdns_port``; ``server_extra``
    is more lines of the ``server:`` clause (indented four spaces), ``modules`` its
    ``module-config``. ``port`` is set once started."""

    def __init__(
        self,
        tmp: Path,
        zone: str,
        lbdns_port: int,
        server_extra: str = "",
        modules: str = "iterator",
    ):
        self.tmp = tmp
        self.zone = zone
        self.lbdns_port = lbdns_port
        self.server_extra = server_extra
        self.modules = modules
        self.port = 0
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 15.0) -> UnboundProcess:
        if UNBOUND is None:
            raise RuntimeError("unbound is not installed (tests/run.sh installs it)")
        return start_on_free_port(lambda port: self._start_on(port, timeout))

    def _start_on(self, port: int, timeout: float) -> UnboundProcess:
        self.port = port
        identity = f"lbdns-test-{uuid.uuid4().hex}"
        config = self.tmp / "unbound.conf"
        config.write_text(
            CONFIG.format(
                port=port,
                identity=identity,
                tmp=self.tmp,
                modules=self.modules,
                zone=self.zone,
                server_extra=self.server_extra.rstrip("\n"),
                lbdns_port=self.lbdns_port,
            )
        )
        check = subprocess.run(
            [which("unbound-checkconf") or "unbound-checkconf", str(config)],
            capture_output=True,
            text=True,
        )
        if check.returncode != 0:
            raise RuntimeError(f"unbound-checkconf refused {config}:\n{check.stdout}{check.stderr}")
        # Until its log file is open unbound writes to stderr, a failed bind among it.
        output = self.tmp / "unbound.out"
        with open(output, "wb") as out:
            self.proc = subprocess.Popen(
                [UNBOUND, "-d", "-c", str(config)], stdout=out, stderr=subprocess.STDOUT
            )
        try:
            self._wait_ready(identity, output, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, identity: str, output: Path, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.tmp / "unbound.log"
                text = output.read_text(errors="replace")
                text += log.read_text(errors="replace") if log.exists() else ""
                failed = PortTaken if bind_failed(text) else RuntimeError
                raise failed(f"unbound exited with {self.proc.returncode}:\n{text}")
            # Its own identity: not another resolver that holds the port.
            if dns_identity(self.port) == identity:
                return
            time.sleep(0.1)
        raise RuntimeError(f"unbound did not start answering on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def __enter__(self) -> UnboundProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
