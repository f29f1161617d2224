"""Authoritative behaviour on the wire (RFC 1034/1035/2181/2308/8482), against a real process.

One ``lbdns serve`` serves tests/zones/auth for the whole module; queries go over real UDP and
TCP sockets with dnspython or hand-made bytes.
"""

from __future__ import annotations

import struct

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.update
import pytest
from dnsclient import counts_of, flags_of, header, question, udp

NEGATIVE_TTL = 60  # min(zone ttl 300, SOA minimum 60)


@pytest.fixture(scope="module")
def server(auth_server):
    return auth_server


def ask(server, name, rdtype="A", tcp=False, flags=None, **kw) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **kw)
    if flags is not None:
        query.flags = flags
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, server.host, port=server.port, timeout=3)


def rrset(response, name, rdtype, section="answer"):
    return getattr(response, section) and next(
        (
            r
            for r in getattr(response, section)
            if r.name == dns.name.from_text(name) and r.rdtype == dns.rdatatype.from_text(rdtype)
        ),
        None,
    )


def texts(rrs) -> list[str]:
    return sorted(rr.to_text() for rr in rrs)


# -- header bits and echo ------------------------------------------------------------------


@pytest.mark.parametrize("tcp", [False, True])
def test_aa_set_ra_clear_rd_and_cd_copied(server, tcp):
    for flags in (0, dns.flags.RD, dns.flags.CD, dns.flags.RD | dns.flags.CD):
        response = ask(server, "mail.example.test.", tcp=tcp, flags=flags)
        assert response.flags & dns.flags.QR
        assert response.flags & dns.flags.AA
        assert not response.flags & dns.flags.RA
        assert bool(response.flags & dns.flags.RD) == bool(flags & dns.flags.RD)
        assert bool(response.flags & dns.flags.CD) == bool(flags & dns.flags.CD)
        assert not response.flags & dns.flags.TC


@pytest.mark.parametrize(
    "name,qtype",
    [
        ("MaIl.ExAmPlE.TeSt.", 1),  # static
        ("cHaT.example.TEST.", 1),  # farm
        ("NoSuCh.Example.Test.", 1),  # NXDOMAIN
        ("mail.EXAMPLE.test.", 28),  # NODATA
        ("WWW.example.test.", 1),  # CNAME into a farm
        ("elsewhere.ORG.", 1),  # REFUSED
        ("Mail.Example.Test.", 65280),  # a private-use type
    ],
)
def test_id_and_question_echoed_byte_for_byte(server, name, qtype):
    for qid in (0, 0xBEEF, 0xFFFF):
        q = question(name, qtype)
        response = udp(server.host, server.port, header(qid=qid) + q)
        assert response is not None
        assert response[:2] == struct.pack("!H", qid)
        assert counts_of(response)[0] == 1
        assert response[12 : 12 + len(q)] == q
        # dnspython accepts it as the answer to that exact question (it checks the question).
        message = dns.message.from_wire(response)
        assert message.question[0].name.to_text() == name


def test_owner_names_are_valid_with_mixed_case_question(server):
    response = ask(server, "WwW.ExAmPlE.tEsT.")
    assert response.rcode() == dns.rcode.NOERROR
    names = {r.name for r in response.answer}
    assert dns.name.from_text("www.example.test.") in names
    assert dns.name.from_text("chat.example.test.") in names


# -- negative answers ------------------------------------------------------------------------


@pytest.mark.parametrize("tcp", [False, True])
def test_nxdomain_has_soa_with_negative_ttl(server, tcp):
    response = ask(server, "missing.example.test.", tcp=tcp)
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.flags & dns.flags.AA
    assert response.answer == []
    assert len(response.authority) == 1
    soa = response.authority[0]
    assert soa.rdtype == dns.rdatatype.SOA
    assert soa.name == dns.name.from_text("example.test.")
    assert soa.ttl == NEGATIVE_TTL
    assert soa[0].serial == 2026112201
    assert soa[0].minimum == 60


def test_negative_ttl_is_soa_ttl_when_minimum_is_larger(server):
    # other.test: ttl 600, minimum 900 -> 600
    response = ask(server, "nope.other.test.")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.authority[0].ttl == 600
    assert response.authority[0].name == dns.name.from_text("other.test.")


@pytest.mark.parametrize(
    "name,qtype",
    [
        ("mail.example.test.", "AAAA"),
        ("mail.example.test.", "TXT"),
        ("v6only.example.test.", "A"),
        ("example.test.", "A"),
        ("v4farm.example.test.", "AAAA"),  # a farm without IPv6 hosts
        ("chat.example.test.", "TXT"),  # a farm name asked for another type
    ],
)
def test_nodata_is_noerror_with_soa(server, name, qtype):
    response = ask(server, name, qtype)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert response.answer == []
    assert [r.rdtype for r in response.authority] == [dns.rdatatype.SOA]
    assert response.authority[0].ttl == NEGATIVE_TTL


@pytest.mark.parametrize(
    "name",
    ["deep.example.test.", "b.deep.example.test.", "_tcp.example.test.", "apps.example.test."],
)
def test_empty_non_terminal_is_nodata(server, name):
    response = ask(server, name)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.answer == []
    assert response.authority[0].rdtype == dns.rdatatype.SOA


def test_below_an_existing_name_is_nxdomain(server):
    response = ask(server, "x.mail.example.test.")
    assert response.rcode() == dns.rcode.NXDOMAIN
    response = ask(server, "c.a.b.deep.example.test.")
    assert response.rcode() == dns.rcode.NXDOMAIN


@pytest.mark.parametrize(
    "name", ["example.com.", "test.", ".", "www.example.org.", "notexample.test."]
)
def test_refused_outside_our_zones(server, name):
    for tcp in (False, True):
        response = ask(server, name, tcp=tcp)
        assert response.rcode() == dns.rcode.REFUSED
        assert not response.flags & dns.flags.AA
        assert not response.flags & dns.flags.RA
        assert response.answer == response.authority == []


# -- CNAME -----------------------------------------------------------------------------------


def test_cname_followed_inside_the_zone(server):
    response = ask(server, "alias.example.test.")
    assert response.rcode() == dns.rcode.NOERROR
    assert [r.to_text() for r in response.answer] == [
        "alias.example.test. 300 IN CNAME mail.example.test.",
        "mail.example.test. 300 IN A 192.0.2.25",
    ]


def test_cname_to_a_farm(server):
    response = ask(server, "www.example.test.", "AAAA")
    assert response.answer[0].rdtype == dns.rdatatype.CNAME
    farm = response.answer[1]
    assert farm.name == dns.name.from_text("chat.example.test.")
    assert farm.ttl == 5
    assert {rr.address for rr in farm} <= {"2001:db8::10", "2001:db8::11"}


def test_cname_chain(server):
    response = ask(server, "chain1.example.test.")
    assert [(r.name.to_text(), dns.rdatatype.to_text(r.rdtype)) for r in response.answer] == [
        ("chain1.example.test.", "CNAME"),
        ("chain2.example.test.", "CNAME"),
        ("chain3.example.test.", "A"),
    ]


def test_cname_loop_ends(server):
    response = ask(server, "loop1.example.test.")
    assert response.rcode() == dns.rcode.NOERROR
    assert [r.rdtype for r in response.answer] == [dns.rdatatype.CNAME] * 2


def test_cname_to_missing_name_is_nxdomain_with_the_cname(server):
    # RFC 6604: the rcode describes the last name of the chain.
    response = ask(server, "dangling.example.test.")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert [r.rdtype for r in response.answer] == [dns.rdatatype.CNAME]
    assert response.authority[0].rdtype == dns.rdatatype.SOA


def test_cname_out_of_our_zones_is_left_to_the_resolver(server):
    response = ask(server, "away.example.test.")
    assert response.rcode() == dns.rcode.NOERROR
    assert [r.to_text() for r in response.answer] == [
        "away.example.test. 300 IN CNAME www.outside.test."
    ]
    assert response.authority == []


def test_cname_into_another_served_zone(server):
    response = ask(server, "cross.example.test.")
    assert texts(response.answer) == [
        "cross.example.test. 300 IN CNAME host.other.test.",
        "host.other.test. 600 IN A 198.51.100.7",
    ]


def test_cname_query_for_a_cname_name(server):
    response = ask(server, "www.example.test.", "CNAME")
    assert [r.to_text() for r in response.answer] == [
        "www.example.test. 300 IN CNAME chat.example.test."
    ]


# -- ANY, glue, wildcards --------------------------------------------------------------------


@pytest.mark.parametrize("tcp", [False, True])
def test_any_is_answered_minimally(server, tcp):
    response = ask(server, "example.test.", "ANY", tcp=tcp)
    assert response.rcode() == dns.rcode.NOERROR
    assert len(response.answer) == 1  # one RRset, not all of them (RFC 8482)
    response = ask(server, "chat.example.test.", "ANY", tcp=tcp)
    assert len(response.answer) == 1
    assert response.answer[0].rdtype == dns.rdatatype.A
    assert ask(server, "missing.example.test.", "ANY").rcode() == dns.rcode.NXDOMAIN
    nodata = ask(server, "deep.example.test.", "ANY")
    assert nodata.rcode() == dns.rcode.NOERROR and nodata.answer == []


def test_glue_in_ns_answer(server):
    response = ask(server, "example.test.", "NS")
    assert texts(response.answer[0]) == [
        "ns.outside.test.",
        "ns1.example.test.",
        "ns2.example.test.",
    ]
    additional = {
        (r.name.to_text(), dns.rdatatype.to_text(r.rdtype)): r for r in response.additional
    }
    assert texts(additional[("ns1.example.test.", "A")]) == ["192.0.2.53"]
    assert texts(additional[("ns1.example.test.", "AAAA")]) == ["2001:db8::53"]
    assert texts(additional[("ns2.example.test.", "A")]) == ["192.0.2.54"]
    assert not any(name == "ns.outside.test." for name, _ in additional)


def test_glue_in_soa_answer(server):
    response = ask(server, "example.test.", "SOA")
    assert response.answer[0].rdtype == dns.rdatatype.SOA
    assert response.answer[0][0].serial == 2026112201
    glue = {(r.name.to_text(), dns.rdatatype.to_text(r.rdtype)) for r in response.additional}
    assert {("ns1.example.test.", "A"), ("ns2.example.test.", "A")} <= glue


def test_wildcard(server):
    response = ask(server, "Anything.apps.example.test.")
    assert [r.to_text() for r in response.answer] == [
        "Anything.apps.example.test. 300 IN A 192.0.2.80"
    ]
    response = ask(server, "two.labels.apps.example.test.", "TXT")
    assert texts(response.answer[0]) == ['"wildcard"']
    nodata = ask(server, "x.apps.example.test.", "AAAA")
    assert nodata.rcode() == dns.rcode.NOERROR and nodata.answer == []
    # The wildcard's own name is a real name too.
    assert ask(server, "*.apps.example.test.").answer[0][0].address == "192.0.2.80"


def test_wildcard_cname(server):
    response = ask(server, "foo.wild.example.test.")
    assert [r.to_text() for r in response.answer] == [
        "foo.wild.example.test. 300 IN CNAME mail.example.test.",
        "mail.example.test. 300 IN A 192.0.2.25",
    ]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_one_wildcard_answer_serves_names_of_every_length_and_case(server, tcp):
    # The answer is one template for every name (owners point at the question): names of
    # many lengths and cases, one after another, each get their own name back.
    for depth in (1, 2, 5, 20):
        for qtype, expected in (("A", "192.0.2.80"), ("TXT", '"wildcard"')):
            name = ".".join(f"L{i}x" * (1 + i % 3) for i in range(depth)) + ".Apps.example.test."
            response = server.query(name, qtype, tcp=tcp, use_edns=0)
            assert response.rcode() == dns.rcode.NOERROR and response.flags & dns.flags.AA
            assert response.answer[0].name.to_text() == name  # the case kept
            assert response.answer[0][0].to_text() == expected
            assert response.answer[0].ttl == 300
        cname = server.query(f"x{depth}.Wild.example.test.", "A", tcp=tcp)
        assert [r.to_text() for r in cname.answer] == [
            f"x{depth}.Wild.example.test. 300 IN CNAME mail.example.test.",
            "mail.example.test. 300 IN A 192.0.2.25",
        ]
        nodata = server.query(f"y{depth}.apps.example.test.", "MX", tcp=tcp)
        assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
        assert nodata.authority[0].name.to_text() == "example.test."


def test_wildcard_does_not_cover_existing_names_or_their_children(server):
    # chain3 exists, so nothing below apps' siblings is synthesised; and under an existing
    # name without a wildcard child the answer is NXDOMAIN.
    assert ask(server, "x.sip.example.test.").rcode() == dns.rcode.NXDOMAIN


# -- record types round-trip -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name,qtype,expected",
    [
        ("mail.example.test.", "A", ["192.0.2.25"]),
        ("multi.example.test.", "A", ["192.0.2.1", "192.0.2.2", "192.0.2.3"]),
        ("v6only.example.test.", "AAAA", ["2001:db8::66"]),
        ("ns1.example.test.", "AAAA", ["2001:db8::53"]),
        ("www.example.test.", "CNAME", ["chat.example.test."]),
        ("example.test.", "TXT", ['"v=spf1 -all"']),
        ("example.test.", "MX", ["10 mail.example.test.", "20 mail2.example.test."]),
        ("_sip._tcp.example.test.", "SRV", ["10 5 5060 sip.example.test."]),
        (
            "example.test.",
            "CAA",
            ['0 issue "letsencrypt.org"', '128 iodef "mailto:sec@example.test"'],
        ),
        ("10.2.0.192.in-addr.example.test.", "PTR", ["mail.example.test."]),
    ],
)
def test_record_types_round_trip(server, name, qtype, expected):
    for tcp in (False, True):
        response = ask(server, name, qtype, tcp=tcp)
        assert response.rcode() == dns.rcode.NOERROR
        found = rrset(response, name, qtype)
        assert found is not None, response
        assert texts(found) == sorted(expected)


def test_record_ttls(server):
    assert ask(server, "multi.example.test.").answer[0].ttl == 120
    assert ask(server, "mail.example.test.").answer[0].ttl == 300
    assert ask(server, "chat.example.test.").answer[0].ttl == 5
    assert ask(server, "v4farm.example.test.").answer[0].ttl == 7


def test_long_txt_is_split_into_255_octet_strings(server):
    response = ask(server, "long.example.test.", "TXT", use_edns=0)
    assert not response.flags & dns.flags.TC
    strings = response.answer[0][0].strings
    assert [len(s) for s in strings] == [255, 255, 90]
    assert b"".join(strings) == b"L" * 600


def test_txt_utf8(server):
    response = ask(server, "utf.example.test.", "TXT")
    assert response.answer[0][0].strings == ("héllo".encode(),)


def test_farm_answers_one_of_its_hosts(server):
    seen = set()
    for _ in range(6):
        response = ask(server, "chat.example.test.")
        assert len(response.answer) == 1 and len(response.answer[0]) == 1
        seen.add(response.answer[0][0].address)
    assert seen <= {"192.0.2.10", "192.0.2.11"}


# -- refusals by type, opcode and class ------------------------------------------------------


@pytest.mark.parametrize("rdtype", ["AXFR", "IXFR"])
def test_zone_transfers_refused(server, rdtype):
    query = dns.message.make_query("example.test.", rdtype)
    response = dns.query.tcp(query, server.host, port=server.port, timeout=3)
    assert response.rcode() == dns.rcode.REFUSED
    raw = udp(server.host, server.port, header() + question("example.test.", rdtype))
    assert raw is not None and flags_of(raw) & 0xF == dns.rcode.REFUSED


@pytest.mark.parametrize("opcode", [1, 2, 3, 4, 5, 6, 15])
def test_other_opcodes_notimp(server, opcode):
    raw = udp(server.host, server.port, header(flags=opcode << 11) + question("example.test."))
    assert raw is not None
    flags = flags_of(raw)
    assert flags & 0x8000
    assert (flags >> 11) & 0xF == opcode
    assert flags & 0xF == dns.rcode.NOTIMP
    assert not flags & 0x0400


def test_notify_and_update_with_dnspython(server):
    notify = dns.message.make_query("example.test.", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    assert dns.query.udp(notify, server.host, port=server.port, timeout=3).rcode() == 4

    update = dns.update.UpdateMessage("example.test.")
    update.add("new", 300, "A", "192.0.2.1")
    assert dns.query.tcp(update, server.host, port=server.port, timeout=3).rcode() == 4


@pytest.mark.parametrize("qclass", [3, 4, 254, 255, 2])
def test_other_classes_refused(server, qclass):
    q = question("example.test.", "SOA", qclass)
    raw = udp(server.host, server.port, header() + q)
    assert raw is not None
    assert flags_of(raw) & 0xF == dns.rcode.REFUSED
    assert raw[12 : 12 + len(q)] == q
    assert counts_of(raw)[1:3] == (0, 0)


def test_chaos_version_query_refused(server):
    query = dns.message.make_query("version.bind.", "TXT", rdclass=dns.rdataclass.CH)
    response = dns.query.udp(query, server.host, port=server.port, timeout=3)
    assert response.rcode() == dns.rcode.REFUSED


@pytest.mark.parametrize("rdtype", ["MAILA", "MAILB"])
def test_obsolete_meta_types_notimp(server, rdtype):
    response = ask(server, "example.test.", rdtype)
    assert response.rcode() == dns.rcode.NOTIMP


# -- IPv6 ------------------------------------------------------------------------------------


def test_ipv6_listener_udp_and_tcp(server):
    host, port = next((h, p) for h, p in server.dns if h == "::1")
    for send in (dns.query.udp, dns.query.tcp):
        response = send(
            dns.message.make_query("mail.example.test.", "A"), host, port=port, timeout=3
        )
        assert response.rcode() == dns.rcode.NOERROR
        assert response.answer[0][0].address == "192.0.2.25"


# -- names with unusual octets ---------------------------------------------------------------

ODD_LABELS = [b"\xc3\xa9t\xc3", b"a.b", b"sp ace", b"back\\slash", b"x\x00y", b"\\046", b"\xff"]


@pytest.mark.parametrize("label", ODD_LABELS)
def test_odd_octets_in_a_label(server, label):
    def ask_raw(suffix: bytes) -> dns.message.Message:
        q = bytes((len(label),)) + label + suffix + b"\x00\x01\x00\x01"
        raw = udp(server.host, server.port, header() + q)
        assert raw is not None
        assert raw[12 : 12 + len(q)] == q
        return dns.message.from_wire(raw)

    # Under a wildcard: synthesised, owned by exactly the question's name.
    response = ask_raw(b"\x04apps\x07example\x04test\x00")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.answer[0].name == response.question[0].name
    assert response.answer[0][0].address == "192.0.2.80"
    # 'a.b' as one label is not the two labels a and b: no such name.
    response = ask_raw(b"\x04deep\x07example\x04test\x00")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.answer == []
    assert ask_raw(b"\x03org\x00").rcode() == dns.rcode.REFUSED


def test_glue_dropped_before_truncating(server):
    # 12 NS and 24 glue records do not fit in 512 octets: the NS RRset is sent without glue.
    plain = ask(server, "many.test.", "NS", use_edns=False)
    assert not plain.flags & dns.flags.TC
    assert len(plain.answer[0]) == 12
    assert plain.additional == []
    full = ask(server, "many.test.", "NS", use_edns=0)
    assert len(full.answer[0]) == 12
    assert sum(len(r) for r in full.additional) == 24


@pytest.mark.parametrize(
    "flags,packet_tail,rcode",
    [
        (0, question("example.org."), dns.rcode.REFUSED),
        (4 << 11, question("example.test."), dns.rcode.NOTIMP),
        (0, question("example.test.", 1, 3), dns.rcode.REFUSED),
        (0, b"\xc0\x0c\x00\x01\x00\x01", dns.rcode.FORMERR),
    ],
)
def test_error_replies_copy_rd_and_cd(server, flags, packet_tail, rcode):
    for bits in (0, 0x0100, 0x0010, 0x0110):
        raw = udp(server.host, server.port, header(flags=flags | bits) + packet_tail)
        assert raw is not None
        got = flags_of(raw)
        assert got & 0xF == rcode
        assert got & 0x0110 == bits
        assert not got & 0x0080  # RA
        assert not got & 0x0400  # AA


def test_z_and_ad_bits_not_echoed(server):
    # RFC 8906 8.2.3: the Z bit must be clear in the reply; AD stays clear without DNSSEC.
    raw = udp(
        server.host,
        server.port,
        header(flags=0x0100 | 0x0040 | 0x0020) + question("mail.example.test."),
    )
    assert raw is not None
    assert flags_of(raw) & 0x0060 == 0
    assert counts_of(raw)[1] == 1


@pytest.mark.parametrize("qtype", [666, 65280, 65535])
def test_unknown_types_are_nodata(server, qtype):
    q = question("mail.example.test.", qtype)
    raw = udp(server.host, server.port, header() + q)
    assert raw is not None
    assert flags_of(raw) & 0xF == dns.rcode.NOERROR
    assert counts_of(raw)[1:3] == (0, 1)  # no answer, the SOA
