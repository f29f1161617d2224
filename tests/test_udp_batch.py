"""The UDP listener, batched (recvmmsg/sendmmsg, by the compiled loop and by the Python one) and
one datagram at a time, over real sockets.

The listener is given a plain respond function: these tests are about framing and addressing
(every answer goes back to the socket its query came from, in bursts larger than one batch,
around dropped queries, from IPv4 and IPv6), not about DNS. The DNS tests run the real server,
which uses the compiled batched listener by default; the ones here run it with ``udp_batch:
false`` and ``udp_compiled: false`` (tests/test_udp_compiled.py compares the two loops' DNS).
"""

from __future__ import annotations

import socket

import dns.message
import dns.query
import pytest
from support import ROOT, LbdnsProcess
from udp_support import Served

from lbdns.dnsserver import udpbatch

MODES = ["compiled", "batched", "one-by-one"]


def client_socket(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(3.0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return sock


def receive_all(sock: socket.socket, count: int) -> list[bytes]:
    return [sock.recv(65535) for _ in range(count)]


def test_the_compiled_batch_loop_is_what_users_get_on_this_platform(tmp_path):
    # The suite runs on 64-bit Linux with the extension built (pip install builds it where a
    # C compiler is found): the compiled batched loop is what users get by default.
    assert udpbatch.available()
    with LbdnsProcess(tmp_path, zones=ROOT / "zones", http=None) as proc:
        assert "(UDP batched, compiled loop, and TCP)" in proc.log()
    with Served("127.0.0.1", "compiled") as served:
        assert served.listener.compiled is not None and served.listener.batch is None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_bursts_from_several_clients_each_get_their_own_answers(mode, host):
    clients = [client_socket(host) for _ in range(3)]
    burst = 150  # more than two batches' worth from each client, sent before any is read
    with Served(host, mode) as served:
        for n in range(burst):
            for k, sock in enumerate(clients):
                sock.sendto(f"q{k}-{n}".encode(), served.address)
        for k, sock in enumerate(clients):
            got = receive_all(sock, burst)
            expected = [f"{host}|q{k}-{n}".encode() for n in range(burst)]
            assert sorted(got) == sorted(expected)
            assert got == expected  # one socket, one loop: answers keep the queries' order
        assert served.stats.udp_queries == 3 * burst
        assert served.stats.udp_send_errors == 0
    for sock in clients:
        sock.close()


@pytest.mark.parametrize("mode", MODES)
def test_dropped_queries_do_not_shift_answers_to_other_clients(mode):
    # Every third query of client A is dropped: the answers after a drop must still go to the
    # client that asked (a batch's answer slots no longer line up with its query slots).
    a, b = client_socket("127.0.0.1"), client_socket("127.0.0.1")
    with Served("127.0.0.1", mode) as served:
        for n in range(90):
            a.sendto(b"drop" if n % 3 == 0 else f"a{n}".encode(), served.address)
            b.sendto(f"b{n}".encode(), served.address)
        got_a = receive_all(a, 60)
        got_b = receive_all(b, 90)
        assert got_a == [f"127.0.0.1|a{n}".encode() for n in range(90) if n % 3]
        assert got_b == [f"127.0.0.1|b{n}".encode() for n in range(90)]
        # Nothing for the dropped queries: the next datagram A gets answers a last query (one
        # socket, one loop: an answer to any of the dropped ones would have come first).
        a.sendto(b"a-last", served.address)
        assert a.recv(65535) == b"127.0.0.1|a-last"
    a.close()
    b.close()


@pytest.mark.parametrize("mode", MODES)
def test_an_answer_larger_than_a_slot_and_an_oversized_query(mode):
    sock = client_socket("127.0.0.1")
    with Served("127.0.0.1", mode) as served:
        sock.sendto(b"big", served.address)
        assert sock.recv(65535) == b"B" * 6000  # sent on its own, not lost
        sock.sendto(b"array", served.address)
        assert sock.recv(65535) == b"A" * 100  # a bytearray answer (dnslib's pack) is sent too
        # A query longer than the receive slot is cut to the slot's size, never to more.
        sock.sendto(b"x" * 6000, served.address)
        answer = sock.recv(65535)
        assert answer == b"127.0.0.1|" + b"x" * udpbatch.DATA
        sock.sendto(b"after", served.address)
        assert sock.recv(65535) == b"127.0.0.1|after"
    sock.close()


def ask_a_burst_and_a_big_one(sock: socket.socket, served: Served) -> None:
    for n in range(100):
        sock.sendto(f"q{n}".encode(), served.address)
    assert receive_all(sock, 100) == [f"127.0.0.1|q{n}".encode() for n in range(100)]
    sock.sendto(b"big", served.address)
    assert sock.recv(65535) == b"B" * 6000


def test_answers_are_sent_from_their_own_bytes_not_copied_into_the_ring():
    # On CPython each answer's iovec points into the bytes object itself (held until sendmmsg
    # returns): the send ring's data slots are never written.
    assert udpbatch.ANSWER_OFFSET is not None
    sock = client_socket("127.0.0.1")
    with Served("127.0.0.1", "batched") as served:
        ask_a_burst_and_a_big_one(sock, served)  # the big one: larger than a slot, in place too
        sock.sendto(b"array", served.address)
        assert sock.recv(65535) == b"A" * 100  # not a bytes object: made one first
        tx = served.listener.batch.tx
        assert tx.view[: udpbatch.SLOTS * udpbatch.DATA].tobytes().count(0) == (
            udpbatch.SLOTS * udpbatch.DATA
        )
    sock.close()


def test_answers_are_copied_where_they_cannot_be_sent_in_place(monkeypatch):
    monkeypatch.setattr(udpbatch, "ANSWER_OFFSET", None)
    sock = client_socket("127.0.0.1")
    with Served("127.0.0.1", "batched") as served:
        ask_a_burst_and_a_big_one(sock, served)  # the big one: larger than a slot, on its own
        tx = served.listener.batch.tx
        assert tx.view[: len(b"127.0.0.1|q")].tobytes() == b"127.0.0.1|q"  # copied
    sock.close()


@pytest.mark.parametrize("mode", MODES)
def test_a_vanished_client_does_not_stop_the_listener(mode):
    # An answer to a closed port brings back an ICMP port unreachable, which surfaces as an
    # error on the listener's next receive: it must cost nothing but that one answer.
    gone = client_socket("127.0.0.1")
    with Served("127.0.0.1", mode) as served:
        gone.sendto(b"one", served.address)
        assert gone.recv(65535) == b"127.0.0.1|one"
        gone.sendto(b"two", served.address)
        gone.close()  # its answer goes to a closed port
        alive = client_socket("127.0.0.1")
        for n in range(20):
            alive.sendto(f"n{n}".encode(), served.address)
        assert receive_all(alive, 20) == [f"127.0.0.1|n{n}".encode() for n in range(20)]
        alive.close()


@pytest.mark.parametrize(
    "setting, kind",
    [("udp_batch: false", "one datagram per system call"), ("udp_compiled: false", "batched")],
)
def test_the_server_answers_with_the_compiled_loop_or_batching_off(tmp_path, setting, kind):
    config = tmp_path / "lbdns.yaml"
    config.write_text(setting + "\n")
    with LbdnsProcess(tmp_path, zones=ROOT / "zones", http=None, config=config) as proc:
        assert f"(UDP {kind}, and TCP)" in proc.log()
        for name in ("chat.example.test.", "mail.example.test."):
            reply = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=proc.port)
            assert reply.answer, name
