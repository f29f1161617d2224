"""UDP in batches: ``recvmmsg``/``sendmmsg`` (Linux) through ctypes.

One ``recvfrom`` plus one ``sendto`` per query costs two system calls, and in CPython each also
builds an address string (``inet_ntop``) on the way in and parses it back (``inet_pton``) on the
way out. Here one call reads up to ``SLOTS`` datagrams into a fixed ring of buffers, and one call
sends the batch's answers, each back to the raw ``sockaddr`` its query came from. Per datagram
what remains in Python is a slice of the ring and a dict lookup of the client's address string.
NSD and Knot read and write the same way.

The ring is a single ctypes buffer laid out as::

    data[SLOTS][DATA]   sockaddr[SLOTS][NAME]   iovec[SLOTS]   mmsghdr[SLOTS]

with every pointer filled in once; a call only reads lengths and writes answer lengths.
``available()`` says whether the platform has both calls and the LP64 ``struct mmsghdr`` layout
this module writes (64-bit Linux); elsewhere the listener reads one datagram at a time.

Answers are sent from where they are: on CPython an answer's ``iovec`` points into the ``bytes``
object itself (``ANSWER_OFFSET`` past its address, checked at import), which the listener holds
until ``sendmmsg`` returns, so no answer is copied into the ring. Where that check fails, answers
are copied into the send ring's slots.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import struct
import sys

SLOTS = 64  # datagrams per system call
DATA = 4096  # bytes per slot: a larger query is cut short (and then gets FORMERR)
NAME = 32  # bytes per sockaddr slot (sockaddr_in6 is 28)
IOVEC = 16  # struct iovec { void *base; size_t len; }
MMSGHDR = 64  # struct mmsghdr { struct msghdr (56 bytes); unsigned msg_len; }
MSG_DONTWAIT = 0x40
# struct msghdr: name, namelen, (pad), iov, iovlen, control, controllen, flags, (pad); msg_len
_HEADER = "=QI4xQQQQi4xI4x"
_CLIENTS_LIMIT = 65536  # sockaddr -> address string cache entries before starting over


def _functions():
    if not sys.platform.startswith("linux") or struct.calcsize("P") != 8:
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        recvmmsg, sendmmsg = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    recvmmsg.argtypes = [
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_void_p,
    ]
    recvmmsg.restype = ctypes.c_int
    sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    sendmmsg.restype = ctypes.c_int
    return recvmmsg, sendmmsg


_FUNCTIONS = _functions()


def _answer_offset() -> int | None:
    """Where a ``bytes`` object's octets start, past its address (``id``), on this
    interpreter; None when that cannot be relied on (then answers are copied)."""
    if sys.implementation.name != "cpython":
        return None
    offset = sys.getsizeof(b"") - 1  # the object's header; its octets end with a NUL
    probe = bytes(range(1, 200))
    try:
        if ctypes.string_at(id(probe) + offset, len(probe)) == probe:
            return offset
    except (OSError, ValueError):  # pragma: no cover - never on CPython
        pass
    return None  # pragma: no cover


ANSWER_OFFSET = _answer_offset()


def available() -> bool:
    return _FUNCTIONS is not None


class Ring:
    """``SLOTS`` message slots (data, sockaddr, iovec, mmsghdr) in one ctypes buffer."""

    def __init__(self, namelen: int):
        self.memory = (ctypes.c_char * (SLOTS * (DATA + NAME + IOVEC + MMSGHDR)))()
        base = ctypes.addressof(self.memory)
        self.name_offset = SLOTS * DATA
        iov_offset = self.name_offset + SLOTS * NAME
        header_offset = iov_offset + SLOTS * IOVEC
        view = memoryview(self.memory).cast("B")
        for i in range(SLOTS):
            struct.pack_into("=QQ", view, iov_offset + IOVEC * i, base + DATA * i, DATA)
            struct.pack_into(
                _HEADER,
                view,
                header_offset + MMSGHDR * i,
                base + self.name_offset + NAME * i,
                namelen,
                base + iov_offset + IOVEC * i,
                1,
                0,
                0,
                0,
                0,
            )
        self.view = view
        self.headers = base + header_offset
        self.names = base + self.name_offset
        self.words = view[header_offset:].cast("I")  # msg_len of slot i: [16 i + 14]
        self.pointers = view[header_offset:].cast("Q")  # msg_name of slot i: [8 i]
        self.iov_words = view[iov_offset:header_offset].cast("Q")  # iov_len of slot i: [2 i + 1]


class BatchSocket:
    """Reads and answers a non-blocking UDP socket ``SLOTS`` datagrams per system call."""

    def __init__(self, sock: socket.socket):
        if _FUNCTIONS is None:
            raise OSError(errno.ENOSYS, "recvmmsg/sendmmsg are not available here")
        self.sock = sock
        self.fd = sock.fileno()
        self.family = sock.family
        self.namelen = 28 if sock.family == socket.AF_INET6 else 16
        self.rx = Ring(self.namelen)
        self.tx = Ring(self.namelen)
        self.clients: dict[bytes, str] = {}  # raw sockaddr -> the client's address string

    def receive(self) -> int:
        """Read up to ``SLOTS`` datagrams; their count, 0 when none is waiting.

        Raises OSError for an error other than "nothing to read"."""
        n = _FUNCTIONS[0](self.fd, self.rx.headers, SLOTS, MSG_DONTWAIT, None)
        if n < 0:
            code = ctypes.get_errno()
            if code in (errno.EAGAIN, errno.EINTR):
                return 0
            raise OSError(code, os.strerror(code))
        return n

    def client(self, raw: bytes) -> str:
        """The address string of a raw sockaddr (the client key the answerer uses)."""
        client = self.clients.get(raw)
        if client is None:
            if len(self.clients) >= _CLIENTS_LIMIT:
                self.clients.clear()
            if self.family == socket.AF_INET6:
                client = socket.inet_ntop(socket.AF_INET6, raw[8:24])
            else:
                client = socket.inet_ntop(socket.AF_INET, raw[4:8])
            self.clients[raw] = client
        return client

    def address(self, raw: bytes) -> tuple:
        """The sockaddr as the tuple ``sendto`` takes (for an answer too large for a slot)."""
        port = int.from_bytes(raw[2:4], "big")
        if self.family == socket.AF_INET6:
            return (
                socket.inet_ntop(socket.AF_INET6, raw[8:24]),
                port,
                0,
                int.from_bytes(raw[24:28], sys.byteorder),
            )
        return (socket.inet_ntop(socket.AF_INET, raw[4:8]), port)

    def send(self, count: int) -> int:
        """Send the first ``count`` answer slots; how many could not be sent."""
        sendmmsg = _FUNCTIONS[1]
        headers = self.tx.headers
        done = failed = 0
        while done < count:
            n = sendmmsg(self.fd, headers + MMSGHDR * done, count - done, 0)
            if n > 0:
                done += n
                continue
            code = ctypes.get_errno() if n < 0 else 0
            if code == errno.EINTR:
                continue
            # The first message of the rest could not go (a full buffer, an unreachable
            # client): UDP may drop it; the others still get their chance.
            done += 1
            failed += 1
        return failed
