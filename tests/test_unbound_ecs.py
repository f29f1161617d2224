"""ECS through a real resolver: unbound with its subnet cache sends the client's subnet to
lbdns, lbdns scopes its farm answers, and unbound caches one answer per client subnet."""

from __future__ import annotations

import dns.edns
import dns.message
import dns.query
import dns.rcode
import pytest
from support import LbdnsProcess, http_json

from lbdns.testing.unbound import UNBOUND, UnboundProcess

FARM = "web.ecs.test."
ZONE = """\
zone: ecs.test.
soa: {}
ns: [ns1]
records:
  ns1: {A: 192.0.2.53}
farms:
  web:
    ttl: 30
    hosts:
      web1: {a: 192.0.2.1}
      web2: {a: 192.0.2.2}
"""

# ECS to lbdns, for every query (also when the client sent none): unbound takes the client's own
# ECS when it has one, else the client's address.
SERVER = """\
    qname-minimisation: no
    prefetch: no
    serve-expired: no
    send-client-subnet: 127.0.0.1
    client-subnet-always-forward: yes
    max-client-subnet-ipv4: 24
"""

pytestmark = pytest.mark.skipif(UNBOUND is None, reason="unbound is not installed")


def resolve(port: int, subnet: str | None) -> dns.message.Message:
    options = [dns.edns.ECSOption(subnet, 24)] if subnet else []
    query = dns.message.make_query(FARM, "A", use_edns=0, options=options)
    return dns.query.udp(query, "127.0.0.1", port=port, timeout=5)


def test_unbound_sends_the_client_subnet_and_caches_per_scope(tmp_path):
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "ecs.yaml").write_text(ZONE)
    with (
        LbdnsProcess(tmp_path, zones=zones) as lbdns,
        UnboundProcess(
            tmp_path, "ecs.test.", lbdns.port, SERVER, "subnetcache iterator"
        ) as unbound,
    ):
        port = unbound.port

        def explain() -> dict:
            status, body = http_json(f"{lbdns.http_url}/v1/farms/{FARM}/explain")
            assert status == 200
            return body

        def answers() -> int:
            return sum(h["answers"] for h in explain()["hosts"])

        for i, subnet in enumerate(("10.1.1.0", "10.1.2.0", "10.1.3.0")):
            response = resolve(port, subnet)
            assert response.rcode() == dns.rcode.NOERROR
            # lbdns saw the client's subnet, not the resolver's address.
            assert explain()["last_answer"]["client"] == f"ecs:{subnet}/24"
            assert answers() == i + 1
            # unbound passes the scope back to its client.
            (echo,) = [o for o in response.options if o.otype == dns.edns.ECS]
            assert echo.scopelen == 24
        # The same subnets again: unbound answers from its per-subnet cache.
        for subnet in ("10.1.1.0", "10.1.2.99", "10.1.3.0"):
            assert resolve(port, subnet).rcode() == dns.rcode.NOERROR
        assert answers() == 3
        # A client without ECS: unbound sends its address's /24.
        assert resolve(port, None).rcode() == dns.rcode.NOERROR
        assert explain()["last_answer"]["client"] == "ecs:127.0.0.0/24"
        assert answers() == 4
