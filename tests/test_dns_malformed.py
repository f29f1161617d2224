"""Malformed packets get FORMERR or nothing, and the server keeps answering (real process)."""

from __future__ import annotations

import os
import random
import struct

import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.tsigkeyring
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
IXFR_Q = question("example.test.", "IXFR")


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
    # Options must fill the OPT RDATA exactly (RFC 6891 6.1.2): BIND and Knot say FORMERR.
    (
        "OPT option length past the OPT RDATA",
        header(ar=1) + GOOD_Q + opt(options=b"\x00\x0a\x00\x20" + b"c" * 8),
        FORMERR,
    ),
    ("OPT option header cut short", header(ar=1) + GOOD_Q + opt(options=b"\x00\x0a\x00"), FORMERR),
    (
        "OPT option past the RDATA, then more records",
        header(ar=2) + GOOD_Q + opt(options=b"\x00\x08\x00\x08\x00\x01") + b"\x00" * 11,
        FORMERR,
    ),
    (
        "TSIG not the last record",
        header(ar=2) + GOOD_Q + b"\x03key\x00" + struct.pack("!HHIH", 250, 255, 0, 0) + opt(),
        FORMERR,
    ),
    (
        "TSIG of class IN",
        header(ar=1) + GOOD_Q + b"\x03key\x00" + struct.pack("!HHIH", 250, 1, 0, 0),
        FORMERR,
    ),
    (
        "TSIG RDATA cut short",
        header(ar=1) + GOOD_Q + b"\x03key\x00" + struct.pack("!HHIH", 250, 255, 0, 4) + b"\x00" * 4,
        FORMERR,
    ),
    ("OPT in the authority of an IXFR", header(ns=1) + IXFR_Q + opt(), FORMERR),
    # RFC 7873 5.2.2: a COOKIE too short for a client cookie, or of no valid length, is FORMERR.
    (
        "COOKIE of 7 octets",
        header(ar=1) + GOOD_Q + opt(options=b"\x00\x0a\x00\x07" + b"c" * 7),
        FORMERR,
    ),
    (
        "COOKIE of 12 octets",
        header(ar=1) + GOOD_Q + opt(options=b"\x00\x0a\x00\x0c" + b"c" * 12),
        FORMERR,
    ),
    (
        "COOKIE of 41 octets",
        header(ar=1) + GOOD_Q + opt(options=b"\x00\x0a\x00\x29" + b"c" * 41),
        FORMERR,
    ),
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


def test_well_formed_options_are_fine(server):
    options = b"\x00\x0a\x00\x08" + b"c" * 8 + b"\x00\x0c\x00\x02\x00\x00"  # cookie, padding
    raw = udp(server.host, server.port, header(ar=1) + GOOD_Q + opt(options=options))
    assert raw is not None and flags_of(raw) & 0xF == 0 and counts_of(raw)[1] == 1


# -- signed requests and incremental transfers -------------------------------------------------


def _ixfr_query() -> dns.message.Message:
    query = dns.message.make_query("example.test.", "IXFR")
    soa = dns.rrset.from_text(
        "example.test.",
        300,
        "IN",
        "SOA",
        "ns1.example.test. hostmaster.example.test. 2026112200 3600 600 1209600 60",
    )
    query.authority.append(soa)
    return query


def test_ixfr_with_soa_in_authority_is_refused_over_tcp(server):
    # NSD answers REFUSED: lbdns has no secondaries, and the query itself is well formed.
    response = dns.query.tcp(_ixfr_query(), server.host, port=server.port, timeout=3)
    assert response.rcode() == dns.rcode.REFUSED
    assert response.question[0].rdtype == dns.rdatatype.IXFR
    assert not response.answer and not response.authority


def test_ixfr_with_soa_in_authority_is_refused_over_udp_with_edns(server):
    query = _ixfr_query()
    query.use_edns(0)
    response = dns.query.udp(query, server.host, port=server.port, timeout=3)
    assert response.rcode() == dns.rcode.REFUSED and response.edns == 0


