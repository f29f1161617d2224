"""One probe of one address: connect (tcp), handshake (tls), or ask (http, https).

Plain TCP and HTTP checks are an ``Attempt``: a non-blocking socket in the prober's own epoll
set (``Poller``), without a task, a future or a stream (at a thousand hosts every two
seconds those would cost more than the probe: benchmarks/probe_cost.py). TLS and HTTPS are a
coroutine over asyncio's TLS streams (``probe``). A TCP check, and an HTTP check once its
response is judged, closes with a reset (SO_LINGER 0, as HAProxy does), so neither end keeps a
TIME_WAIT per probe and the check leaves nothing to read. TLS certificates are not verified: a
check asks whether the listener answers, not who it is (the addresses come from the zone file).

Every function returns ``(ok, error)``; the caller times it and bounds it with the check's
timeout.
"""

from __future__ import annotations

import _socket
import asyncio
import errno
import os
import select
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable

from lbdns.zone.model import CheckSpec

HEADER_LIMIT = 16 * 1024
BODY_LIMIT = 64 * 1024
_LINGER_RESET = struct.pack("ii", 1, 0)
_STREAM_NONBLOCK = _socket.SOCK_STREAM | _socket.SOCK_NONBLOCK | _socket.SOCK_CLOEXEC
# Level-triggered: an error or hang-up is reported with either, and the attempt reads it.
_WRITABLE = select.EPOLLOUT
_READABLE = select.EPOLLIN | select.EPOLLRDHUP


def client_context() -> ssl.SSLContext:
    """The TLS context of https and tls checks: any certificate, TLS 1.2 or later."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def http_request(check: CheckSpec, address: str) -> bytes:
    host = check.host_header or (f"[{address}]" if ":" in address else address)
    return (
        f"GET {check.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: lbdns-check\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    ).encode()


async def probe(
    check: CheckSpec,
    address: str,
    source: str | None,
    context: ssl.SSLContext | None,
) -> tuple[bool, str | None]:
    """Probe ``address`` once as ``check`` says; ``source`` is the local address to bind."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    writer: asyncio.StreamWriter | None = None
    try:
        sock.setblocking(False)
        if source is not None:
            sock.bind((source, 0))
        try:
            await loop.sock_connect(sock, (address, check.target_port))
        except OSError as exc:
            return False, _error(exc)
        kind = check.type
        if kind == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            return True, None
        if kind == "http":
            await loop.sock_sendall(sock, http_request(check, address))
            return await read_response(check, lambda n: loop.sock_recv(sock, n))
        # tls and https: the handshake over the connected socket.
        try:
            reader, writer = await asyncio.open_connection(
                sock=sock,
                ssl=context or client_context(),
                server_hostname=check.host_header or "",
                # The caller's timeout ends a hung handshake ("timeout after ..."); asyncio's own
                # must not race it with another message.
                ssl_handshake_timeout=check.timeout + 1.0,
            )
        except (OSError, ssl.SSLError) as exc:
            return False, f"TLS handshake: {_error(exc)}"
        if kind == "tls":
            return True, None
        writer.write(http_request(check, address))
        await writer.drain()
        return await read_response(check, reader.read)
    except ConnectionError as exc:
        return False, _error(exc)
    except OSError as exc:
        return False, _error(exc)
    finally:
        if writer is not None:
            writer.transport.abort()
        sock.close()


class ResponseJudge:
    """An HTTP response fed as it arrives: ``feed`` returns the verdict ``(ok, error)`` once it
    is known (after the head, or after the body for ``expect_body``), else None; ``eof`` gives
    it when the server closed first."""

    __slots__ = ("check", "data", "head_done", "body", "limit", "chunked")

    def __init__(self, check: CheckSpec):
        self.check = check
        self.data = b""
        self.head_done = False
        self.body = b""
        self.limit = BODY_LIMIT
        self.chunked = False

    def feed(self, chunk: bytes) -> tuple[bool, str | None] | None:
        if self.head_done:
            self.body += chunk
            return self._judge_body() if len(self.body) >= self.limit else None
        self.data += chunk
        if b"\r\n\r\n" not in self.data:
            if len(self.data) > HEADER_LIMIT:
                return False, "response head over 16 KiB"
            return None
        head, _, body = self.data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.split(b"\r\n")
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            return False, f"not an HTTP response: {status_line[:40]!r}"
        status = int(parts[1])
        expected = self.check.expect_status
        if (status not in expected) if expected else not 200 <= status < 400:
            return False, f"status {status}"
        if self.check.expect_body is None:
            return True, None
        self.head_done = True
        for line in header_lines:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length" and value.isdigit():
                self.limit = min(int(value), BODY_LIMIT)
            elif name == b"transfer-encoding" and value == b"chunked":
                self.chunked = True
        self.body = body
        return self._judge_body() if len(self.body) >= self.limit else None

    def eof(self) -> tuple[bool, str | None]:
        if not self.head_done:
            return False, "connection closed before a response" if not self.data else "truncated"
        return self._judge_body()

    def _judge_body(self) -> tuple[bool, str | None]:
        body = dechunk(self.body) if self.chunked else self.body
        assert self.check.expect_body is not None
        if self.check.expect_body.encode() not in body[:BODY_LIMIT]:
            return False, f"body lacks {self.check.expect_body[:40]!r}"
        return True, None


async def read_response(
    check: CheckSpec, recv: Callable[[int], Awaitable[bytes]]
) -> tuple[bool, str | None]:
    """Read an HTTP response's head (and, for ``expect_body``, its body) and judge it."""
    judge = ResponseJudge(check)
    while True:
        chunk = await recv(65536)
        if not chunk:
            return judge.eof()
        verdict = judge.feed(chunk)
        if verdict is not None:
            return verdict


