"""Counting established connections with an eBPF program on the kernel's TCP state changes.

A socket-diag dump (``NetlinkCounter``) walks the whole connection table and builds one record
per counted socket: about 10 ms of kernel time for 10,000 connections, every interval. Here the
kernel keeps the count itself: a small program attached to the ``sock:inet_sock_set_state``
tracepoint adds 1 to a counter when a TCP socket on one of the ports enters ESTABLISHED and
subtracts 1 when it leaves, and the agent reads the counters (one system call per port). A
second counter per port only grows: the connections accepted since the agent started, which the
agent reports as ``accepted`` (the servers' arrival-rate estimate uses it). The program is about
thirty instructions, assembled here; nothing is compiled and no library is needed.

What it needs: Linux with eBPF and the tracepoint (4.16+), ``CAP_BPF`` and ``CAP_PERFMON`` (or
root), and tracefs mounted (``/sys/kernel/tracing``), where the tracepoint's id and field
offsets are read. ``ConnectionCounter`` in ``measure.py`` falls back to netlink without them.

Sockets established before the program was attached are not in the counters, and the tracepoint
sees every network namespace of the host: so the counters are only ever differences, added to a
base that a socket-diag count of the agent's own namespace sets at start and again every
``recount`` seconds. A recount is applied only when no state change happened while it ran (the
counters did not move), so it cannot count a connection twice.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import re
import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from lbdns.errors import LbdnsError

TRACEFS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
EVENT = "events/sock/inet_sock_set_state"

# linux/bpf.h, linux/perf_event.h
BPF_MAP_CREATE, BPF_MAP_LOOKUP_ELEM, BPF_PROG_LOAD = 0, 1, 5
BPF_MAP_TYPE_ARRAY = 2
BPF_PROG_TYPE_TRACEPOINT = 5
BPF_FUNC_map_lookup_elem = 1
PERF_TYPE_TRACEPOINT = 2
PERF_SAMPLE_RAW = 1 << 10
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_SET_BPF = 0x40042408
PERF_FLAG_FD_CLOEXEC = 1 << 3
SYSCALLS = {"x86_64": (321, 298), "aarch64": (280, 241)}  # (bpf, perf_event_open)
IPPROTO_TCP = 6
TCP_ESTABLISHED = 1

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


class Unavailable(LbdnsError):
    """The eBPF counter cannot run here (and why)."""


class Counter(Protocol):
    def count(self) -> int: ...

    def close(self) -> None: ...


# -- a tiny assembler -------------------------------------------------------------------------

# Opcodes (linux/bpf_common.h, linux/bpf.h) and registers.
MOV64_REG, MOV64_IMM, ADD64_IMM = 0xBF, 0xB7, 0x07
LDX_H, LDX_W, STX_W = 0x69, 0x61, 0x63
LD_IMM64, ATOMIC_ADD_DW = 0x18, 0xDB  # BPF_STX | BPF_ATOMIC | BPF_DW with imm BPF_ADD
JEQ_IMM, JNE_IMM, JA, CALL, EXIT = 0x15, 0x55, 0x05, 0x85, 0x95
BPF_PSEUDO_MAP_FD = 1
R0, R1, R2, R3, R6, R7, R8, R10 = 0, 1, 2, 3, 6, 7, 8, 10


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


class Assembler:
    """Instructions with forward jumps to named labels, resolved by ``assemble``."""

    def __init__(self) -> None:
        self.items: list[tuple[str | None, bytes]] = []  # (label jumped to, instruction)
        self.labels: dict[str, int] = {}
        self.size = 0  # in 8-byte instruction slots

    def op(self, code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> None:
        self._add(None, _insn(code, dst, src, off, imm))

    def jump(self, code: int, dst: int, imm: int, label: str) -> None:
        self._add(label, _insn(code, dst, 0, 0, imm))

    def load_map(self, dst: int, map_fd: int) -> None:
        self._add(None, _insn(LD_IMM64, dst, BPF_PSEUDO_MAP_FD, 0, map_fd) + _insn(0))

    def label(self, name: str) -> None:
        self.labels[name] = self.size

    def _add(self, label: str | None, insn: bytes) -> None:
        self.items.append((label, insn))
        self.size += len(insn) // 8

    def assemble(self) -> bytes:
        out = bytearray()
        for label, insn in self.items:
            if label is not None:  # the offset counts the slots after the jump
                code, regs, _, imm = struct.unpack("<BBhi", insn)
                insn = struct.pack("<BBhi", code, regs, self.labels[label] - len(out) // 8 - 1, imm)
            out += insn
        return bytes(out)


def program(fields: dict[str, int], ports: Sequence[int], map_fd: int) -> bytes:
    """The tracepoint program: when a TCP socket whose local port is ``ports[i]`` enters
    ESTABLISHED, ``counters[i] += 1`` and ``counters[n + i] += 1`` (``n = len(ports)``: the
    second half only ever grows, it counts accepted connections); when it leaves,
    ``counters[i] -= 1``. ``fields`` are the offsets of the tracepoint's fields."""
    asm = Assembler()

    def add_to_counter() -> None:  # counters[r8] += r7, atomically
        asm.op(STX_W, R10, R8, -4)  # the key lives on the stack
        asm.op(MOV64_REG, R2, R10)
        asm.op(ADD64_IMM, R2, imm=-4)
        asm.load_map(R1, map_fd)
        asm.op(CALL, imm=BPF_FUNC_map_lookup_elem)
        asm.jump(JEQ_IMM, R0, 0, "exit")
        asm.op(ATOMIC_ADD_DW, R0, R7)

    asm.op(MOV64_REG, R6, R1)  # r6 = the tracepoint's record
    asm.op(LDX_H, R2, R6, fields["protocol"])
    asm.jump(JNE_IMM, R2, IPPROTO_TCP, "exit")
    asm.op(MOV64_IMM, R7, imm=1)  # r7: +1, entering ESTABLISHED
    asm.op(LDX_W, R3, R6, fields["newstate"])
    asm.jump(JEQ_IMM, R3, TCP_ESTABLISHED, "port")
    asm.op(MOV64_IMM, R7, imm=-1)  # or -1, leaving it
    asm.op(LDX_W, R3, R6, fields["oldstate"])
    asm.jump(JNE_IMM, R3, TCP_ESTABLISHED, "exit")
    asm.label("port")
    asm.op(LDX_H, R2, R6, fields["sport"])  # the local port, host order
    for index, port in enumerate(ports):
        asm.op(MOV64_IMM, R8, imm=index)
        asm.jump(JEQ_IMM, R2, port, "found")
    asm.jump(JA, 0, 0, "exit")  # not one of ours
    asm.label("found")
    add_to_counter()
    asm.jump(JNE_IMM, R7, 1, "exit")  # left ESTABLISHED: done
    asm.op(ADD64_IMM, R8, imm=len(ports))  # entered it: count an arrival too
    add_to_counter()
    asm.label("exit")
    asm.op(MOV64_IMM, R0, imm=0)
    asm.op(EXIT)
    return asm.assemble()


