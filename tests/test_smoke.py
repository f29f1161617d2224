"""The example zone served by a real process answers over UDP and TCP."""

import dns.rcode


def test_farm_name_answers_over_udp_and_tcp(lbdns):
    for tcp in (False, True):
        response = lbdns.query("chat.example.test.", "A", tcp=tcp)
        assert response.rcode() == dns.rcode.NOERROR
        addresses = {rr.address for rrset in response.answer for rr in rrset}
        assert addresses <= {"192.0.2.10", "192.0.2.11", "192.0.2.12"}
        assert len(addresses) == 1
