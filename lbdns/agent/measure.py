"""Host measurements: established connections, CPU, load average, memory.

Everything here is synchronous and reads the kernel's own counters, so one measurement costs a
few system calls. Connections are counted with the kernel's socket-diagnostics netlink interface
(the one ``ss`` uses): the kernel filters by state and local port and sends only the matching
sockets, which on a host with 10,000 connections is about 5 times cheaper than generating and
parsing ``/proc/net/tcp`` (see benchmarks/agent_cost.py). What remains is the kernel's: a walk of
its whole established-socket table and one record built per matching socket (docs/agent.md,
"Cost"). ``/proc/net/tcp`` and ``tcp6`` remain as the fallback where netlink is not allowed.
"""

from __future__ import annotations

import array
import logging
import math
import os
import re
import socket
import struct
from collections.abc import Sequence

from lbdns.agent import ebpf
from lbdns.agent.ebpf import EbpfCounter

log = logging.getLogger("lbdns.agent")

# linux/netlink.h, linux/sock_diag.h, linux/inet_diag.h
NETLINK_SOCK_DIAG = 4
TCPDIAG_GETSOCK = 18
NLM_F_MULTI = 0x2
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_BC_JMP = 1
INET_DIAG_BC_S_GE = 2
INET_DIAG_BC_S_LE = 3
INET_DIAG_NOCOOKIE = 0xFFFFFFFF
TCP_ESTABLISHED = 1

METHODS = ("auto", "ebpf", "netlink", "proc")


def port_filter(ports: Sequence[int]) -> bytes:
    """Socket-diag bytecode accepting sockets whose local port is one of ``ports``.

    Each port is a 16-byte test (port >= p and port <= p) that on failure jumps 4 bytes past its
    own end. Tests are chained as ``a || rest``: a JMP after ``a`` skips over ``rest`` to the end
    (accept), and ``a`` failing lands on ``rest``. The last test failing jumps past the end of the
    program (reject). Every op also moves sequentially on "yes", which the kernel's validator
    requires to find each jump target.
    """
    code = b""
    for port in reversed(ports):
        test = struct.pack(
            "=BBHBBHBBHBBH",
            INET_DIAG_BC_S_GE, 8, 20, 0, 0, port,
            INET_DIAG_BC_S_LE, 8, 12, 0, 0, port,
        )  # fmt: skip
        if code:
            code = test + struct.pack("=BBH", INET_DIAG_BC_JMP, 4, len(code) + 4) + code
        else:
            code = test
    return code


