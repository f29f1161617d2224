"""Small raw-socket DNS client for the wire tests: send exact bytes, read exact bytes."""

from __future__ import annotations

import socket
import struct

import dns.message
import dns.rdatatype

TIMEOUT = 2.0


def family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def udp(host: str, port: int, payload: bytes, timeout: float = TIMEOUT) -> bytes | None:
    """Send one datagram; the reply, or None when nothing came back within ``timeout``."""
    with socket.socket(family(host), socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(payload, (host, port))
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


def tcp_connect(host: str, port: int, timeout: float = TIMEOUT) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    return sock


def tcp_send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack("!H", len(payload)) + payload)


def recv_exact(sock: socket.socket, size: int) -> bytes | None:
    """``size`` bytes from ``sock``, or None if the peer closed first."""
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def tcp_recv(sock: socket.socket) -> bytes | None:
    head = recv_exact(sock, 2)
    if head is None:
        return None
    return recv_exact(sock, struct.unpack("!H", head)[0])


def tcp(host: str, port: int, payload: bytes, timeout: float = TIMEOUT) -> bytes | None:
    with tcp_connect(host, port, timeout) as sock:
        tcp_send(sock, payload)
        return tcp_recv(sock)


def header(
    qid: int = 0x1234,
    flags: int = 0x0100,
    qd: int = 1,
    an: int = 0,
    ns: int = 0,
    ar: int = 0,
) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def qname(name: str) -> bytes:
    """Wire form of a dotted name, case kept."""
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes((len(label),)) + label.encode()
    return out + b"\x00"


def question(name: str, qtype: int | str = 1, qclass: int = 1) -> bytes:
    if isinstance(qtype, str):
        qtype = dns.rdatatype.from_text(qtype)
    return qname(name) + struct.pack("!HH", qtype, qclass)


def opt(
    payload: int = 1232,
    version: int = 0,
    flags: int = 0,
    options: bytes = b"",
    ext_rcode: int = 0,
    owner: bytes = b"\x00",
) -> bytes:
    ttl = (ext_rcode << 24) | (version << 16) | flags
    return owner + struct.pack("!HHIH", 41, payload, ttl, len(options)) + options


def flags_of(response: bytes) -> int:
    return struct.unpack("!H", response[2:4])[0]


def counts_of(response: bytes) -> tuple[int, int, int, int]:
    return struct.unpack("!HHHH", response[4:12])


def parse(response: bytes) -> dns.message.Message:
    return dns.message.from_wire(response)