# -- system calls -----------------------------------------------------------------------------


def _numbers() -> tuple[int, int]:
    numbers = SYSCALLS.get(platform.machine())
    if numbers is None:
        raise Unavailable(f"no eBPF system call numbers for {platform.machine()}")
    return numbers


def _bpf(command: int, attr: ctypes.Array) -> int:
    result = _libc.syscall(_numbers()[0], command, ctypes.byref(attr), len(attr))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def tracepoint() -> tuple[int, dict[str, int]]:
    """The tracepoint's id and the offsets of the fields the program reads."""
    for root in TRACEFS:
        event = root / EVENT
        try:
            ident = int((event / "id").read_text())
            text = (event / "format").read_text()
        except (OSError, ValueError):
            continue
        fields = {}
        for name, offset, size in re.findall(
            r"field:[^;]*?\b(\w+);\s*offset:(\d+);\s*size:(\d+);", text
        ):
            fields[name] = (int(offset), int(size))
        wanted = {"protocol": 2, "sport": 2, "oldstate": 4, "newstate": 4}
        if all(fields.get(name, (0, 0))[1] == size for name, size in wanted.items()):
            return ident, {name: fields[name][0] for name in wanted}
        raise Unavailable(f"unexpected fields in {event / 'format'}")
    raise Unavailable(
        "the sock:inet_sock_set_state tracepoint is not readable "
        "(tracefs not mounted at /sys/kernel/tracing, or not root)"
    )


