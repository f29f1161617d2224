"""A real recursive resolver (unbound) resolves names through lbdns via a stub zone."""

from __future__ import annotations

import subprocess
import time

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from support import ROOT, LbdnsProcess, free_port, stop_process, which

ZONES = ROOT / "tests" / "zones" / "auth"
UNBOUND = which("unbound")

pytestmark = pytest.mark.skipif(
    UNBOUND is None, reason="unbound is not installed (tests/run.sh installs it)"
)

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
    module-config: "iterator"
    do-not-query-localhost: no
    access-control: 127.0.0.0/8 allow
    # test. is one of unbound's default blocked zones (RFC 6761)
    local-zone: "test." nodefault
    domain-insecure: "example.test."
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

remote-control:
    control-enable: no

stub-zone:
    name: "example.test."
    stub-addr: 127.0.0.1@{lbdns_port}
"""


@pytest.fixture(scope="module")
def resolver(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("unbound")
    with LbdnsProcess(tmp, zones=ZONES, http=None) as lbdns:
        port = free_port()
        config = tmp / "unbound.conf"
        config.write_text(CONFIG.format(port=port, tmp=tmp, lbdns_port=lbdns.port))
        check = subprocess.run(
            [which("unbound-checkconf") or "unbound-checkconf", str(config)],
            capture_output=True,
            text=True,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        proc = subprocess.Popen(
            [UNBOUND, "-d", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_ready(port, proc, tmp)
            yield port
        finally:
            stop_process(proc)


def wait_ready(port: int, proc: subprocess.Popen, tmp) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = (tmp / "unbound.log").read_text() if (tmp / "unbound.log").exists() else ""
            raise RuntimeError(f"unbound exited with {proc.returncode}:\n{log}")
        try:
            # A name outside the stub: unbound answers from its local data without recursion.
            dns.query.udp(
                dns.message.make_query("localhost.", "A"), "127.0.0.1", port=port, timeout=0.5
            )
            return
        except (dns.exception.Timeout, ConnectionRefusedError):
            time.sleep(0.1)
    raise RuntimeError("unbound did not start answering")


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
