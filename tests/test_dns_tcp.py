"""DNS over TCP (RFC 7766): pipelining, framing, idle timeout and the connection cap."""

from __future__ import annotations

import socket
import struct
import time

import dns.edns
import dns.message
import dns.query
import pytest
from dnsclient import counts_of, header, question, tcp_connect, tcp_recv, tcp_send
from support import AUTH_ZONES, LbdnsProcess

IDLE_TIMEOUT = 1.0
# Well above the few connections a test holds: past half the cap the idle timeout shrinks.
MAX_CONNECTIONS = 10


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tcp")
    config = tmp / "lbdns.yaml"
    config.write_text(f"tcp_idle_timeout: {IDLE_TIMEOUT}\ntcp_max_connections: {MAX_CONNECTIONS}\n")
    with LbdnsProcess(tmp, zones=AUTH_ZONES, config=config, http=None) as proc:
        yield proc


NAMES = [
    ("mail.example.test.", "A"),
    ("chat.example.test.", "A"),
    ("missing.example.test.", "A"),
    ("example.test.", "NS"),
    ("big.example.test.", "TXT"),
    ("elsewhere.org.", "A"),
]


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """True if the server closes ``sock`` within ``within`` seconds (EOF or reset)."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_pipelined_queries_on_one_connection(server):
    queries = []
    for i in range(120):
        name, rdtype = NAMES[i % len(NAMES)]
        queries.append((1000 + i, question(name, rdtype)))
    with tcp_connect(server.host, server.port, timeout=5) as sock:
        sock.sendall(
            b"".join(struct.pack("!H", 12 + len(q)) + header(qid=i) + q for i, q in queries)
        )
        answers = {}
        for _ in queries:
            raw = tcp_recv(sock)
            assert raw is not None
            answers[struct.unpack("!H", raw[:2])[0]] = raw
    assert set(answers) == {i for i, _ in queries}
    for qid, q in queries:
        raw = answers[qid]
        assert raw[12 : 12 + len(q)] == q  # each answer belongs to its own question
        message = dns.message.from_wire(raw)
        assert message.rcode() in (0, 3, 5)
        if q == question("big.example.test.", "TXT"):
            assert counts_of(raw)[1] == 12  # complete over TCP


def test_query_split_over_many_writes(server):
    payload = header(qid=77) + question("mail.example.test.")
    framed = struct.pack("!H", len(payload)) + payload
    with tcp_connect(server.host, server.port) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(framed)):
            sock.sendall(framed[i : i + 1])
            time.sleep(0.002)
        raw = tcp_recv(sock)
    assert raw is not None and raw[:2] == b"\x00\x4d" and counts_of(raw)[1] == 1


def test_idle_connection_is_closed(server):
    with tcp_connect(server.host, server.port) as sock:
        started = time.monotonic()
        assert closed_by_peer(sock, within=IDLE_TIMEOUT + 3)
        waited = time.monotonic() - started
    assert IDLE_TIMEOUT * 0.8 <= waited <= IDLE_TIMEOUT + 2


def test_activity_keeps_a_connection_open(server):
    question_bytes = question("mail.example.test.")
    with tcp_connect(server.host, server.port) as active:
        tcp_send(active, header(qid=0) + question_bytes)
        assert tcp_recv(active) is not None  # accepted, its idle timer armed
        # The witness that the server's idle timeout ran out: a connection opened after the
        # first, never used, closed by the server. Had the queries not re-armed the first
        # connection's timer (armed earlier, as long), the server would have closed it first.
        with tcp_connect(server.host, server.port) as witness:
            started = time.monotonic()
            qid = 1
            while not closed_by_peer(witness, within=IDLE_TIMEOUT * 0.1):
                tcp_send(active, header(qid=qid) + question_bytes)
                assert tcp_recv(active) is not None, f"closed after {qid} queries"
                qid += 1
                assert time.monotonic() - started < IDLE_TIMEOUT + 5, "the witness stays open"
        tcp_send(active, header(qid=qid) + question_bytes)
        assert tcp_recv(active) is not None
        assert closed_by_peer(active, within=IDLE_TIMEOUT + 3)


def test_trickled_bytes_do_not_keep_a_connection_open(server):
    payload = header(qid=5) + question("mail.example.test.")
    framed = struct.pack("!H", len(payload)) + payload
    with tcp_connect(server.host, server.port) as sock:
        started = time.monotonic()
        closed = False
        for i in range(len(framed) - 1):  # never completes the message
            try:
                sock.sendall(framed[i : i + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if closed_by_peer(sock, within=IDLE_TIMEOUT * 0.3):
                closed = True
                break
            assert time.monotonic() - started < IDLE_TIMEOUT + 3
        waited = time.monotonic() - started
    assert closed
    assert waited <= IDLE_TIMEOUT + 2


def test_edns_tcp_keepalive_is_answered_over_tcp_only(server):
    # RFC 7828: a client that sends the option over TCP learns the idle timeout, in 100 ms units.
    keepalive = dns.edns.GenericOption(dns.edns.OptionType.KEEPALIVE, b"")
    query = dns.message.make_query("mail.example.test.", "A", use_edns=0, options=[keepalive])
    response = dns.query.tcp(query, server.host, port=server.port, timeout=3)
    assert response.answer[0][0].address == "192.0.2.25"
    (option,) = [o for o in response.options if o.otype == dns.edns.OptionType.KEEPALIVE]
    assert int.from_bytes(option.to_wire(), "big") == int(IDLE_TIMEOUT * 10)
    response = dns.query.udp(query, server.host, port=server.port, timeout=3)
    assert not [o for o in response.options if o.otype == dns.edns.OptionType.KEEPALIVE]
