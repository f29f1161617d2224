"""ECS through a real resolver: unbound with its subnet cache sends the client's subnet to
lbdns, lbdns scopes its farm answers, and unbound caches one answer per client subnet."""

from __future__ import annotations

import subprocess

import dns.edns
import dns.message
import dns.query
import dns.rcode
import pytest
from support import LbdnsProcess, free_port, http_json, stop_process, which
from test_unbound import UNBOUND, wait_ready

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

CONFIG = """\
server:
    interface: 127.0.0.1
    port: {port}
    do-ip6: no
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "{tmp}"
    pidfile: ""
    use-syslog: no
    logfile: "{tmp}/unbound.log"
    verbosity: 1
    num-threads: 1
    module-config: "subnetcache iterator"
    do-not-query-localhost: no
    access-control: 127.0.0.0/8 allow
    local-zone: "test." nodefault
    domain-insecure: "ecs.test."
    qname-minimisation: no
    prefetch: no
    serve-expired: no
    # ECS to lbdns, for every query (also when the client sent none): unbound takes the
    # client's own ECS when it has one, else the client's address.
    send-client-subnet: 127.0.0.1
    client-subnet-always-forward: yes
    max-client-subnet-ipv4: 24

remote-control:
    control-enable: no

stub-zone:
    name: "ecs.test."
    stub-addr: 127.0.0.1@{lbdns_port}
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
    with LbdnsProcess(tmp_path, zones=zones) as lbdns:
        port = free_port()
        config = tmp_path / "unbound.conf"
        config.write_text(CONFIG.format(port=port, tmp=tmp_path, lbdns_port=lbdns.port))
        check = subprocess.run(
            [which("unbound-checkconf") or "unbound-checkconf", str(config)],
            capture_output=True,
            text=True,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        proc = subprocess.Popen(
            [UNBOUND, "-d", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        try:
            wait_ready(port, proc, tmp_path)

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
        finally:
            stop_process(proc)
