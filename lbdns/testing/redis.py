"""Real ``redis-server`` processes for tests: started on a free loopback port, killed at will.

``RedisProcess`` runs one server, without persistence by default (``--save ""``,
``--appendonly no``) or with an append-only file in its own folder (``persist=True``), so a test
can restart it empty or with its data, and with a TLS port beside the plain one if asked.
``SentinelProcess`` runs ``redis-server --sentinel``. Ports come from ``free_port()``; a start
that loses its port to another process is tried again on new ones (``lbdns.testing.ports``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from lbdns.testing.ports import PortTaken, bind_failed, free_port
from lbdns.testing.process import stop_process

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def redis_available() -> bool:
    return Path(REDIS_SERVER).exists()


def _wait_port(
    port: int, proc: subprocess.Popen, log: Path, since: int = 0, timeout: float = 5.0
) -> None:
    """Wait until the redis-server ``proc`` itself answers on ``port``: its ``INFO`` must give
    its own process id, so a server of another test that took the port is never mistaken for
    it (ports come from a bind-and-release probe, which another process can win). ``since``:
    where this start's lines begin in ``log``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = _tail(log, since)
            failed = PortTaken if bind_failed(text) else RuntimeError
            raise failed(f"redis-server exited with {proc.returncode}:\n{text}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"INFO server\r\n")
                reply = b""
                while b"process_id:" not in reply or not reply.endswith(b"\r\n\r\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    reply += chunk
                if f"process_id:{proc.pid}\r".encode() in reply:
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"redis-server on port {port} did not answer:\n{_tail(log)}")


def _tail(log: Path, since: int = 0) -> str:
    return log.read_bytes()[since:].decode(errors="replace")[-2000:] if log.exists() else ""


class _ServerProcess:
    """A ``redis-server`` process on ``port``, with the command line ``args()`` gives."""

    folder: Path
    port: int
    log_path: Path
    proc: subprocess.Popen | None

    def args(self) -> list[str]:
        raise NotImplementedError

    chosen_port = True  # the port came from free_port(), so another one may be tried

    def start(self):
        for attempt in range(5):
            since = self.log_path.stat().st_size if self.log_path.exists() else 0
            self.proc = subprocess.Popen(
                self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=self.folder
            )
            try:
                _wait_port(self.port, self.proc, self.log_path, since)
                return self
            except PortTaken:
                if not self.chosen_port or attempt == 4:
                    raise
                self.move_to(free_port())
        return self

    def move_to(self, port: int) -> None:
        self.port = port

    def kill(self) -> None:
        """SIGKILL: the way a crash looks to the clients."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


class RedisProcess(_ServerProcess):
    """One ``redis-server`` on 127.0.0.1. ``restart()`` keeps the port (and, if persistent, data).

    ``tls`` (a certificate and its key, the certificate also the CA) adds ``tls_port``, where
    clients must speak TLS; the plain port stays on for the readiness check. Redis binds both
    before it answers anyone, so the check on the plain port vouches for the TLS one too.
    """

    def __init__(
        self,
        folder: Path,
        port: int | None = None,
        persist: bool = False,
        tls: tuple[Path, Path] | None = None,
    ):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.chosen_port = port is None
        self.persist = persist
        self.tls = tls
        self.tls_port = free_port() if tls is not None else None
        self.proc: subprocess.Popen | None = None
        self.log_path = folder / f"redis-{self.port}.log"
        self.extra: list[str] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def tls_url(self) -> str:
        """The ``rediss://`` URL of the TLS port, trusting the test's certificate."""
        assert self.tls is not None
        return f"rediss://127.0.0.1:{self.tls_port}/0?ssl_ca_certs={self.tls[0]}"

    def move_to(self, port: int) -> None:
        self.port = port
        if self.tls is not None:
            self.tls_port = free_port()

    def args(self) -> list[str]:
        args = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.folder),
            "--logfile",
            str(self.log_path),
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
        ]
        if self.persist:
            # Every write is in the append-only file before the reply (what docs/cluster.md says
            # to run in production for API changes to survive a Redis restart).
            args += ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--save", "", "--appendonly", "no"]
        if self.tls is not None:
            cert, key = self.tls
            args += [
                "--tls-port", str(self.tls_port), "--tls-cert-file", str(cert),
                "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        return args + self.extra

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=5)

    def restart(self) -> RedisProcess:
        self.kill()
        self.chosen_port = False  # clients know this port: a restart must come back on it
        return self.start()

    def __enter__(self) -> RedisProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()


class SentinelProcess(_ServerProcess):
    """``redis-server --sentinel`` watching the primary named ``service``."""

    def __init__(self, folder: Path, primary_port: int, service: str = "lbdns", quorum: int = 1):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.monitor = f"{service} 127.0.0.1 {primary_port} {quorum}"
        self.service = service
        self.proc: subprocess.Popen | None = None
        self.move_to(free_port())

    def move_to(self, port: int) -> None:
        # The port is in the config file (which the sentinel then keeps its own state in): a
        # new port before the first start is a new file.
        self.port = port
        self.conf = self.folder / f"sentinel-{port}.conf"
        self.log_path = self.folder / f"sentinel-{port}.log"
        service = self.service
        self.conf.write_text(
            f"port {port}\n"
            "bind 127.0.0.1\n"
            "protected-mode no\n"
            f"dir {self.folder}\n"
            f"logfile {self.log_path}\n"
            f"sentinel monitor {self.monitor}\n"
            f"sentinel down-after-milliseconds {service} 500\n"
            f"sentinel failover-timeout {service} 3000\n"
            f"sentinel parallel-syncs {service} 1\n"
        )

    def args(self) -> list[str]:
        return [REDIS_SERVER, str(self.conf), "--sentinel"]
