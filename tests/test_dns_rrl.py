"""Response rate limiting over real UDP with dnspython clients bound to distinct loopback
networks (127.0.x.0/24): a flooding network is cut to its rate, every slip-th reply is TC=1 and
is answered over TCP, other networks, other classes and whitelisted networks are untouched."""

from __future__ import annotations

import socket
import time

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rrset
import pytest
from obs_support import scrape, value
from support import ROOT, LbdnsProcess

from lbdns.dnsserver.rrl import ANSWER, BIG, RateLimiter, RrlSettings, truncated

ZONES = ROOT / "tests" / "zones" / "auth"
BURST = 5


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rrl")
    config = tmp / "lbdns.yaml"
    # One token a second after a burst of 5: a test's few hundred milliseconds earn at most
    # a token or two more.
    config.write_text(
        "rrl:\n  enabled: true\n  rate: 1\n  burst: 5\n  slip: 2\n  whitelist: [127.0.9.0/24]\n"
    )
    with LbdnsProcess(tmp, zones=ZONES, config=config) as proc:
        yield proc


def flood(server, source: str, name: str, count: int, rdtype: str = "A", edns: bool = False):
    """Send ``count`` queries back to back from ``source``; (full answers, TC=1 replies, seconds
    taken). Replies are read until every query is accounted for by the server's counters."""
    before = dropped_total(server)
    query = dns.message.make_query(name, rdtype, use_edns=0 if edns else None)
    started = time.monotonic()
    replies = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        for i in range(count):
            query.id = i
            sock.sendto(query.to_wire(), server.dns[0])
        elapsed = time.monotonic() - started
        sock.settimeout(0.5)
        # Every query is either answered (a reply to read, maybe TC=1) or dropped (counted).
        while len(replies) < count - (dropped_total(server) - before):
            try:
                replies.append(dns.message.from_wire(sock.recv(4096)))
            except TimeoutError:
                break
    full = [r for r in replies if not r.flags & dns.flags.TC]
    truncated = [r for r in replies if r.flags & dns.flags.TC]
    return full, truncated, elapsed


def dropped_total(server) -> float:
    samples = scrape(server.http_url)
    return sum(
        v
        for (name, labels), v in samples.items()
        if name == "lbdns_dns_rrl_limited_total" and ("action", "dropped") in labels
    )


def test_a_flooding_network_is_cut_to_its_rate_and_every_second_reply_slips(server):
    full, truncated, elapsed = flood(server, "127.0.1.1", "mail.example.test.", 40)
    assert BURST <= len(full) <= BURST + 1 + int(elapsed)
    limited = 40 - len(full)
    assert abs(len(truncated) - limited / 2) <= 1  # slip 2: every second limited reply
    for reply in truncated:
        assert not reply.answer and reply.question[0].name.to_text() == "mail.example.test."
    samples = scrape(server.http_url)
    slipped = value(
        samples, "lbdns_dns_rrl_limited_total", **{"class": "answer", "action": "slipped"}
    )
    dropped = value(
        samples, "lbdns_dns_rrl_limited_total", **{"class": "answer", "action": "dropped"}
    )
    assert slipped == len(truncated) and slipped + dropped == limited


def test_other_networks_other_classes_and_the_whitelist_are_untouched(server):
    flood(server, "127.0.2.1", "mail.example.test.", 30)  # exhaust 127.0.2.0/24's answers
    # Another address of the same /24 shares its bucket...
    full, _, _ = flood(server, "127.0.2.77", "mail.example.test.", 3)
    assert len(full) <= 1
    # ...but NXDOMAIN is a class of its own, and another /24 has buckets of its own.
    full, _, _ = flood(server, "127.0.2.1", "nope.example.test.", BURST)
    assert len(full) == BURST and all(r.rcode() == dns.rcode.NXDOMAIN for r in full)
    for _ in range(BURST):
        response = dns.query.udp(
            dns.message.make_query("mail.example.test.", "A"),
            server.host,
            port=server.port,
            source="127.0.3.1",
            timeout=3,
        )
        assert response.answer[0][0].address == "192.0.2.25"
    full, truncated, _ = flood(server, "127.0.9.1", "mail.example.test.", 40)
    assert len(full) == 40 and not truncated  # whitelisted


