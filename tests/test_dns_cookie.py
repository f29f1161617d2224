"""DNS cookies (RFC 7873, server cookies as RFC 9018) with dnspython and dig: the RFC's test
vectors, the age window, a secret rotated without a flag day, BADCOOKIE only where rate
limiting would slip, and a good server cookie bypassing rate limiting."""

from __future__ import annotations

import re
import socket
import subprocess

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from dnsclient import flags_of, header, opt, question, udp
from obs_support import scrape, value
from support import ROOT, LbdnsProcess, which

from lbdns.dnsserver.cookie import Cookies, CookieSettings, MalformedCookie, server_cookie

ZONES = ROOT / "tests" / "zones" / "auth"
SECRET = "e5e973e5a6b2a43f48e7dc849e37bfcf"
NEW_SECRET = "445536bcd2513298075a5d379663c962"
CLIENT = bytes.fromhex("2464c4abcf10c957")

# RFC 9018 appendix A: (secret, client cookie, client address, time, server cookie).
VECTORS = [
    (SECRET, "2464c4abcf10c957", "198.51.100.100", 1559731985, "010000005cf79f111f8130c3eee29480"),
    (SECRET, "2464c4abcf10c957", "198.51.100.100", 1559734385, "010000005cf7a871d4a564a1442aca77"),
    (SECRET, "fc93fc62807ddb86", "203.0.113.203", 1559734700, "010000005cf7a9acf73a7810aca2381e"),
    (
        NEW_SECRET,
        "22681ab97d52c298",
        "2001:db8:220:1:59de:d0f4:8769:82b8",
        1559741961,
        "010000005cf7c609a6bb79d16625507a",
    ),
]


def packed(address: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in address else socket.AF_INET, address)


@pytest.mark.parametrize("secret,client,address,at,expected", VECTORS)
def test_rfc9018_vectors(secret, client, address, at, expected):
    cookie = server_cookie(bytes.fromhex(secret), bytes.fromhex(client), packed(address), at)
    assert cookie.hex() == expected


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def option_data(hexcookie: str) -> tuple[bytes, int, int]:
    raw = bytes.fromhex(hexcookie)
    return b"\x00\x0a" + len(raw).to_bytes(2, "big") + raw, 4, len(raw)


def test_check_follows_the_rfc_examples():
    clock = Clock(1559734385)
    cookies = Cookies(CookieSettings(secret=SECRET), clock=clock)
    # A.2: the cookie of A.1, 40 minutes later: good, and renewed (older than half an hour).
    data = option_data("2464c4abcf10c957010000005cf79f111f8130c3eee29480")
    valid, reply = cookies.check(*data, "198.51.100.100")
    assert valid and reply[4:].hex() == "2464c4abcf10c957010000005cf7a871d4a564a1442aca77"
    # A.3: a cookie stamped 1 h 52 min earlier (by another server of the zone, with reserved
    # octets set): too old to accept, so a new one is made, the RFC's.
    clock.now = 1559734700
    data = option_data("fc93fc62807ddb8601abcdef5cf78f71a314227b6679ebf5")
    valid, reply = cookies.check(*data, "203.0.113.203")
    assert not valid and reply[12:].hex() == "010000005cf7a9acf73a7810aca2381e"
    # The good cookie of A.2 from another address is not ours.
    clock.now = 1559734385
    data = option_data("2464c4abcf10c957010000005cf79f111f8130c3eee29480")
    valid, reply = cookies.check(*data, "198.51.100.101")
    assert not valid and reply[4:12] == CLIENT


def test_rotation_accepts_the_previous_secret_and_makes_new_cookies_with_the_new():
    # A.4: a cookie the old secret made is accepted after the roll-over, and renewed.
    old = "dd3bdf9344b678b185a6f5cb60fca715"
    clock = Clock(1559741961)
    rolled = Cookies(CookieSettings(secret=NEW_SECRET, previous_secret=old), clock=clock)
    data = option_data("22681ab97d52c298010000005cf7c57926556bd0934c72f8")
    address = "2001:db8:220:1:59de:d0f4:8769:82b8"
    valid, reply = rolled.check(*data, address)
    assert valid and reply[12:].hex() == "010000005cf7c609a6bb79d16625507a"
    # Without the previous secret it is only a client cookie.
    assert not Cookies(CookieSettings(secret=NEW_SECRET), clock=clock).check(*data, address)[0]


