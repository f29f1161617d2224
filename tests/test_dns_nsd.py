"""lbdns answers like NSD: the same zones served by both, the same questions, the same answers.

NSD serves tests/zones/auth converted to RFC 1035 zone files (farm names left out: their answers
change per query by design). For every question the rcode, AA, TC, the answer section and the
negative-answer SOA (with its TTL) must match. NSD adds NS and glue to positive answers, which
lbdns leaves out (minimal responses), so the authority and additional sections are not compared
otherwise; ANY is minimal in lbdns (RFC 8482), so only its rcode and flags are compared.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import dns.exception
import dns.flags
import dns.message
import dns.query
import pytest
from support import AUTH_ZONES, LbdnsProcess, stop_process, which

from lbdns.testing.ports import PortTaken, bind_failed, dns_identity, start_on_free_port
from lbdns.zone.model import Zone
from lbdns.zone.parse import load_folder

NSD = which("nsd")

pytestmark = pytest.mark.skipif(
    NSD is None, reason="nsd is not installed (tests/run.sh installs it)"
)

NAMES = [
    "example.test.",
    "mail.example.test.",
    "MaIl.ExAmPlE.test.",
    "missing.example.test.",
    "deep.example.test.",
    "b.deep.example.test.",
    "a.b.deep.example.test.",
    "c.a.b.deep.example.test.",
    "alias.example.test.",
    "chain1.example.test.",
    "loop1.example.test.",
    "dangling.example.test.",
    "away.example.test.",
    "cross.example.test.",
    "x.apps.example.test.",
    "y.x.apps.example.test.",
    "apps.example.test.",
    "*.apps.example.test.",
    "foo.wild.example.test.",
    "_tcp.example.test.",
    "_sip._tcp.example.test.",
    "v6only.example.test.",
    "multi.example.test.",
    "big.example.test.",
    "long.example.test.",
    "utf.example.test.",
    "x.mail.example.test.",
    "10.2.0.192.in-addr.example.test.",
    "other.test.",
    "nope.other.test.",
    "many.test.",
    "example.com.",
    "test.",
]
TYPES = ["A", "AAAA", "TXT", "MX", "NS", "SOA", "CNAME", "SRV", "CAA", "PTR", "DS", "ANY"]


def zone_file(zone: Zone) -> str:
    lines = [f"$ORIGIN {zone.origin}", zone.soa.toZone()]
    for rrsets in zone.rrsets.values():
        for rtype, rrs in rrsets.items():
            if rtype != 6:
                lines += [rr.toZone() for rr in rrs]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nsd")
    zone_files = {}
    for origin, zone in load_folder(AUTH_ZONES).items():
        zone_files[origin] = tmp / f"{origin}zone"
        zone_files[origin].write_text(zone_file(zone))
    nsd = start_on_free_port(lambda port: start_nsd(tmp, port, zone_files))
    try:
        with LbdnsProcess(tmp, zones=AUTH_ZONES, http=None) as lbdns:
            yield lbdns.port, nsd.port
    finally:
        stop_process(nsd.proc)


class Nsd(NamedTuple):
    proc: subprocess.Popen
    port: int


def start_nsd(tmp: Path, port: int, zone_files: dict[str, Path]) -> Nsd:
    """NSD on 127.0.0.1:``port``, once it answers with this start's identity (so not another
    server that holds the port); ``PortTaken`` when it could not bind the port."""
    identity = f"nsd-test-{uuid.uuid4().hex}"
    conf = [
        "server:",
        "  server-count: 1",
        "  ip-address: 127.0.0.1",
        f"  port: {port}",
        "  reuseport: no",
        f'  identity: "{identity}"',
        "  do-ip6: no",
        '  username: ""',
        '  chroot: ""',
        f'  zonesdir: "{tmp}"',
        f'  pidfile: "{tmp}/nsd.pid"',
        '  database: ""',
        f'  xfrdfile: "{tmp}/xfrd.state"',
        f'  xfrdir: "{tmp}"',
        f'  zonelistfile: "{tmp}/zone.list"',
        f'  logfile: "{tmp}/nsd.log"',
        "  rrl-ratelimit: 0",
        "remote-control:",
        "  control-enable: no",
    ]
    for origin, path in zone_files.items():
        conf += ["zone:", f'  name: "{origin}"', f'  zonefile: "{path}"']
    (tmp / "nsd.conf").write_text("\n".join(conf) + "\n")
    log = tmp / "nsd.log"
    since = log.stat().st_size if log.exists() else 0
    proc = subprocess.Popen(
        [NSD, "-d", "-c", str(tmp / "nsd.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 15
    query = dns.message.make_query("example.test.", "SOA")
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = log.read_bytes()[since:].decode(errors="replace") if log.exists() else ""
            failed = PortTaken if bind_failed(text) else RuntimeError
            raise failed(f"nsd exited with {proc.returncode}:\n{text}")
        # Its own identity first, then its zones loaded: the SOA is answered.
        if dns_identity(port) == identity:
            try:
                if dns.query.udp(query, "127.0.0.1", port=port, timeout=0.3).answer:
                    return Nsd(proc, port)
            except dns.exception.Timeout:
                pass
        time.sleep(0.1)
    stop_process(proc)
    raise RuntimeError("nsd did not start answering")


def summary(response: dns.message.Message, rdtype: str) -> tuple:
    flags = (
        response.rcode(),
        bool(response.flags & dns.flags.AA),
        bool(response.flags & dns.flags.TC),
    )
    if rdtype == "ANY":
        return flags
    answer = sorted(
        f"{r.name} {r.ttl} {r.rdtype} {sorted(rr.to_text() for rr in r)}" for r in response.answer
    )
    soa = [(r.name.to_text(), r.ttl) for r in response.authority if r.rdtype == 6]
    return (*flags, answer, soa if not response.answer or response.rcode() else None)


@pytest.mark.parametrize("edns", [False, 0])
@pytest.mark.parametrize("rdtype", TYPES)
def test_same_answers_as_nsd(servers, rdtype, edns):
    lbdns_port, nsd_port = servers
    differences = []
    for name in NAMES:
        query = dns.message.make_query(name, rdtype, use_edns=edns)
        query.flags = 0  # no RD: a plain question to an authoritative server
        ours = dns.query.udp(query, "127.0.0.1", port=lbdns_port, timeout=3)
        theirs = dns.query.udp(query, "127.0.0.1", port=nsd_port, timeout=3)
        if summary(ours, rdtype) != summary(theirs, rdtype):
            differences.append(
                f"{name} {rdtype}: lbdns {summary(ours, rdtype)} nsd {summary(theirs, rdtype)}"
            )
    assert differences == []