def test_a_slipped_reply_is_answered_over_tcp(server):
    flood(server, "127.0.4.1", "mail.example.test.", 30, edns=True)
    # The next limited replies alternate drop and TC=1: a resolver that gets the TC=1 reply
    # asks again over TCP, which is never limited.
    query = dns.message.make_query("mail.example.test.", "A", use_edns=0)
    for _ in range(2):
        try:
            response, used_tcp = dns.query.udp_with_fallback(
                query, server.host, port=server.port, source="127.0.4.1", timeout=0.5
            )
        except dns.exception.Timeout:
            continue  # this one was dropped
        assert used_tcp and response.answer[0][0].address == "192.0.2.25"
        assert response.edns == 0
        break
    else:
        pytest.fail("neither of two limited queries slipped")


def test_tcp_is_never_limited(server):
    flood(server, "127.0.5.1", "mail.example.test.", 30)
    for _ in range(10):
        response = dns.query.tcp(
            dns.message.make_query("mail.example.test.", "A"),
            server.host,
            port=server.port,
            source="127.0.5.1",
            timeout=3,
        )
        assert response.answer[0][0].address == "192.0.2.25"


# -- the limiter itself, with a clock of our own ------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def answer(size: int = 60, rcode: int = 0, ancount: int = 1) -> bytes:
    head = b"\x12\x34\x84" + bytes((rcode,)) + b"\x00\x01\x00" + bytes((ancount,)) + b"\x00" * 4
    return head.ljust(size, b"\x00")


def test_bucket_refills_at_its_rate_and_caps_at_its_burst():
    clock = Clock()
    limiter = RateLimiter(RrlSettings(enabled=True, rate=10, burst=3, slip=0), clock=clock)
    assert [limiter.allow(answer(), "192.0.2.1") for _ in range(4)] == [True, True, True, None]
    clock.now += 0.1  # one token back
    assert limiter.allow(answer(), "192.0.2.200") is True  # same /24, same bucket
    assert limiter.allow(answer(), "192.0.2.1") is None
    clock.now += 60  # a long pause refills only up to the burst
    assert [limiter.allow(answer(), "192.0.2.1") for _ in range(4)] == [True, True, True, None]
    assert limiter.dropped[ANSWER] == 3 and limiter.slipped[ANSWER] == 0


def test_classes_have_buckets_of_their_own_and_big_wins():
    clock = Clock()
    limiter = RateLimiter(RrlSettings(enabled=True, rate=1, burst=1, slip=1), clock=clock)
    client = "2001:db8:1:2::1"
    assert limiter.allow(answer(), client) is True
    assert limiter.allow(answer(), client) is False  # slip 1: every limited reply is TC=1
    assert limiter.allow(answer(rcode=3, ancount=0), client) is True  # NXDOMAIN
    assert limiter.allow(answer(ancount=0), client) is True  # NODATA
    assert limiter.allow(answer(rcode=5, ancount=0), client) is True  # REFUSED: error
    assert limiter.allow(answer(size=1500), client) is True  # big
    assert limiter.allow(answer(size=1500, rcode=3), client) is False  # big, whatever rcode
    assert limiter.allow(answer(), "2001:db8:1:ff::9") is False  # the same /56
    assert limiter.allow(answer(), "2001:db8:1:100::1") is True  # another /56
    assert limiter.slipped[ANSWER] == 2 and limiter.slipped[BIG] == 1


def test_tables_start_over_when_full():
    limiter = RateLimiter(RrlSettings(enabled=True, rate=1, burst=1, max_networks=100))
    for i in range(250):
        limiter.allow(answer(), f"10.0.{i}.1")
    assert len(limiter.networks) <= 100 and limiter.resets >= 2


def test_truncated_keeps_header_question_and_opt():
    query = dns.message.make_query("mail.example.test.", "A", use_edns=0)
    response = dns.message.make_response(query)
    response.answer.append(dns.rrset.from_text("mail.example.test.", 300, "IN", "A", "192.0.2.25"))
    cut = dns.message.from_wire(truncated(response.to_wire()))
    assert cut.flags & dns.flags.TC and cut.id == query.id
    assert not cut.answer and cut.question == query.question and cut.edns == 0