def test_age_window_and_reuse():
    clock = Clock(1_700_000_000)
    cookies = Cookies(CookieSettings(secret=SECRET), clock=clock)
    _, reply = cookies.check(b"\x00\x0a\x00\x08" + CLIENT, 4, 8, "192.0.2.1")
    fresh = reply[4:]
    for offset, good, same in (
        (0, True, True),
        (1800, True, True),  # half an hour: still sent back as it came
        (1801, True, False),  # renewed
        (3600, True, False),
        (3601, False, False),  # over an hour: not accepted
        (-300, True, True),  # five minutes of clock skew
        (-301, False, False),
    ):
        clock.now = 1_700_000_000 + offset
        valid, reply = cookies.check(b"\x00\x0a\x00\x18" + fresh, 4, 24, "192.0.2.1")
        assert valid is good, offset
        assert (reply[4:] == fresh) is same, offset
        assert reply[4:12] == CLIENT


@pytest.mark.parametrize("length", [0, 7, 9, 15, 41])
def test_malformed_lengths(length):
    cookies = Cookies(CookieSettings(secret=SECRET))
    with pytest.raises(MalformedCookie):
        cookies.check(b"x" * 48, 0, length, "192.0.2.1")


# -- over the wire ------------------------------------------------------------------------------


def start(tmp_path, text: str) -> LbdnsProcess:
    config = tmp_path / "lbdns.yaml"
    config.write_text(text)
    return LbdnsProcess(tmp_path, zones=ZONES, config=config).start()


@pytest.fixture
def server(tmp_path):
    proc = start(tmp_path, f"cookies: {{secret: {SECRET}}}\n")
    yield proc
    proc.stop()


def ask(server, cookie: bytes, source: str = "127.0.0.1", tcp: bool = False, name="mail"):
    query = dns.message.make_query(
        f"{name}.example.test.",
        "A",
        use_edns=0,
        options=[dns.edns.CookieOption(cookie[:8], cookie[8:])],
    )
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, server.host, port=server.port, timeout=3, source=source)


def cookie_of(response) -> bytes:
    (option,) = [o for o in response.options if o.otype == dns.edns.COOKIE]
    return option.client + option.server


def cookies_total(server, result: str) -> float:
    return value(scrape(server.http_url), "lbdns_dns_cookies_total", result=result)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_a_client_learns_a_server_cookie_and_returns_it(server, tcp):
    first = ask(server, CLIENT, tcp=tcp)
    assert first.rcode() == dns.rcode.NOERROR and first.answer[0][0].address == "192.0.2.25"
    cookie = cookie_of(first)
    assert cookie[:8] == CLIENT and len(cookie) == 24 and cookie[8] == 1
    again = ask(server, cookie, tcp=tcp)
    assert again.answer[0][0].address == "192.0.2.25"
    assert cookie_of(again) == cookie  # good and young: sent back as it came
    assert cookies_total(server, "valid") == 1 and cookies_total(server, "client_only") == 1
    # A server cookie that is not ours is answered like a client cookie alone, never BADCOOKIE.
    forged_server = b"\x01\x00\x00\x00" + cookie[12:16] + b"\x00" * 8
    forged = ask(server, CLIENT + forged_server, tcp=tcp)
    assert forged.rcode() == dns.rcode.NOERROR and forged.answer
    assert cookie_of(forged)[:8] == CLIENT and cookie_of(forged)[8:] != forged_server
    assert cookies_total(server, "invalid") == 1


def test_malformed_cookie_is_formerr(server):
    for length in (7, 9, 15, 41):
        options = b"\x00\x0a" + length.to_bytes(2, "big") + b"c" * length
        raw = udp(
            server.host,
            server.port,
            header(ar=1) + question("mail.example.test.") + opt(options=options),
        )
        assert raw is not None and flags_of(raw) & 0xF == dns.rcode.FORMERR
    assert cookies_total(server, "malformed") == 4


def test_cookie_answers_still_fit_the_udp_size(server):
    # big.example.test does not fit: TC=1, with the cookie, within 512 octets.
    query = dns.message.make_query(
        "long.example.test.",
        "TXT",
        use_edns=0,
        payload=700,
        options=[dns.edns.CookieOption(CLIENT, b"")],
    )
    raw = udp(server.host, server.port, query.to_wire())
    assert raw is not None and len(raw) <= 700
    response = dns.message.from_wire(raw)
    assert len(cookie_of(response)) == 24
    assert response.flags & dns.flags.TC or response.answer


def test_rotation_without_a_flag_day(tmp_path):
    for folder in ("old", "new"):
        (tmp_path / folder).mkdir()
    old = start(tmp_path / "old", f"cookies: {{secret: {SECRET}}}\n")
    try:
        cookie = cookie_of(ask(old, CLIENT))
    finally:
        old.stop()
    new = start(tmp_path / "new", f"cookies: {{secret: {NEW_SECRET}, previous_secret: {SECRET}}}\n")
    try:
        renewed = cookie_of(ask(new, cookie))
        assert cookies_total(new, "valid") == 1  # the old secret's cookie is accepted...
        assert renewed != cookie and renewed[:8] == CLIENT  # ...and replaced by a new one
        assert cookie_of(ask(new, renewed)) == renewed
        assert cookies_total(new, "valid") == 2
    finally:
        new.stop()


@pytest.fixture
def limited(tmp_path):
    proc = start(
        tmp_path,
        f"cookies: {{secret: {SECRET}}}\nrrl: {{enabled: true, rate: 1, burst: 2, slip: 1}}\n",
    )
    yield proc
    proc.stop()


def test_badcookie_only_where_rate_limiting_would_slip_and_a_good_cookie_bypasses_it(limited):
    source = "127.0.7.1"
    replies = [ask(limited, CLIENT, source=source) for _ in range(6)]
    assert [r.rcode() for r in replies[:2]] == [dns.rcode.NOERROR] * 2  # the burst
    bad = [r for r in replies if r.rcode() == dns.rcode.BADCOOKIE]
    assert len(bad) >= 3  # slip 1: every limited reply, as BADCOOKIE rather than TC=1
    for reply in bad:
        assert not reply.answer and not reply.flags & dns.flags.TC
        assert not reply.flags & dns.flags.AA
    cookie = cookie_of(bad[-1])
    # With the server cookie it handed out, the client is never limited.
    for _ in range(10):
        response = ask(limited, cookie, source=source)
        assert response.rcode() == dns.rcode.NOERROR and response.answer
    assert cookies_total(limited, "badcookie") == len(bad)
    # A client without any cookie in the same network gets the TC=1 slip.
    query = dns.message.make_query("mail.example.test.", "A")
    response = dns.query.udp(query, limited.host, port=limited.port, timeout=3, source="127.0.7.2")
    assert response.flags & dns.flags.TC and not response.answer


DIG = which("dig")


@pytest.mark.skipif(DIG is None, reason="needs dig")
def test_dig_cookie(server):
    def dig(*extra: str) -> str:
        command = [DIG, "@" + server.host, "-p", str(server.port), "mail.example.test.", "A"]
        return subprocess.run(
            [*command, *extra], capture_output=True, text=True, timeout=10, check=True
        ).stdout

    out = dig("+cookie")
    match = re.search(r"; COOKIE: ([0-9a-f]{48}) \(good\)", out)
    assert match, out
    assert "status: NOERROR" in out and "192.0.2.25" in out
    out = dig(f"+cookie={match.group(1)}")
    assert re.search(r"; COOKIE: ([0-9a-f]{48}) \(good\)", out), out
    assert cookies_total(server, "valid") == 1
