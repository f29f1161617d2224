"""EDNS Client Subnet (RFC 7871) on the authoritative side, over real UDP and TCP."""

from __future__ import annotations

import struct

import dns.edns
import dns.message
import dns.query
import dns.rcode
import pytest
from support import LbdnsProcess, http_json

FARM = "web.ecs.test."
ZONE = """\
zone: ecs.test.
soa: {}
ns: [ns1]
records:
  ns1: {A: 192.0.2.53}
farms:
  web:
    ttl: 5
    hosts:
      web1: {a: 192.0.2.1, aaaa: "2001:db8::1"}
      web2: {a: 192.0.2.2, aaaa: "2001:db8::2"}
  plain:
    ttl: 5
    ecs: off
    hosts:
      web1: {a: 192.0.2.1}
  narrow:
    ttl: 5
    ecs: {ipv4: 20, ipv6: 48}
    hosts:
      web1: {a: 192.0.2.1, aaaa: "2001:db8::1"}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ecs")
    zones = tmp / "zones"
    zones.mkdir()
    (zones / "ecs.yaml").write_text(ZONE)
    with LbdnsProcess(tmp, zones=zones) as process:
        yield process


def ask(server, name: str, options=(), rdtype: str = "A", tcp: bool = False, edns: int = 0):
    query = dns.message.make_query(name, rdtype, use_edns=edns, options=list(options))
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, server.host, port=server.port, timeout=3)


def raw_ecs(family: int, source: int, scope: int, address: bytes) -> dns.edns.GenericOption:
    return dns.edns.GenericOption(8, struct.pack("!HBB", family, source, scope) + address)


def ecs_of(response: dns.message.Message) -> list[dns.edns.ECSOption]:
    return [o for o in response.options if o.otype == dns.edns.ECS]


@pytest.mark.parametrize("tcp", [False, True])
@pytest.mark.parametrize(
    "name,address,source,scope",
    [
        (FARM, "198.51.100.0", 24, 24),  # as Google and unbound send it
        (FARM, "198.51.100.7", 32, 24),  # more specific than needed: scoped to the farm's /24
        (FARM, "198.51.0.0", 16, 16),  # less specific: never a longer scope than the source
        (FARM, "0.0.0.0", 0, 0),  # opted out: the answer is for everyone
        (FARM, "2001:db8:aa:bb00::", 56, 56),
        (FARM, "2001:db8:aa:bbcc::", 64, 56),
        ("plain.ecs.test.", "198.51.100.0", 24, 0),  # ecs: off
        ("narrow.ecs.test.", "198.51.100.0", 24, 20),
        ("narrow.ecs.test.", "2001:db8:aa:bb00::", 56, 48),
        ("ns1.ecs.test.", "198.51.100.0", 24, 0),  # a static record: not client-dependent
        ("nope.ecs.test.", "198.51.100.0", 24, 0),  # NXDOMAIN
    ],
)
def test_the_option_is_echoed_with_its_scope(server, tcp, name, address, source, scope):
    option = dns.edns.ECSOption(address, source)
    response = ask(server, name, [option], tcp=tcp)
    assert response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)
    (echo,) = ecs_of(response)
    # FAMILY, SOURCE PREFIX-LENGTH and ADDRESS copied; SCOPE set (RFC 7871 7.2.1).
    assert (echo.family, echo.srclen, echo.address) == (option.family, source, option.address)
    assert echo.scopelen == scope
    if name == FARM:
        assert response.answer and response.answer[0].ttl <= 5


def test_no_ecs_in_replies_to_queries_without_it(server):
    for name in (FARM, "ns1.ecs.test.", "nope.ecs.test."):
        response = ask(server, name)
        assert response.edns == 0 and ecs_of(response) == []
    assert ask(server, FARM, edns=-1).edns == -1  # no OPT at all


@pytest.mark.parametrize(
    "what,options",
    [
        ("unknown family", [raw_ecs(3, 8, 0, b"\x01")]),
        ("IPv4 source longer than 32", [raw_ecs(1, 33, 0, b"\x01\x02\x03\x04\x05")]),
        ("IPv6 source longer than 128", [raw_ecs(2, 129, 0, b"\x20" + b"\x00" * 16)]),
        ("more address octets than the source needs", [raw_ecs(1, 24, 0, b"\xc6\x33\x64\x00")]),
        ("fewer address octets than the source needs", [raw_ecs(1, 24, 0, b"\xc6\x33")]),
        ("bits set beyond the source", [raw_ecs(1, 20, 0, b"\xc6\x33\x6f")]),
        ("scope not 0 in a query", [raw_ecs(1, 24, 24, b"\xc6\x33\x64")]),
        ("option shorter than 4 octets", [dns.edns.GenericOption(8, b"\x00\x01\x18")]),
        (
            "two ECS options",
            [
                dns.edns.ECSOption("198.51.100.0", 24),
                dns.edns.ECSOption("203.0.113.0", 24),
            ],
        ),
    ],
)
def test_malformed_options_are_formerr(server, what, options):
    for tcp in (False, True):
        response = ask(server, FARM, options, tcp=tcp)
        assert response.rcode() == dns.rcode.FORMERR, what
        assert response.edns == 0 and ecs_of(response) == []  # an OPT, without ECS


def test_a_family_other_than_the_question_is_answered(server):
    """An IPv4 client subnet in an AAAA query is no mismatch: the client's network and the
    records asked for are independent (a dual-stack client behind an IPv4 resolver)."""
    response = ask(server, FARM, [dns.edns.ECSOption("198.51.100.0", 24)], rdtype="AAAA")
    assert response.rcode() == dns.rcode.NOERROR
    assert ecs_of(response)[0].scopelen == 24


def test_the_herd_is_estimated_per_client_subnet(server):
    """One resolver address, three client subnets: three herd keys, one per /24."""
    for subnet in ("10.1.1.0", "10.1.2.0", "10.1.3.0"):
        ask(server, FARM, [dns.edns.ECSOption(subnet, 24)])
        status, info = http_json(f"{server.http_url}/v1/farms/{FARM}/explain")
        assert status == 200
        assert info["last_answer"]["client"] == f"ecs:{subnet}/24"
    ask(server, FARM, [dns.edns.ECSOption("10.1.1.77", 32)])  # the first /24 again
    status, info = http_json(f"{server.http_url}/v1/farms/{FARM}/explain")
    assert info["last_answer"]["client"] == "ecs:10.1.1.0/24"
    ask(server, FARM, [dns.edns.ECSOption("0.0.0.0", 0)])  # opted out: the resolver itself
    status, info = http_json(f"{server.http_url}/v1/farms/{FARM}/explain")
    assert info["last_answer"]["client"] == "127.0.0.1"
