"""Identity queries in class CH: id.server, hostname.bind, version.bind, version.server are
answered only when the config enables them, and the version can be hidden (real process)."""

from __future__ import annotations

import subprocess

import dns.message
import dns.query
import dns.rcode
import dns.rdataclass
import pytest
from support import ROOT, LbdnsProcess, which

ZONES = ROOT / "tests" / "zones" / "auth"
NAMES = ("id.server.", "hostname.bind.", "version.bind.", "version.server.")


def start(tmp_path, text: str | None) -> LbdnsProcess:
    config = None
    if text is not None:
        config = tmp_path / "lbdns.yaml"
        config.write_text(text)
    return LbdnsProcess(tmp_path, zones=ZONES, config=config, http=None).start()


def ask_ch(server, name: str, tcp: bool = False, edns: bool = False):
    query = dns.message.make_query(name, "TXT", rdclass="CH", use_edns=0 if edns else None)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, server.host, port=server.port, timeout=3)


def text_of(response) -> str:
    (rrset,) = response.answer
    assert rrset.rdclass == dns.rdataclass.CH and rrset.name == response.question[0].name
    return b"".join(rrset[0].strings).decode()


@pytest.mark.parametrize(
    "text", [None, "identity: {enabled: false, id: ns1}\n"], ids=["default", "off"]
)
def test_identity_queries_refused_unless_enabled(tmp_path, text):
    server = start(tmp_path, text)
    try:
        for name in NAMES:
            response = ask_ch(server, name)
            assert response.rcode() == dns.rcode.REFUSED and not response.answer
    finally:
        server.stop()


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_identity_and_version_when_enabled(tmp_path, tcp):
    server = start(tmp_path, "identity: {enabled: true, id: ns1.lab}\n")
    try:
        assert text_of(ask_ch(server, "id.server.", tcp)) == "ns1.lab"
        assert text_of(ask_ch(server, "HOSTNAME.bind.", tcp, edns=True)) == "ns1.lab"
        assert text_of(ask_ch(server, "version.bind.", tcp)).startswith("lbdns ")
        assert text_of(ask_ch(server, "Version.Server.", tcp)).startswith("lbdns ")
        # Other CH names, and these names in class IN, are not identity queries.
        assert ask_ch(server, "authors.bind.", tcp).rcode() == dns.rcode.REFUSED
        query = dns.message.make_query("id.server.", "TXT")
        assert (
            dns.query.udp(query, server.host, port=server.port, timeout=3).rcode()
            == dns.rcode.REFUSED
        )
    finally:
        server.stop()


def test_hide_version(tmp_path):
    server = start(tmp_path, "identity: {enabled: true, id: ns1.lab, hide_version: true}\n")
    try:
        assert text_of(ask_ch(server, "id.server.")) == "ns1.lab"
        for name in ("version.bind.", "version.server."):
            assert ask_ch(server, name).rcode() == dns.rcode.REFUSED
        dig = which("dig")
        if dig is not None:
            out = subprocess.run(
                [
                    dig,
                    "@" + server.host,
                    "-p",
                    str(server.port),
                    "-c",
                    "CH",
                    "-t",
                    "TXT",
                    "hostname.bind",
                ],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout
            assert '"ns1.lab"' in out and "status: NOERROR" in out
    finally:
        server.stop()
