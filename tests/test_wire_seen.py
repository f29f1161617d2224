"""Repeated queries: a query whose bytes past the ID were seen before is answered from what was
remembered for it. These check that such answers stay exact: the ID and the question's case are
the new query's, flags and EDNS follow each query, and a reload replaces what was remembered."""

import shutil
import signal
import socket
import struct
import time

import dns.flags
import dns.message
import dns.rcode
from support import EXAMPLE_ZONES, LbdnsProcess


def _exchange(server: LbdnsProcess, wire: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(wire, (server.host, server.port))
        return sock.recv(65535)


def _query(name: str, rdtype: str = "A", qid: int = 1, **kw) -> bytes:
    message = dns.message.make_query(name, rdtype, **kw)
    message.id = qid
    return message.to_wire()


def test_repeats_echo_their_own_id_flags_and_case(lbdns):
    plain = _query("mail.example.test.", qid=1)
    first = _exchange(lbdns, plain)
    for qid in (2, 0xFFFF, 7):  # the same bytes past the ID
        again = _exchange(lbdns, struct.pack("!H", qid) + plain[2:])
        assert again == struct.pack("!H", qid) + first[2:]

    no_rd = dns.message.make_query("mail.example.test.", "A")
    no_rd.flags &= ~dns.flags.RD
    no_rd.id = 9
    for _ in range(2):
        response = dns.message.from_wire(_exchange(lbdns, no_rd.to_wire()))
        assert not response.flags & dns.flags.RD and response.flags & dns.flags.AA
    with_rd = dns.message.from_wire(_exchange(lbdns, plain))
    assert with_rd.flags & dns.flags.RD

    mixed = _query("MaIl.ExAmPlE.tEsT.", qid=3)
    for _ in range(2):
        response = _exchange(lbdns, mixed)
        assert b"\x04MaIl\x07ExAmPlE\x04tEsT\x00" in response
        assert dns.message.from_wire(response).answer[0][0].address == "192.0.2.25"

    edns = _query("mail.example.test.", qid=4, use_edns=0, payload=4096, want_dnssec=True)
    for _ in range(2):
        response = dns.message.from_wire(_exchange(lbdns, edns))
        assert response.edns == 0 and response.ednsflags & dns.flags.DO
    for _ in range(2):  # the plain query seen before still gets no OPT
        assert dns.message.from_wire(_exchange(lbdns, plain)).edns == -1


def test_repeated_farm_query_still_chooses_a_host_per_query(lbdns):
    query = _query("chat.example.test.", "A", qid=5)
    addresses = set()
    for qid in range(40):
        wire = struct.pack("!H", qid) + query[2:]
        response = _exchange(lbdns, wire)
        assert response[:2] == wire[:2]
        message = dns.message.from_wire(response)
        assert message.rcode() == dns.rcode.NOERROR
        addresses |= {rr.address for rrset in message.answer for rr in rrset}
    # With no load reported the hosts are answered in turn, by weight: more than one of them.
    assert len(addresses) > 1 and addresses <= {"192.0.2.10", "192.0.2.11", "192.0.2.12"}


def test_reload_replaces_remembered_answers(tmp_path):
    zones = tmp_path / "zones"
    shutil.copytree(EXAMPLE_ZONES, zones)
    with LbdnsProcess(tmp_path, zones=zones, http=None) as server:
        query = _query("mail.example.test.", qid=6)
        for _ in range(3):
            answer = dns.message.from_wire(_exchange(server, query)).answer
            assert answer[0][0].address == "192.0.2.25"
        zone_file = zones / "example.test.yaml"
        zone_file.write_text(
            zone_file.read_text().replace("mail: {A: 192.0.2.25}", "mail: {A: 192.0.2.26}")
        )
        server.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            answer = dns.message.from_wire(_exchange(server, query)).answer
            if answer[0][0].address == "192.0.2.26":
                break
            time.sleep(0.05)
        assert answer[0][0].address == "192.0.2.26"
