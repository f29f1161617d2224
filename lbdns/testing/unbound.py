"""A real ``unbound`` recursive resolver for tests and benchmarks: it resolves one stub zone from
an lbdns server on loopback, its config checked with ``unbound-checkconf`` before it starts."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from lbdns.testing.process import free_port, stop_process


def which(tool: str) -> str | None:
    return shutil.which(tool) or (
        f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None
    )


UNBOUND = which("unbound")

# What every resolver here has: loopback only, no daemon, no chroot, the test. TLD unblocked
# (one of unbound's default blocked zones, RFC 6761), no DNSSEC for the stub zone.
CONFIG = """\
server:
    interface: 127.0.0.1
    port: {port}
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
        self.port = free_port()
        config = self.tmp / "unbound.conf"
        config.write_text(
            CONFIG.format(
                port=self.port,
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
        self.proc = subprocess.Popen(
            [UNBOUND, "-d", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        import dns.exception
        import dns.message
        import dns.query

        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.tmp / "unbound.log"
                text = log.read_text() if log.exists() else ""
                raise RuntimeError(f"unbound exited with {self.proc.returncode}:\n{text}")
            try:
                # A name outside the stub: unbound answers from its local data without recursion.
                query = dns.message.make_query("localhost.", "A")
                dns.query.udp(query, "127.0.0.1", port=self.port, timeout=0.5)
                return
            except (dns.exception.Timeout, ConnectionRefusedError):
                time.sleep(0.1)
        raise RuntimeError("unbound did not start answering")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def __enter__(self) -> UnboundProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
