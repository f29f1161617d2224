"""DNS transports: UDP and TCP listeners that only frame bytes and hand them to the answerer.

UDP reads a non-blocking socket straight from the event loop's reader callback and drains it in
batches: no transport object, no task or future per packet (each would add system calls and
allocations to every query). On 64-bit Linux a batch is one ``recvmmsg`` and its answers one
``sendmmsg`` (``lbdns.udpbatch``); elsewhere, or with ``udp_batch: false``, one ``recvfrom`` and
one ``sendto`` per datagram. Either way the answers of a batch are sent together once it is read:
back to back, they wake a client waiting on the other CPU once per batch instead of once per
answer, and that wake-up is the dearest part of a send on a busy server (docs/performance.md).
Where the extension ``_udpfast`` was built at install (``udp_compiled``, the default), that batch
loop runs in C and answers repeated queries from the answerer's cache itself; the Python loop
below is the same loop, used where it was not built or with ``udp_compiled: false``.

TCP (RFC 7766) accepts pipelined queries, answers each as soon as it is read, and closes idle
connections; caps bound how many are open at once, per client address, per network and in all
(``TcpLimits``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter

from lbdns.dnsserver import udpbatch
from lbdns.dnsserver.latency import LatencyHistogram

try:  # the same batch loop compiled (lbdns/dnsserver/_udpfast.c); optional at install time
    from lbdns.dnsserver import _udpfast
except ImportError:  # pragma: no cover - built wherever a C compiler was found
    _udpfast = None

log = logging.getLogger("lbdns.dns")

Respond = Callable[[bytes, str, bool], "bytes | None"]
UdpCache = Callable[[], "tuple | None"]  # Answerer.udp_cache

UDP_BATCH = 64  # datagrams read per readiness event before yielding to the loop
UDP_RCVBUF = 4 * 1024 * 1024  # the default 208 KiB drops bursts of queries
MAX_TCP_MESSAGE = 65535
# Receive errors that concern one earlier datagram (ICMP surfacing on the socket), not the socket.
_TRANSIENT = frozenset((errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH))


@dataclass
class TransportStats:
    udp_queries: int = 0
    udp_send_errors: int = 0
    tcp_queries: int = 0
    tcp_connections: int = 0
    tcp_refused: int = 0  # refused for the client's address or network (the two below)
    tcp_refused_address: int = 0
    tcp_refused_prefix: int = 0
    tcp_evicted: int = 0  # least recently active connections closed at the global cap
    tcp_timeouts: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)  # sampled, see latency.py


def parse_address(text: str, default_port: int) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT``, ``HOST`` or ``:PORT`` to (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    elif text.count(":") > 1:
        host, port = text, ""  # a bare IPv6 address
    else:
        host, port = text, ""
    if not port:
        return host or "0.0.0.0", default_port
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"bad port in {text!r}")
    return host or "0.0.0.0", int(port)


def bind_udp(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A non-blocking UDP socket bound to (host, port); with ``reuse_port`` other processes of
    the same user may bind the same address and the kernel spreads datagrams over them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
            if option is None:
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, UDP_RCVBUF)
                break
            except OSError:
                continue
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def bind_tcp(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class UdpListener:
    """Serves one bound UDP socket from the loop's reader callback.

    With ``batch`` (the default where the platform has them) datagrams are read and answered
    with one ``recvmmsg`` and one ``sendmmsg`` per batch (``lbdns.udpbatch``); otherwise with one
    ``recvfrom`` and one ``sendto`` each. With ``compiled`` too, and where the extension was
    built, that batch loop runs in C (``_udpfast``) and, given ``cache``, answers repeated
    queries from the answerer's cache itself; ``kind`` says which loop serves.
    """

    def __init__(
        self,
        sock: socket.socket,
        respond: Respond,
        stats: TransportStats,
        batch: bool = True,
        compiled: bool = True,
        cache: UdpCache | None = None,
    ):
        self.sock = sock
        self.respond = respond
        self.stats = stats
        self.cache = cache
        self.loop: asyncio.AbstractEventLoop | None = None
        self._replies: list[tuple[bytes, tuple]] = []  # one batch's answers, reused
        self._sent: list[bytes] = []
        self._recv_errors = 0
        batch = batch and udpbatch.available()
        self.compiled = None
        if batch and compiled and _udpfast is not None:
            self.compiled = _udpfast.Batch(sock.fileno(), sock.family)
        self.batch = udpbatch.BatchSocket(sock) if batch and self.compiled is None else None
        self._not_built = batch and compiled and _udpfast is None

    @property
    def kind(self) -> str:
        """How this listener reads and answers: for the start-up log line."""
        if self.compiled is not None:
            return "batched, compiled loop"
        if self._not_built:  # asked for, but the install found no C compiler to build it
            return "batched, in Python: the compiled loop was not built at install"
        return "batched" if self.batch is not None else "one datagram per system call"

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        if self.compiled is not None:
            reader = self._readable_compiled
        else:
            reader = self._readable if self.batch is None else self._readable_batch
        loop.add_reader(self.sock.fileno(), reader)

    def _readable_compiled(self) -> None:
        try:
            n, unsent, first = self.compiled.serve(
                self.respond, None if self.cache is None else self.cache()
            )
        except OSError as exc:  # e.g. ICMP errors surfacing on the socket
            if exc.errno not in _TRANSIENT:
                self._receive_failed(exc)
            return  # the loop calls again while the socket stays readable
        if n:
            stats = self.stats
            stats.udp_queries += n
            stats.udp_send_errors += unsent
            stats.latency.observe(first)

    def _receive_failed(self, exc: OSError) -> None:
        self._recv_errors += 1
        if self._recv_errors & (self._recv_errors - 1) == 0:  # 1st, 2nd, 4th...
            log.warning("UDP receive failed (%d times): %s", self._recv_errors, exc)

    def _readable_batch(self) -> None:
        batch = self.batch
        assert batch is not None
        try:
            n = batch.receive()
        except OSError as exc:  # e.g. ICMP errors surfacing on the socket
            if exc.errno not in _TRANSIENT:
                self._receive_failed(exc)
            return  # the loop calls again while the socket stays readable
        if not n:
            return
        rx, tx = batch.rx, batch.tx
        received, answers = rx.view, tx.view  # answers: only where they are copied
        # Indexes into the rings' word views: see udpbatch.Ring.
        lengths, answer_iovecs, answer_names = rx.words, tx.iov_words, tx.pointers
        name_size, namelen = udpbatch.NAME, batch.namelen
        names_at = rx.names
        slot = udpbatch.DATA
        names = received[rx.name_offset : rx.name_offset + n * name_size].tobytes()
        clients = batch.clients
        respond = self.respond
        offset = udpbatch.ANSWER_OFFSET  # None: copied, where they cannot be sent in place
        sent = self._sent  # the answers the send ring points into, alive until they are sent
        j = 0
        for i in range(n):
            data = received[i * slot : i * slot + lengths[16 * i + 14]].tobytes()
            raw = names[i * name_size : i * name_size + namelen]
            client = clients.get(raw) or batch.client(raw)
            if i == 0:
                started = perf_counter()
                response = respond(data, client, False)
                self.stats.latency.observe(perf_counter() - started)
            else:
                response = respond(data, client, False)
            if response is None:
                continue
            if offset is not None:
                if response.__class__ is not bytes:  # a bytearray's octets are elsewhere
                    response = bytes(response)
                sent.append(response)
                answer_iovecs[2 * j] = id(response) + offset
            elif len(response) <= slot:
                answers[j * slot : j * slot + len(response)] = response
            else:  # not over UDP (answers are cut to 1232 bytes), but never lost
                try:
                    self.sock.sendto(response, batch.address(raw))
                except OSError:
                    self.stats.udp_send_errors += 1
                continue
            answer_iovecs[2 * j + 1] = len(response)
            answer_names[8 * j] = names_at + i * name_size  # back to where the query came from
            j += 1
        self.stats.udp_queries += n
        if j:
            self.stats.udp_send_errors += batch.send(j)
            sent.clear()

    def _readable(self) -> None:
        recvfrom = self.sock.recvfrom
        respond = self.respond
        replies = self._replies
        count = 0
        try:
            for _ in range(UDP_BATCH):
                try:
                    data, address = recvfrom(udpbatch.DATA)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:  # e.g. ICMP errors surfacing on the socket
                    if exc.errno in _TRANSIENT:
                        continue
                    self._receive_failed(exc)
                    break  # the loop calls again while the socket stays readable
                count += 1
                if count == 1:
                    started = perf_counter()
                    response = respond(data, address[0], False)
                    self.stats.latency.observe(perf_counter() - started)
                else:
                    response = respond(data, address[0], False)
                if response is not None:
                    replies.append((response, address))
        finally:
            self.stats.udp_queries += count
            if replies:
                sendto = self.sock.sendto
                for response, address in replies:
                    try:
                        sendto(response, address)
                    except OSError:
                        self.stats.udp_send_errors += 1  # full buffer or gone: UDP may drop
                replies.clear()

    def close(self) -> None:
        if self.loop is not None:
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


class TcpLimits:
    """The bounds of DNS over TCP (docs/dns.md, "Limits").

    ``max_connections`` is the global cap; ``max_per_address`` and ``max_per_prefix`` (a /24 of
    IPv4, a /56 of IPv6) keep one client, or one network, well below it (RFC 7766 6.2.2). Past
    ``busy`` of the cap the idle timeout shrinks with the room that is left (RFC 7766 6.2.3),
    and at the cap the least recently active connection is closed to take the new one, so a
    client holding idle connections cannot lock out a resolver retrying a TC=1 answer.
    """

    def __init__(
        self,
        idle_timeout: float = 10.0,
        max_connections: int = 1000,
        max_per_address: int = 64,
        max_per_prefix: int = 256,
        busy: float = 0.5,
    ):
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.max_per_prefix = max_per_prefix
        self.busy = busy
        self.min_idle_timeout = min(idle_timeout, 0.5)

    def idle_for(self, open_connections: int) -> float:
        """The idle timeout to arm with ``open_connections`` open."""
        start = self.busy * self.max_connections
        if open_connections <= start:
            return self.idle_timeout
        room = max(0.0, (self.max_connections - open_connections) / (self.max_connections - start))
        return max(self.min_idle_timeout, self.idle_timeout * room)


def client_prefix(address: str) -> str:
    """The network a client address counts against: its /24 (IPv4) or /56 (IPv6)."""
    if ":" not in address:
        return address.rpartition(".")[0]
    try:
        packed = socket.inet_pton(socket.AF_INET6, address.partition("%")[0])
    except OSError:
        return address
    if packed[:12] == b"\x00" * 10 + b"\xff\xff":  # IPv4-mapped: the IPv4 /24
        return socket.inet_ntop(socket.AF_INET, packed[12:]).rpartition(".")[0]
    return packed[:7].hex()


class TcpConnection(asyncio.Protocol):
    """One DNS-over-TCP connection: length-prefixed queries in, answers out as they are ready."""

    def __init__(self, server: TcpServer):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.client = ""
        self.prefix = ""
        self.counted = False  # counted in the server's per-address tables
        self.idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # asyncio or uvloop transport
        self.transport = transport
        server = self.server
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if peer else ""
        if not server.admit(self):
            transport.abort()
            return
        server.stats.tcp_connections += 1
        transport.set_write_buffer_limits(high=256 * 1024)
        self._arm()

    def _arm(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        loop = asyncio.get_running_loop()
        server = self.server
        self.idle = loop.call_later(server.limits.idle_for(len(server.connections)), self._timeout)

    def _timeout(self) -> None:
        self.server.stats.tcp_timeouts += 1
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        buffer = self.buffer
        respond = self.server.respond
        first = True
        while len(buffer) >= 2:
            length = (buffer[0] << 8) | buffer[1]
            if len(buffer) < 2 + length:
                break
            message = bytes(buffer[2 : 2 + length])
            del buffer[: 2 + length]
            self.server.stats.tcp_queries += 1
            if first:
                first = False
                started = perf_counter()
                response = respond(message, self.client, True)
                self.server.stats.latency.observe(perf_counter() - started)
            else:
                response = respond(message, self.client, True)
            if response is None:
                # A message we drop over TCP (no header, or a response): the stream cannot be
                # trusted any further (RFC 7766 says the server may close).
                self.transport.close()
                return
            self.transport.write(len(response).to_bytes(2, "big") + response)
        if not first:
            # Only whole messages count as activity: a client trickling a byte at a time
            # must not hold a connection open forever, nor stay out of eviction's way.
            self.server.touch(self)
            self._arm()

    def pause_writing(self) -> None:
        # The client is not reading its answers: stop reading its queries until it does.
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.idle is not None:
            self.idle.cancel()
        self.server.release(self)


class TcpServer:
    def __init__(self, respond: Respond, limits: TcpLimits, stats: TransportStats):
        self.respond = respond
        self.limits = limits
        self.stats = stats
        # Open connections, least recently active first (a dict keeps insertion order; a
        # completed query moves its connection to the end).
        self.connections: dict[TcpConnection, None] = {}
        self.per_address: dict[str, int] = {}
        self.per_prefix: dict[str, int] = {}
        self.servers: list[asyncio.AbstractServer] = []
        self._refusals = 0

    def admit(self, connection: TcpConnection) -> bool:
        """Count a new connection in, closing the least recently active one at the global cap;
        False (and counted) when its address or network already holds its share."""
        limits = self.limits
        client = connection.client
        prefix = client_prefix(client)
        if self.per_address.get(client, 0) >= limits.max_per_address:
            self.stats.tcp_refused_address += 1
            self._refused("address", client)
            return False
        if self.per_prefix.get(prefix, 0) >= limits.max_per_prefix:
            self.stats.tcp_refused_prefix += 1
            self._refused("network", client)
            return False
        while len(self.connections) >= limits.max_connections:
            oldest = next(iter(self.connections))
            self.release(oldest)
            self.stats.tcp_evicted += 1
            if oldest.transport is not None:
                oldest.transport.close()
        connection.prefix = prefix
        connection.counted = True
        self.connections[connection] = None
        self.per_address[client] = self.per_address.get(client, 0) + 1
        self.per_prefix[prefix] = self.per_prefix.get(prefix, 0) + 1
        return True

    def touch(self, connection: TcpConnection) -> None:
        if connection.counted:
            del self.connections[connection]
            self.connections[connection] = None

    def release(self, connection: TcpConnection) -> None:
        if not connection.counted:
            return
        connection.counted = False
        del self.connections[connection]
        for table, key in (
            (self.per_address, connection.client),
            (self.per_prefix, connection.prefix),
        ):
            left = table[key] - 1
            if left:
                table[key] = left
            else:
                del table[key]

    def _refused(self, what: str, client: str) -> None:
        self.stats.tcp_refused += 1
        self._refusals += 1
        if self._refusals & (self._refusals - 1) == 0:  # the 1st, 2nd, 4th... only
            log.warning(
                "TCP connection from %s refused: its %s holds its share of connections "
                "(%d refused so far)",
                client,
                what,
                self._refusals,
            )

    async def start(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: TcpConnection(self), sock=sock)
        self.servers.append(server)

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.close()
        for server in self.servers:
            await server.wait_closed()