class NetlinkCounter:
    """Counts established TCP sockets on local ``ports`` through NETLINK_SOCK_DIAG.

    The request is the original ``TCPDIAG_GETSOCK`` form, whose dump covers IPv4 and IPv6 sockets
    (including IPv4-mapped ones) in one walk of the kernel's connection table: walking that table
    is a fixed cost per dump, so one walk instead of two halves it.
    """

    name = "netlink"

    def __init__(self, ports: Sequence[int]):
        self.ports = tuple(ports)
        bytecode = port_filter(self.ports)
        # struct inet_diag_req: family, src_len, dst_len, ext, sockid (48 bytes), states, dbs
        request = struct.pack(
            "=BBBB4x16s16sIIIII",
            socket.AF_UNSPEC, 0, 0, 0,
            b"", b"", 0, INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE,
            1 << TCP_ESTABLISHED, 0,
        )  # fmt: skip
        attr = struct.pack("=HH", 4 + len(bytecode), INET_DIAG_REQ_BYTECODE) + bytecode
        self._payload = request + attr
        self._sock: socket.socket | None = None
        self._seq = 0
        self._buf = bytearray(64 * 1024)
        self._view = memoryview(self._buf)
        self._row = array.array("I")  # the expected length column of a uniform buffer

    def _socket(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
            sock.settimeout(2.0)
            self._sock = sock
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def count(self) -> int:
        try:
            return self._dump()
        except BaseException:
            # A dump cut short leaves messages queued on the socket; start afresh next time.
            self.close()
            raise

    def _dump(self) -> int:
        sock = self._socket()
        self._seq = seq = (self._seq + 1) & 0xFFFFFFFF
        header = struct.pack(
            "=IHHII", 16 + len(self._payload), TCPDIAG_GETSOCK, NLM_F_REQUEST | NLM_F_DUMP, seq, 0
        )
        sock.sendto(header + self._payload, (0, 0))
        buf = self._buf
        unpack = struct.unpack_from
        count = 0
        while True:
            size = sock.recv_into(buf)
            fast = self._count_uniform(size, seq)
            if fast:
                count += fast
                continue
            offset = 0
            while offset + 16 <= size:
                length, kind, _flags, msg_seq = unpack("=IHHI", buf, offset)
                if length < 16:
                    raise OSError("malformed netlink message")
                if msg_seq == seq:
                    if kind == TCPDIAG_GETSOCK:
                        count += 1
                    elif kind == NLMSG_DONE:
                        return count
                    elif kind == NLMSG_ERROR:
                        (error,) = unpack("=i", buf, offset + 16)
                        if error:
                            raise OSError(-error, os.strerror(-error))
                offset += (length + 3) & ~3

    def _count_uniform(self, size: int, seq: int) -> int:
        """The number of socket messages in a buffer where all are of one length, else 0.

        A dump's buffers are nearly always a run of equal-sized socket messages. Offsets follow
        from lengths, so one comparison of the length column (a strided view against a row of
        equal numbers, done in C) proves the layout; the kernel never mixes another dump or a
        DONE (20 bytes) into such a run, and the first and last messages are checked for type
        and sequence all the same.
        """
        if size < 16:
            return 0
        unpack = struct.unpack_from
        length, kind, _flags, msg_seq = unpack("=IHHI", self._buf, 0)
        if length < 16 or length % 4 or size % length or kind != TCPDIAG_GETSOCK or msg_seq != seq:
            return 0
        _length, kind, _flags, msg_seq = unpack("=IHHI", self._buf, size - length)
        if kind != TCPDIAG_GETSOCK or msg_seq != seq:
            return 0
        n = size // length
        if len(self._row) != n or self._row[0] != length:
            self._row = array.array("I", [length]) * n
        if self._view[:size].cast("I")[:: length // 4] != self._row:
            return 0
        return n


class ProcCounter:
    """Counts established TCP sockets on local ``ports`` from /proc/net/tcp and tcp6."""

    name = "proc"

    def __init__(self, ports: Sequence[int], root: str = "/proc/net"):
        self.ports = tuple(ports)
        hex_ports = b"|".join(b"%04X" % port for port in self.ports)
        # A line is "sl: local_addr:port remote_addr:port st ...": a local port is the only
        # ":XXXX " followed by a remote address, a port and the state.
        self._patterns = [
            (f"{root}/tcp", re.compile(rb":(?:%s) [0-9A-F]{8}:[0-9A-F]{4} 01 " % hex_ports)),
            (f"{root}/tcp6", re.compile(rb":(?:%s) [0-9A-F]{32}:[0-9A-F]{4} 01 " % hex_ports)),
        ]

    def count(self) -> int:
        total = 0
        for path, pattern in self._patterns:
            try:
                data = _read(path)
            except FileNotFoundError:
                continue  # no IPv6 in this kernel
            total += len(pattern.findall(data))
        return total

    def close(self) -> None:
        pass


def _read(path: str, chunk: int = 1 << 20) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        parts = []
        while True:
            data = os.read(fd, chunk)
            if not data:
                return b"".join(parts)
            parts.append(data)
    finally:
        os.close(fd)


def connection_counter(ports: Sequence[int], method: str = "auto", recount: float = 60.0):
    """A counter by ``method``.

    ``auto`` is eBPF where the agent may load it (``lbdns.agent.ebpf``), else netlink where the
    kernel allows it, else /proc. ``ebpf`` raises ``ebpf.Unavailable`` when it cannot run.
    """
    if method == "proc":
        return ProcCounter(ports)
    if method == "netlink":
        return NetlinkCounter(ports)
    full = _netlink_or_proc(ports)
    try:
        return EbpfCounter(ports, full, recount)
    except ebpf.Unavailable as exc:
        if method == "ebpf":
            full.close()
            raise
        log.info("eBPF connection counting unavailable: %s", exc)
        return full


def _netlink_or_proc(ports: Sequence[int]):
    counter = NetlinkCounter(ports)
    try:
        counter.count()
        return counter
    except OSError as exc:
        counter.close()
        log.warning("netlink socket diagnostics unavailable (%s); reading /proc/net/tcp", exc)
        return ProcCounter(ports)


class CpuMeter:
    """CPU utilisation of the whole host (0..1), as an exponential moving average over time.

    ``window`` is the time constant in seconds: a step change in load shows about 63% after one
    window. The first call averages since boot, which is a fair starting point.
    """

    def __init__(self, window: float = 10.0, path: str = "/proc/stat"):
        self.window = window
        self.path = path
        self._last: tuple[int, int] | None = None  # (busy, total) jiffies
        self.value: float | None = None

    def _read(self) -> tuple[int, int]:
        with open(self.path, "rb") as f:
            fields = f.readline().split()
        # user nice system idle iowait irq softirq steal (guest time is inside user already)
        values = [int(x) for x in fields[1:9]]
        total = sum(values)
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return total - idle, total

    def sample(self) -> float:
        busy, total = self._read()
        if self._last is None:
            self._last = (busy, total)
            self.value = busy / total if total else 0.0
            return self.value
        d_busy, d_total = busy - self._last[0], total - self._last[1]
        if d_total <= 0:
            return self.value or 0.0
        self._last = (busy, total)
        current = min(1.0, max(0.0, d_busy / d_total))
        # Weight by the time covered (jiffies are per CPU; divide by the CPU count).
        seconds = d_total / (os.sysconf("SC_CLK_TCK") * (os.cpu_count() or 1))
        alpha = 1.0 - math.exp(-seconds / self.window) if self.window > 0 else 1.0
        previous = self.value if self.value is not None else current
        self.value = previous + alpha * (current - previous)
        return self.value


def load_average(path: str = "/proc/loadavg") -> float:
    with open(path, "rb") as f:
        return float(f.read().split(None, 1)[0])


def memory_used(path: str = "/proc/meminfo") -> float:
    """The fraction of memory in use (1 - MemAvailable / MemTotal)."""
    total = available = None
    with open(path, "rb") as f:
        for line in f:
            if line.startswith(b"MemTotal:"):
                total = int(line.split()[1])
            elif line.startswith(b"MemAvailable:"):
                available = int(line.split()[1])
            if total is not None and available is not None:
                break
    if not total or available is None:
        return 0.0
    return max(0.0, min(1.0, 1.0 - available / total))
