"""TCP limits per client (RFC 7766 6.2.2-6.2.3): one address, or one network, holding idle
connections cannot lock out anyone else; at the global cap the idlest connection makes room.

Clients bind to distinct loopback addresses (127.0.x.y) to be distinct sources.
"""

from __future__ import annotations

import contextlib
import socket
import time

import dns.message
import dns.query
import pytest
from dnsclient import header, question, tcp_recv, tcp_send
from obs_support import scrape, value
from support import ROOT, LbdnsProcess, wait_for

from lbdns.dnsserver.transport import TcpLimits, client_prefix

ZONES = ROOT / "tests" / "zones" / "auth"
QUERY = header() + question("mail.example.test.")


def connect_from(source: str, server, timeout: float = 3.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect((server.host, server.port))
    return sock


def answered(sock: socket.socket, qid: int = 1) -> bool:
    try:
        tcp_send(sock, header(qid=qid) + question("mail.example.test."))
        reply = tcp_recv(sock)
    except OSError:
        return False
    return reply is not None and reply[:2] == qid.to_bytes(2, "big")


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def tcp_outcome(server, outcome: str) -> float:
    return value(scrape(server.http_url), "lbdns_dns_tcp_connections_total", outcome=outcome)


@pytest.fixture
def hold():
    """Sockets the test holds open; all closed at the end."""
    held: list[socket.socket] = []
    yield held
    for sock in held:
        sock.close()


def start(tmp_path, **config) -> LbdnsProcess:
    path = tmp_path / "lbdns.yaml"
    path.write_text("".join(f"{key}: {value}\n" for key, value in config.items()))
    return LbdnsProcess(tmp_path, zones=ZONES, config=path).start()


@pytest.fixture
def default_server(tmp_path):
    # The default caps (1000 in all, 64 per address, 256 per network); a long idle timeout so
    # that nothing is closed for being idle while the test runs.
    server = start(tmp_path, tcp_idle_timeout=60)
    yield server
    server.stop()


def tc_retry_is_answered(server, source: str) -> bool:
    # big.example.test TXT does not fit over UDP: TC=1, and dnspython retries over TCP.
    query = dns.message.make_query("big.example.test.", "TXT")
    response, used_tcp = dns.query.udp_with_fallback(
        query, server.host, port=server.port, timeout=3, source=source
    )
    return used_tcp and len(response.answer[0]) == 12


def test_one_address_holding_1000_idle_connections_locks_out_no_one(default_server, hold):
    server = default_server
    for _ in range(1000):
        hold.append(connect_from("127.0.0.2", server))
    wait_for(
        lambda: tcp_outcome(server, "refused_address") >= 1000 - 64,
        timeout=15,
        what="the connections over the per-address cap refused",
    )
    assert tcp_outcome(server, "accepted") == 64
    # Another address of the same /24 and one of another network are served, a TC=1 retry too.
    with contextlib.closing(connect_from("127.0.0.3", server)) as sock:
        assert answered(sock)
    with contextlib.closing(connect_from("127.0.1.1", server)) as sock:
        assert answered(sock)
    assert tc_retry_is_answered(server, "127.0.2.1")
    # The 64 that were let in still work: the limit refuses, it does not punish.
    open_ones = [sock for sock in hold if answered(sock, qid=7)]
    assert len(open_ones) == 64


def test_one_network_holding_1000_idle_connections_locks_out_no_other(default_server, hold):
    server = default_server
    for i in range(1000):
        hold.append(connect_from(f"127.0.0.{10 + i % 20}", server))  # 20 addresses x 50
    wait_for(
        lambda: tcp_outcome(server, "refused_network") >= 1000 - 256,
        timeout=15,
        what="the connections over the per-network cap refused",
    )
    assert tcp_outcome(server, "accepted") == 256
    with contextlib.closing(connect_from("127.0.1.1", server)) as sock:
        assert answered(sock)
    assert tc_retry_is_answered(server, "127.0.3.1")


@pytest.fixture
def small_server(tmp_path):
    server = start(
        tmp_path,
        tcp_idle_timeout=60,
        tcp_max_connections=20,
        tcp_max_per_address=4,
        tcp_max_per_network=8,
    )
    yield server
    server.stop()


def fill(server, hold, count: int) -> None:
    """``count`` connections from 10 networks (two addresses each), each having asked once."""
    for i in range(count):
        sock = connect_from(f"127.0.{1 + i % 10}.{1 + (i // 10) % 2}", server)
        assert answered(sock, qid=i)
        hold.append(sock)


def test_at_the_global_cap_the_least_recently_active_connection_makes_room(small_server, hold):
    server = small_server
    fill(server, hold, 20)
    assert answered(hold[0], qid=100)  # the first asks again: the second is now the idlest
    with contextlib.closing(connect_from("127.0.50.1", server)) as newest:
        assert answered(newest)  # the newest client is served...
        assert closed_by_peer(hold[1], within=5)  # ...and the idlest connection closed for it
        assert tcp_outcome(server, "evicted") == 1
        assert answered(hold[0], qid=101) and answered(hold[2], qid=102)


def test_near_the_cap_the_idle_timeout_shrinks(small_server, hold):
    server = small_server
    fill(server, hold, 19)
    sock = connect_from("127.0.60.1", server)  # the 20th of 20: armed with the shortest timeout
    hold.append(sock)
    started = time.monotonic()
    assert closed_by_peer(sock, within=10)
    assert time.monotonic() - started < 10  # far below the 60 s configured
    assert tcp_outcome(server, "idle_timeout") >= 1


def test_idle_timeout_shrinks_linearly_past_half_of_the_cap():
    limits = TcpLimits(idle_timeout=10.0, max_connections=1000)
    assert limits.idle_for(0) == limits.idle_for(500) == 10.0
    assert limits.idle_for(750) == pytest.approx(5.0)
    assert limits.idle_for(999) == pytest.approx(0.5)  # never below half a second
    assert limits.idle_for(1000) == 0.5


@pytest.mark.parametrize(
    "address,network",
    [
        ("192.0.2.77", "192.0.2"),
        ("2001:db8:1:ff::9", client_prefix("2001:db8:1:0::1")),  # the same /56
        ("::ffff:192.0.2.9", "192.0.2"),  # IPv4-mapped counts as IPv4
    ],
)
def test_client_networks(address, network):
    assert client_prefix(address) == network
    assert client_prefix("2001:db8:1:100::1") != client_prefix("2001:db8:1:ff::1")
