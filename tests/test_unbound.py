"""A real recursive resolver (unbound) resolves names through lbdns via a stub zone."""

from __future__ import annotations

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from support import AUTH_ZONES, LbdnsProcess

from lbdns.testing.unbound import UNBOUND, UnboundProcess

pytestmark = pytest.mark.skipif(
    UNBOUND is None, reason="unbound is not installed (tests/run.sh installs it)"
)

SERVER = """\
    # Mixed-case query names to the authoritative server: lbdns must echo them exactly.
    use-caps-for-id: yes
    harden-glue: no
    harden-referral-path: no
    harden-below-nxdomain: no
    harden-dnssec-stripped: no
    harden-algo-downgrade: no
    aggressive-nsec: no
    qname-minimisation: yes
    prefetch: no
    serve-expired: no
    infra-host-ttl: 60
"""


@pytest.fixture(scope="module")
def resolver(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("unbound")
    with (
        LbdnsProcess(tmp, zones=AUTH_ZONES, http=None) as lbdns,
        UnboundProcess(tmp, "example.test.", lbdns.port, SERVER) as unbound,
    ):
        yield unbound.port


def resolve(port: int, name: str, rdtype: str = "A") -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)  # RD set: ask the resolver to recurse
    response = dns.query.udp(query, "127.0.0.1", port=port, timeout=5)
    if response.flags & dns.flags.TC:
        response = dns.query.tcp(query, "127.0.0.1", port=port, timeout=5)
    return response


def addresses(response: dns.message.Message, rdtype: int = 1) -> set[str]:
    return {rr.address for rrset in response.answer if rrset.rdtype == rdtype for rr in rrset}


def test_farm_name(resolver):
    response = resolve(resolver, "chat.example.test.")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.RA  # the resolver's answer, not lbdns's
    assert len(addresses(response)) == 1
    assert addresses(response) <= {"192.0.2.10", "192.0.2.11"}
    assert response.answer[0].ttl <= 5


def test_static_name(resolver):
    response = resolve(resolver, "mail.example.test.")
    assert response.rcode() == dns.rcode.NOERROR
    assert addresses(response) == {"192.0.2.25"}
    response = resolve(resolver, "v6only.example.test.", "AAAA")
    assert addresses(response, 28) == {"2001:db8::66"}


def test_cname_to_a_farm(resolver):
    response = resolve(resolver, "www.example.test.")
    assert response.rcode() == dns.rcode.NOERROR
    assert [rrset.rdtype for rrset in response.answer] == [5, 1]
    assert addresses(response) <= {"192.0.2.10", "192.0.2.11"}


def test_cname_chain(resolver):
    response = resolve(resolver, "chain1.example.test.")
    assert addresses(response) == {"192.0.2.33"}


def test_missing_name_is_nxdomain(resolver):
    response = resolve(resolver, "missing.example.test.")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.answer == []
    soa = response.authority[0]
    assert soa.rdtype == 6 and soa.ttl <= 60


def test_nodata(resolver):
    response = resolve(resolver, "mail.example.test.", "AAAA")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.answer == []


def test_big_answer_via_tcp_fallback(resolver):
    # lbdns truncates over UDP; unbound retries over TCP and passes on the whole RRset.
    response = resolve(resolver, "big.example.test.", "TXT")
    assert response.rcode() == dns.rcode.NOERROR
    assert len(response.answer[0]) == 12


def test_wildcard(resolver):
    response = resolve(resolver, "Some.Where.apps.example.test.")
    assert addresses(response) == {"192.0.2.80"}