class Poller:
    """One epoll set for every plain tcp and http attempt, watched by the event loop as a single
    reader. asyncio's ``add_writer``/``remove_writer`` cost a handle, a selector key and two
    system calls per probe; here an attempt's socket is registered once in C, switched from
    "writable" to "readable" with one ``modify``, and leaves the set when it is closed."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.epoll = select.epoll()
        self.attempts: dict[int, Attempt] = {}
        loop.add_reader(self.epoll.fileno(), self._ready)

    def _ready(self) -> None:
        attempts = self.attempts
        for fd, events in self.epoll.poll(0):
            attempt = attempts.get(fd)
            if attempt is not None:
                attempt.ready(events)

    def watch(self, fd: int, events: int, attempt: Attempt) -> None:
        self.epoll.register(fd, events)
        self.attempts[fd] = attempt

    def change(self, fd: int, events: int) -> None:
        self.epoll.modify(fd, events)

    def forget(self, fd: int) -> None:
        # No unregister: closing the socket, which follows at once, takes it out of the set.
        del self.attempts[fd]

    def close(self) -> None:
        self.loop.remove_reader(self.epoll.fileno())
        self.epoll.close()


class Attempt:
    """One plain tcp or http probe driven by the ``Poller``: no task, no future, no stream (the
    cheap path; tls and https use ``probe``). ``done(attempt, ok, error)`` is called exactly
    once, after the socket is closed. The caller enforces the timeout (``timed_out``).

    The socket is the C ``_socket.socket`` made non-blocking at creation: the Python wrapper's
    bookkeeping and an ioctl per probe are a good part of a loopback probe's cost."""

    __slots__ = (
        "poller",
        "check",
        "address",
        "done",
        "context",
        "sock",
        "fd",
        "judge",
        "finished",
    )

    def __init__(
        self,
        poller: Poller,
        check: CheckSpec,
        address: str,
        done: Callable[[Attempt, bool, str | None], None],
        context: object = None,
    ):
        self.poller = poller
        self.check = check
        self.address = address
        self.done = done
        self.context = context  # the caller's, handed back with the result
        self.sock: _socket.socket | None = None
        self.fd = -1  # >= 0 while the poller watches the socket
        self.judge: ResponseJudge | None = None  # set once the http request is sent
        self.finished = False

    def start(self, source: str | None) -> None:
        address = self.address
        try:
            sock = self.sock = _socket.socket(
                _socket.AF_INET6 if ":" in address else _socket.AF_INET, _STREAM_NONBLOCK
            )
            if source is not None:
                sock.bind((source, 0))
            code = sock.connect_ex((address, self.check.target_port))
        except OSError as exc:
            self.finish(False, _error(exc))
            return
        if code and code != errno.EINPROGRESS:
            self.finish(False, _errno_text(code))
            return
        fd = sock.fileno()
        self.poller.watch(fd, _WRITABLE, self)
        self.fd = fd

    def ready(self, events: int) -> None:
        if self.judge is None:
            self._connected()
        else:
            self._readable()

    def _connected(self) -> None:
        sock = self.sock
        assert sock is not None
        code = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
        if code:
            self.finish(False, _errno_text(code))
            return
        if self.check.type == "tcp":
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_LINGER, _LINGER_RESET)
            self.finish(True, None)
            return
        request = http_request(self.check, self.address)
        try:
            sent = sock.send(request)
        except OSError as exc:
            self.finish(False, _error(exc))
            return
        if sent != len(request):  # a few hundred bytes into an empty socket buffer
            self.finish(False, "could not send the request")
            return
        self.judge = ResponseJudge(self.check)
        self.poller.change(self.fd, _READABLE)

    def _readable(self) -> None:
        sock, judge = self.sock, self.judge
        assert sock is not None and judge is not None
        try:
            chunk = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.finish(False, _error(exc))
            return
        verdict = judge.feed(chunk) if chunk else judge.eof()
        if verdict is not None:
            # Closed with a reset, as a tcp check is: the verdict is in, and a FIN exchange
            # would cost both ends more kernel work (and this end a TIME_WAIT) for nothing.
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_LINGER, _LINGER_RESET)
            self.finish(*verdict)

    def timed_out(self) -> None:
        """The caller's clock says the check's timeout is over (the prober keeps one heap of
        deadlines for all attempts rather than a loop timer each)."""
        self.finish(False, f"timeout after {self.check.timeout:g} s")

    def cancel(self) -> None:
        """Stop without calling ``done`` (the prober is closing)."""
        self.done = _ignore
        self.finish(False, "cancelled")

    def finish(self, ok: bool, error: str | None) -> None:
        if self.finished:
            return
        self.finished = True
        if self.fd >= 0:
            self.poller.forget(self.fd)
            self.fd = -1
        if self.sock is not None:
            self.sock.close()
        self.done(self, ok, error)


def _ignore(attempt: Attempt, ok: bool, error: str | None) -> None:
    pass


def _errno_text(code: int) -> str:
    if code == errno.ECONNREFUSED:
        return "connection refused"
    if code == errno.ECONNRESET:
        return "connection reset"
    return os.strerror(code).lower()


def dechunk(data: bytes) -> bytes:
    """The payload of a chunked body (as much of it as arrived)."""
    out = []
    while data:
        size_line, sep, rest = data.partition(b"\r\n")
        if not sep:
            break
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out.append(rest[:size])
        data = rest[size + 2 :]
    return b"".join(out)


def _error(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
