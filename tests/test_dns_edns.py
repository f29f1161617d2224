"""EDNS0 (RFC 6891) and truncation (RFC 1035 4.2.1, RFC 7766) against a real process."""

from __future__ import annotations

import struct

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from dnsclient import counts_of, flags_of, header, opt, question, tcp, udp

TC = 0x0200


@pytest.fixture(scope="module")
def server(auth_server):
    return auth_server


def send(server, query: dns.message.Message, over_tcp=False) -> dns.message.Message:
    if over_tcp:
        return dns.query.tcp(query, server.host, port=server.port, timeout=3)
    return dns.query.udp(query, server.host, port=server.port, timeout=3, ignore_trailing=False)


@pytest.mark.parametrize("over_tcp", [False, True])
def test_opt_present_only_when_the_query_had_one(server, over_tcp):
    for name in (
        "mail.example.test.",
        "missing.example.test.",
        "example.com.",
        "chat.example.test.",
    ):
        plain = send(server, dns.message.make_query(name, "A", use_edns=False), over_tcp)
        assert plain.edns == -1
        assert plain.opt is None
        edns = send(server, dns.message.make_query(name, "A", use_edns=0), over_tcp)
        assert edns.edns == 0
        assert edns.payload == 1232


def test_opt_in_error_replies_too(server):
    # NOTIMP and REFUSED replies to an EDNS query carry an OPT as well.
    q = question("example.test.", "SOA")  # an UPDATE's zone section
    raw = udp(server.host, server.port, header(flags=5 << 11, ar=1) + q + opt())
    assert raw is not None
    assert flags_of(raw) & 0xF == dns.rcode.NOTIMP
    assert counts_of(raw)[3] == 1
    assert dns.message.from_wire(raw).edns == 0
    raw = udp(server.host, server.port, header(ar=1) + question("example.test.", 1, 3) + opt())
    assert flags_of(raw) & 0xF == dns.rcode.REFUSED
    assert dns.message.from_wire(raw).edns == 0


@pytest.mark.parametrize("version", [1, 2, 255])
def test_badvers_for_version_above_zero(server, version):
    q = question("mail.example.test.")
    raw = udp(server.host, server.port, header(ar=1) + q + opt(version=version))
    assert raw is not None
    message = dns.message.from_wire(raw)
    assert (
        message.rcode() == dns.rcode.BADVERS
    )  # 16: 1 in the OPT's extended rcode, 0 in the header
    assert flags_of(raw) & 0xF == 0
    assert message.edns == 0  # we answer with the version we speak
    assert message.answer == []
    assert raw[12 : 12 + len(q)] == q


def test_unknown_options_and_flags_not_echoed_but_do_and_the_cookie_are(server):
    options = struct.pack("!HH", 65001, 4) + b"abcd" + struct.pack("!HH", 10, 8) + b"cookie01"
    for flags in (0x8000 | 0x4000 | 0x0001, 0x4000):
        q = question("mail.example.test.")
        raw = udp(server.host, server.port, header(ar=1) + q + opt(flags=flags, options=options))
        assert raw is not None
        message = dns.message.from_wire(raw)
        assert message.rcode() == dns.rcode.NOERROR
        assert message.answer[0][0].address == "192.0.2.25"
        # Only the cookie is answered (RFC 7873): the client's and a server cookie of ours.
        assert [option.otype for option in message.options] == [dns.edns.COOKIE]
        assert message.options[0].client == b"cookie01"
        assert len(message.options[0].server) == 16
        assert message.ednsflags == (flags & 0x8000)  # DO echoed, unknown bits cleared


def test_payload_below_512_treated_as_512(server):
    # The NS answer with glue is about 200 octets: more than 100 but within 512.
    query = dns.message.make_query("example.test.", "NS", use_edns=0, payload=100)
    response = send(server, query)
    assert not response.flags & dns.flags.TC
    assert len(response.additional) >= 2
    # But a 600-octet TXT does not fit in 512.
    query = dns.message.make_query("long.example.test.", "TXT", use_edns=0, payload=100)
    assert send(server, query).flags & dns.flags.TC


def test_payload_between_512_and_1232_is_honoured(server):
    query = dns.message.make_query("long.example.test.", "TXT", use_edns=0, payload=700)
    response = send(server, query)
    assert not response.flags & dns.flags.TC
    assert len(response.answer[0][0].strings) == 3
    query = dns.message.make_query("long.example.test.", "TXT", use_edns=0, payload=600)
    assert send(server, query).flags & dns.flags.TC


@pytest.mark.parametrize("payload", [None, 512, 1232, 4096, 65535])
def test_big_answer_truncated_over_udp_with_question_kept(server, payload):
    q = question("Big.Example.Test.", "TXT")
    packet = header() + q if payload is None else header(ar=1) + q + opt(payload=payload)
    raw = udp(server.host, server.port, packet)
    assert raw is not None
    assert len(raw) <= (512 if payload is None else 1232)
    assert flags_of(raw) & TC
    assert flags_of(raw) & 0x0400  # still authoritative
    assert raw[12 : 12 + len(q)] == q
    qd, an, ns, ar = counts_of(raw)
    assert (qd, an, ns) == (1, 0, 0)
    assert ar == (0 if payload is None else 1)


@pytest.mark.parametrize("use_edns", [False, 0])
def test_big_answer_complete_over_tcp(server, use_edns):
    query = dns.message.make_query("big.example.test.", "TXT", use_edns=use_edns)
    response = send(server, query, over_tcp=True)
    assert not response.flags & dns.flags.TC
    assert len(response.answer[0]) == 12
    assert sorted(rr.strings[0][:9] for rr in response.answer[0]) == [
        b"record-%02d" % i for i in range(12)
    ]


def test_dnspython_falls_back_to_tcp_on_truncation(server):
    query = dns.message.make_query("big.example.test.", "TXT")
    response, used_tcp = dns.query.udp_with_fallback(
        query, server.host, port=server.port, timeout=3
    )
    assert used_tcp
    assert len(response.answer[0]) == 12


def test_raw_tcp_big_answer(server):
    raw = tcp(server.host, server.port, header() + question("big.example.test.", "TXT"))
    assert raw is not None
    assert not flags_of(raw) & TC
    assert counts_of(raw)[1] == 12
    assert len(raw) > 2000


@pytest.mark.parametrize(
    "name,extra",
    [
        ("two OPT records", opt() + opt()),
        ("OPT owned by a non-root name", opt(owner=b"\x03abc\x00")),
        ("OPT rdata shorter than its length", opt()[:-2] + b"\x00\x08\x00\x0a"),
        ("truncated OPT", opt()[:6]),
    ],
)
def test_bad_opt_is_formerr(server, name, extra):
    count = 2 if name == "two OPT records" else 1
    packet = header(ar=count) + question("mail.example.test.") + extra
    raw = udp(server.host, server.port, packet)
    assert raw is not None, name
    assert flags_of(raw) & 0xF == dns.rcode.FORMERR, name
    assert counts_of(raw)[1] == 0
    # The server keeps answering.
    assert send(server, dns.message.make_query("mail.example.test.", "A")).answer