class EbpfCounter:
    """Established TCP connections on local ``ports``, counted by the kernel as they change.

    ``full`` counts them the slow way (a socket-diag dump); it sets the base at start and every
    ``recount_every`` seconds, and is closed with this counter. When the counter cannot start
    (``Unavailable``), ``full`` stays open, for the caller to count with.
    """

    name = "ebpf"

    def __init__(
        self,
        ports: Sequence[int],
        full: Counter,
        recount_every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.ports = tuple(ports)
        self.full = full
        self.recount_every = recount_every
        self.clock = clock
        self._fds: list[int] = []
        try:
            if not 1 <= len(self.ports) <= 64:
                raise Unavailable("the eBPF counter takes 1 to 64 ports")
            ident, fields = tracepoint()
            self._map = self._create_map(2 * len(self.ports))
            self._fds.append(self._map)
            prog = self._load(program(fields, self.ports, self._map))
            self._fds.append(prog)
            self._fds.append(self._attach(ident, prog))
        except Unavailable:
            self._unload()  # ``full`` stays the caller's: it may count without us
            raise
        except OSError as exc:
            self._unload()
            raise Unavailable(f"loading the eBPF program failed: {exc.strerror}") from None
        self._key = ctypes.c_uint32(0)
        self._value = ctypes.c_int64(0)
        self._lookup = (ctypes.c_char * 32)()
        self.base = 0
        self.recounted = 0.0
        self.recounts = 0
        try:
            self._sync(force=True)
        except OSError:
            self._unload()  # nothing will read the program
            raise

    @staticmethod
    def _create_map(entries: int) -> int:
        attr = (ctypes.c_char * 72)()
        struct.pack_into("=IIIII", attr, 0, BPF_MAP_TYPE_ARRAY, 4, 8, entries, 0)
        return _bpf(BPF_MAP_CREATE, attr)

    @staticmethod
    def _load(code: bytes) -> int:
        insns = ctypes.create_string_buffer(code, len(code))
        license = ctypes.create_string_buffer(b"GPL")
        log = ctypes.create_string_buffer(16384)
        attr = (ctypes.c_char * 128)()
        struct.pack_into(
            "=IIQQIIQII16s",
            attr,
            0,
            BPF_PROG_TYPE_TRACEPOINT,
            len(code) // 8,
            ctypes.addressof(insns),
            ctypes.addressof(license),
            1,
            len(log),
            ctypes.addressof(log),
            0,
            0,
            b"lbdns_conns",
        )
        try:
            return _bpf(BPF_PROG_LOAD, attr)
        except OSError as exc:
            detail = log.value.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise OSError(exc.errno, f"{exc.strerror} {detail[0]}".strip()) from None

    @staticmethod
    def _attach(ident: int, prog: int) -> int:
        attr = (ctypes.c_char * 128)()
        # type, size, config, sample_period, sample_type; wakeup_events at 48
        struct.pack_into("=IIQQQ", attr, 0, PERF_TYPE_TRACEPOINT, 128, ident, 1, PERF_SAMPLE_RAW)
        struct.pack_into("=I", attr, 48, 1)
        fd = _libc.syscall(_numbers()[1], ctypes.byref(attr), -1, 0, -1, PERF_FLAG_FD_CLOEXEC)
        if fd < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        for request, argument in ((PERF_EVENT_IOC_SET_BPF, prog), (PERF_EVENT_IOC_ENABLE, 0)):
            if _libc.ioctl(fd, request, argument) < 0:
                code = ctypes.get_errno()
                os.close(fd)
                raise OSError(code, os.strerror(code))
        return fd

    def _changes(self, first: int = 0) -> int:
        """The sum of the counters: state changes on our ports since the program started
        (``first=len(ports)``: the entries into ESTABLISHED only)."""
        total = 0
        attr = self._lookup
        for index in range(first, first + len(self.ports)):
            self._key.value = index
            struct.pack_into(
                "=I4xQQ",
                attr,
                0,
                self._map,
                ctypes.addressof(self._key),
                ctypes.addressof(self._value),
            )
            _bpf(BPF_MAP_LOOKUP_ELEM, attr)
            total += self._value.value
        return total

    def _sync(self, force: bool = False) -> None:
        for _ in range(3 if force else 1):
            before = self._changes()
            counted = self.full.count()
            if self._changes() == before:  # nothing changed while the table was walked
                self.base = counted - before
                break
            if force:  # a busy start: take it and let the next recount settle it
                self.base = counted - before
        self.recounted = self.clock()
        self.recounts += 1

    def count(self) -> int:
        if self.clock() - self.recounted >= self.recount_every:
            self._sync()
        return max(0, self.base + self._changes())

    def accepted(self) -> int:
        """Connections that entered ESTABLISHED on our ports since the counter started: the
        ``accepted`` metric, from which the servers learn the farm's arrival rate."""
        return self._changes(len(self.ports))

    def close(self) -> None:
        """Detach the program (closing its descriptors unloads it) and close ``full``."""
        self._unload()
        self.full.close()

    def _unload(self) -> None:
        for fd in reversed(self._fds):
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []
