"""Malformed packets get FORMERR or nothing, and the server keeps answering (real process)."""

from __future__ import annotations

import os
import random
import struct

import dns.message
import dns.query
import dns.rcode
import pytest
from dnsclient import (
    counts_of,
    flags_of,
    header,
    opt,
    question,
    tcp_connect,
    tcp_recv,
    tcp_send,
    udp,
)
from support import AUTH_ZONES, LbdnsProcess

FORMERR = dns.rcode.FORMERR
DROP = None

GOOD_Q = question("mail.example.test.")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("malformed")
    with LbdnsProcess(tmp, zones=AUTH_ZONES, http=None) as proc:
        yield proc


def still_answers(server) -> None:
    for send in (dns.query.udp, dns.query.tcp):
        query = dns.message.make_query("mail.example.test.", "A")
        response = send(query, server.host, port=server.port, timeout=3)
        assert response.answer[0][0].address == "192.0.2.25"


CASES = [
    # (what, packet, expected rcode or DROP)
    ("empty datagram", b"", DROP),
    ("one byte", b"\x12", DROP),
    ("truncated header", header()[:11], DROP),
    ("header only, QDCOUNT 1", header(), FORMERR),
    ("QDCOUNT 0", header(qd=0), FORMERR),
    ("QDCOUNT 0 with a question", header(qd=0) + GOOD_Q, FORMERR),
    ("QDCOUNT 2", header(qd=2) + GOOD_Q + GOOD_Q, FORMERR),
    ("QDCOUNT 65535", header(qd=65535) + GOOD_Q, FORMERR),
    ("question cut in the name", header() + GOOD_Q[:8], FORMERR),
    ("question cut before type", header() + GOOD_Q[:-4], FORMERR),
    ("question cut in class", header() + GOOD_Q[:-1], FORMERR),
    ("label past the end", header() + b"\x3fabc", FORMERR),
    ("compression pointer in question", header() + b"\xc0\x0c\x00\x01\x00\x01", FORMERR),
    (
        "compression pointer after a label",
        header() + b"\x04mail\xc0\x0c\x00\x01\x00\x01",
        FORMERR,
    ),
    ("pointer loop in question", header() + b"\xc0\x0c" * 4, FORMERR),
    ("label type 0x40", header() + b"\x41" + b"a" * 65 + b"\x00\x00\x01\x00\x01", FORMERR),
    (
        "name longer than 255 octets",
        header() + (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01",
        FORMERR,
    ),
    ("answer section in a query", header(an=1) + GOOD_Q + b"\xc0\x0c" + b"\x00" * 10, FORMERR),
    ("authority section in a query", header(ns=1) + GOOD_Q, FORMERR),
    ("ARCOUNT 1 but nothing there", header(ar=1) + GOOD_Q, FORMERR),
    # The additional section starts at offset 35; pointers must point before the name.
    (
        "additional owner pointing at itself",
        header(ar=1) + GOOD_Q + b"\xc0\x23" + b"\x00" * 10,
        FORMERR,
    ),
    (
        "additional owner pointer loop",
        header(ar=1) + GOOD_Q + b"\x01a\xc0\x23" + b"\x00" * 10,
        FORMERR,
    ),
    (
        "additional owner pointing forward",
        header(ar=1) + GOOD_Q + b"\xc0\x40" + b"\x00" * 10,
        FORMERR,
    ),
    ("additional owner with a cut pointer", header(ar=1) + GOOD_Q + b"\xc0", FORMERR),
    ("OPT rdlength past the end", header(ar=1) + GOOD_Q + opt()[:-2] + b"\xff\xff", FORMERR),
    ("a response (QR=1)", header(flags=0x8000) + GOOD_Q, DROP),
    ("a response with an answer", header(flags=0x8400, an=1) + GOOD_Q, DROP),
]


@pytest.mark.parametrize("what,packet,expected", CASES, ids=[c[0] for c in CASES])
def test_malformed_udp(server, what, packet, expected):
    timeout = 0.3 if expected is DROP else 2.0
    raw = udp(server.host, server.port, packet, timeout=timeout)
    if expected is DROP:
        assert raw is None, f"{what}: expected no answer, got {raw!r}"
    else:
        assert raw is not None, what
        assert raw[:2] == packet[:2]  # ID echoed
        flags = flags_of(raw)
        assert flags & 0x8000
        assert flags & 0xF == expected, what
        assert counts_of(raw)[1:3] == (0, 0)  # no answer, no authority
        assert not flags & 0x0400  # not authoritative for what it could not read
    still_answers(server)


def test_backward_pointer_in_an_additional_owner_is_fine(server):
    # A TSIG-like record whose owner points at the question name: ignored, the query answered.
    packet = header(ar=1) + GOOD_Q + b"\xc0\x0c" + struct.pack("!HHIH", 16, 1, 0, 0)
    raw = udp(server.host, server.port, packet)
    assert raw is not None and flags_of(raw) & 0xF == 0 and counts_of(raw)[1] == 1


def test_formerr_echoes_the_question_when_it_could_be_read(server):
    packet = header(ns=1) + GOOD_Q
    raw = udp(server.host, server.port, packet)
    assert raw is not None and flags_of(raw) & 0xF == FORMERR
    assert counts_of(raw)[0] == 1
    assert raw[12 : 12 + len(GOOD_Q)] == GOOD_Q
    dns.message.from_wire(raw)  # a well-formed reply


def test_garbage_never_stops_the_server(server):
    rng = random.Random(2026)
    for _ in range(300):
        size = rng.choice((12, 13, 20, 40, 100, 512, 1500))
        packet = bytearray(rng.randbytes(size))
        packet[2] &= 0x7F  # a query, so that it is not simply dropped as a response
        raw = udp(server.host, server.port, bytes(packet), timeout=0.05)
        if raw is not None:
            assert raw[:2] == packet[:2]
            assert flags_of(raw) & 0x8000
    still_answers(server)


def test_huge_datagram(server):
    raw = udp(server.host, server.port, header() + GOOD_Q + os.urandom(60000), timeout=2)
    # Trailing bytes after the question are ignored: the question itself is fine.
    assert raw is not None
    assert flags_of(raw) & 0xF == 0
    still_answers(server)


def test_malformed_over_tcp_then_good_queries_on_the_same_connection(server):
    with tcp_connect(server.host, server.port) as sock:
        tcp_send(sock, header(qid=1, qd=0))
        raw = tcp_recv(sock)
        assert raw is not None and raw[:2] == b"\x00\x01" and flags_of(raw) & 0xF == FORMERR
        tcp_send(sock, header(qid=2) + b"\xc0\x0c\x00\x01\x00\x01")
        raw = tcp_recv(sock)
        assert raw is not None and flags_of(raw) & 0xF == FORMERR
        tcp_send(sock, header(qid=3) + GOOD_Q)
        raw = tcp_recv(sock)
        assert raw is not None and raw[:2] == b"\x00\x03" and counts_of(raw)[1] == 1


def test_response_over_tcp_closes_the_connection(server):
    with tcp_connect(server.host, server.port) as sock:
        tcp_send(sock, header(flags=0x8000) + GOOD_Q)
        assert tcp_recv(sock) is None
    still_answers(server)


def test_short_message_over_tcp_closes_the_connection(server):
    with tcp_connect(server.host, server.port) as sock:
        sock.sendall(struct.pack("!H", 5) + b"\x00" * 5)
        assert tcp_recv(sock) is None
    still_answers(server)
