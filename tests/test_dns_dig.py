"""The answers as ``dig`` (BIND's client) sees them, over UDP and TCP, IPv4 and IPv6."""

from __future__ import annotations

import re
import subprocess

import pytest
from support import which

DIG = which("dig")

pytestmark = pytest.mark.skipif(
    DIG is None, reason="dig is not installed (tests/run.sh installs it)"
)


@pytest.fixture(scope="module")
def server(auth_server):
    return auth_server


def dig(server, *args: str, host: str | None = None) -> str:
    host = host or server.host
    port = next(p for h, p in server.dns if h == host)
    result = subprocess.run(
        [DIG, f"@{host}", "-p", str(port), "+time=2", "+tries=1", *args],
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def flags(output: str) -> set[str]:
    match = re.search(r";; flags: ([a-z ]+);", output)
    assert match, output
    return set(match.group(1).split())


def status(output: str) -> str:
    match = re.search(r"status: ([A-Z]+)", output)
    assert match, output
    return match.group(1)


@pytest.mark.parametrize("transport", ["+notcp", "+tcp"])
def test_static_answer_flags(server, transport):
    out = dig(server, "mail.example.test.", "A", transport)
    assert status(out) == "NOERROR"
    assert flags(out) == {"qr", "aa", "rd"}  # dig sets RD; RA is never set
    assert re.search(r"^mail\.example\.test\.\s+300\s+IN\s+A\s+192\.0\.2\.25$", out, re.M)
    assert "udp: 1232" in out  # the EDNS payload we advertise
    out = dig(server, "mail.example.test.", "A", "+norecurse", transport)
    assert flags(out) == {"qr", "aa"}


def test_mixed_case_question_kept(server):
    out = dig(server, "MaIl.ExAmPlE.tEsT.", "A")
    assert re.search(r"^;MaIl\.ExAmPlE\.tEsT\.\s+IN\s+A$", out, re.M)
    assert "WARNING" not in out.replace("WARNING: recursion requested but not available", "")


def test_short_answers(server):
    assert dig(server, "+short", "chain1.example.test.").split() == [
        "chain2.example.test.",
        "chain3.example.test.",
        "192.0.2.33",
    ]
    assert dig(server, "+short", "example.test.", "MX").splitlines() == [
        "10 mail.example.test.",
        "20 mail2.example.test.",
    ]
    assert dig(server, "+short", "chat.example.test.").strip() in {"192.0.2.10", "192.0.2.11"}


def test_nxdomain_and_nodata(server):
    out = dig(server, "missing.example.test.")
    assert status(out) == "NXDOMAIN"
    assert re.search(r"^example\.test\.\s+60\s+IN\s+SOA\s+ns1\.example\.test\.", out, re.M)
    out = dig(server, "mail.example.test.", "AAAA")
    assert status(out) == "NOERROR"
    assert "ANSWER: 0" in out and "AUTHORITY: 1" in out


def test_refused_outside(server):
    out = dig(server, "example.org.")
    assert status(out) == "REFUSED"
    assert "aa" not in flags(out)


def test_truncation_then_tcp_retry(server):
    # dig retries over TCP by itself on TC=1 and shows the full answer.
    out = dig(server, "big.example.test.", "TXT")
    assert "Truncated, retrying in TCP mode" in out
    assert "ANSWER: 12" in out
    out = dig(server, "big.example.test.", "TXT", "+ignore")
    assert "tc" in flags(out)
    assert "ANSWER: 0" in out


def test_badvers(server):
    out = dig(server, "mail.example.test.", "+edns=1", "+noednsneg")
    assert status(out) == "BADVERS"


def test_ipv6(server):
    for transport in ("+notcp", "+tcp"):
        out = dig(server, "+short", "v6only.example.test.", "AAAA", transport, host="::1")
        assert out.strip() == "2001:db8::66"


def test_axfr_refused(server):
    out = dig(server, "example.test.", "AXFR")
    assert "Transfer failed" in out