def test_other_query_with_an_authority_section_is_still_formerr(server):
    query = dns.message.make_query("example.test.", "SOA")
    query.authority.append(_ixfr_query().authority[0])
    response = dns.query.udp(query, server.host, port=server.port, timeout=3)
    assert response.rcode() == FORMERR


KEYRING = dns.tsigkeyring.from_text({"lbdns-test-key.": "c2VjcmV0c2VjcmV0c2VjcmV0"})


@pytest.mark.parametrize("send", [dns.query.udp, dns.query.tcp], ids=["udp", "tcp"])
@pytest.mark.parametrize("edns", [False, True], ids=["plain", "edns"])
def test_tsig_signed_query_gets_notauth_badkey(server, send, edns):
    query = dns.message.make_query("mail.example.test.", "A", use_edns=0 if edns else None)
    query.use_tsig(KEYRING, keyname="lbdns-test-key.")
    # dnspython reads the unsigned BADKEY reply and raises it as the peer's verdict.
    with pytest.raises(dns.tsig.PeerBadKey):
        send(query, server.host, port=server.port, timeout=3)
    # The same, read raw: NOTAUTH, no answer, the TSIG last with an empty MAC and BADKEY.
    raw = udp(server.host, server.port, query.to_wire())
    assert raw is not None and flags_of(raw) & 0xF == dns.rcode.NOTAUTH
    assert not flags_of(raw) & 0x0400
    reply = dns.message.from_wire(raw, keyring=False)  # parse without verifying
    assert not reply.answer and reply.had_tsig
    assert reply.tsig_error == dns.rcode.BADKEY
    assert reply.keyname == dns.name.from_text("lbdns-test-key.")
    assert reply.tsig[0].mac == b"" and reply.tsig[0].original_id == query.id
    assert (reply.edns == 0) is edns


def test_tsig_with_a_compressed_key_name(server):
    # The key name may point back into the question (RFC 1035 4.1.4).
    rdata = (
        b"\x0bhmac-sha256\x00" + b"\x00\x00\x60\x00\x00\x00\x01\x2c"
        b"\x00\x00" + b"\x12\x34\x00\x00\x00\x00"
    )
    packet = header(ar=1) + GOOD_Q + b"\xc0\x0c" + struct.pack("!HHIH", 250, 255, 0, len(rdata))
    raw = udp(server.host, server.port, packet + rdata)
    assert raw is not None and flags_of(raw) & 0xF == dns.rcode.NOTAUTH
    reply = dns.message.from_wire(raw, keyring=False)
    assert reply.keyname == dns.name.from_text("mail.example.test.")
    assert reply.tsig_error == dns.rcode.BADKEY


def test_fuzzed_options_cookies_and_tsig_never_stop_the_server(server):
    # Random EDNS options (cookies of every length among them) and TSIG records with random
    # RDATA: each answered with a well-formed reply of a known rcode, or nothing.
    rng = random.Random(7873)
    allowed = {0, FORMERR, dns.rcode.NOTAUTH}
    for i in range(300):
        options = b""
        for _ in range(rng.randrange(0, 4)):
            code = rng.choice((10, 10, 8, 12, 65001))
            length = rng.choice((0, 7, 8, 9, 16, 24, 40, 41, rng.randrange(0, 60)))
            declared = length if rng.random() < 0.8 else rng.randrange(0, 80)
            options += struct.pack("!HH", code, declared) + rng.randbytes(length)
        packet = header(qid=i, ar=1) + GOOD_Q + opt(options=options)
        if rng.random() < 0.3:
            rdata = rng.randbytes(rng.randrange(0, 40))
            if rng.random() < 0.5:
                rdata = b"\x0bhmac-sha256\x00" + rdata
            tsig = b"\x03key\x00" + struct.pack("!HHIH", 250, 255, 0, len(rdata)) + rdata
            packet = header(qid=i, ar=2) + GOOD_Q + opt(options=options) + tsig
        raw = udp(server.host, server.port, packet, timeout=0.5)
        if raw is None:
            continue
        assert raw[:2] == packet[:2]
        reply = dns.message.from_wire(raw, keyring=False)
        assert reply.rcode() & 0xF in allowed, (i, reply.rcode())
    still_answers(server)
