"""A backend for health-check tests: a real TCP/HTTP/TLS listener whose behaviour the test
sets while it runs.

Modes: ``ok`` (HTTP 200, body "ok"), ``error`` (HTTP 500), ``hang`` (accepts, then never reads
nor answers: a hung application; with TLS, not even the handshake). ``stop()`` closes the
listening socket, so connections are refused, and ``start()`` opens it again on the same port.
``deny`` holds source addresses whose connections are reset as soon as they are accepted (a
firewall that lets one lbdns server through and not the other). The kernel completes the
handshake before the accept, so a ``tcp`` check from a denied address may still pass: use an
``http`` (or ``tls``) check with ``deny``.

One thread accepts, one thread per connection answers: test-sized, not a benchmark server.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import struct
import subprocess
import threading
from pathlib import Path

RESPONSES = {
    "ok": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    "error": b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n"
    b"Connection: close\r\n\r\nfail",
}


def make_certificate(folder: Path, name: str = "backend.test") -> tuple[Path, Path]:
    """A self-signed certificate and key for ``name`` (the ``openssl`` command line tool)."""
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        + ["-nodes", "-days", "1", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


class Backend:
    """A listener on ``host``:``port`` (0: a free port, kept across stop and start)."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, tls: tuple[Path, Path] | None = None
    ):
        self.host = host
        self.port = port
        self.mode = "ok"
        self.deny: set[str] = set()
        self.accepted = 0  # connections accepted (denied ones included)
        self.peers: list[str] = []  # source address of each accepted connection
        self._context: ssl.SSLContext | None = None
        if tls is not None:
            self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._context.load_cert_chain(str(tls[0]), str(tls[1]))
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> Backend:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        self._sock = sock
        self._stop.clear()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listener (connections are refused from now on) and every held connection."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        with self._lock:
            for conn in self._held:
                with contextlib.suppress(OSError):
                    conn.close()
            self._held.clear()

    def __enter__(self) -> Backend:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _accept(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stop.is_set():
            ready, _, _ = select.select([sock], [], [], 0.05)
            if not ready:
                continue
            try:
                conn, peer = sock.accept()
            except OSError:
                continue
            with self._lock:
                self.accepted += 1
                self.peers.append(peer[0])
            if peer[0] in self.deny:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                continue
            if self.mode == "hang":
                with self._lock:
                    self._held.append(conn)
                continue
            threading.Thread(target=self._answer, args=(conn, self.mode), daemon=True).start()

    def _answer(self, conn: socket.socket, mode: str) -> None:
        try:
            conn.settimeout(2.0)
            if self._context is not None:
                conn = self._context.wrap_socket(conn, server_side=True)
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 16384:
                chunk = conn.recv(4096)
                if not chunk:
                    return  # a TCP or TLS check: connected and gone
                data += chunk
            conn.sendall(RESPONSES[mode])
        except (OSError, ssl.SSLError):
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def count_from(self, source: str) -> int:
        with self._lock:
            return sum(1 for peer in self.peers if peer == source)
