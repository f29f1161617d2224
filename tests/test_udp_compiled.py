"""The compiled UDP loop answers as the Python one does, octet for octet and counter for counter.

Two twin servers (the same zones, a clock that steps the same way per reading, the same seeded
random source) each get the same queries over real UDP sockets, one at a time: one served by
the compiled loop (``_udpfast``) with the answerer's repeated-query cache and the farms'
compiled answers (``lbdns.balance._direct``), the other by the Python batch loop and the farms'
Python. Every response, the answerers' per-type and per-rcode counters and the farms' charges
must be the same; and the compiled loop must have answered the repeated queries itself.
"""

from __future__ import annotations

import itertools
import random
import select
import socket
import sys

import dns.edns
import dns.flags
import dns.message
import pytest
from affinity_support import zones as affinity_zones
from support import ROOT
from udp_support import Served

from lbdns.dnsserver.cookie import Cookies, CookieSettings
from lbdns.dnsserver.rrl import RateLimiter, RrlSettings
from lbdns.dnsserver.transport import bind_udp
from lbdns.dnsserver.wire import Answerer
from lbdns.registry import Registry
from lbdns.zone.parse import load_folder


class Twin(Served):
    """An answerer on a UDP listener of one kind, on its own event loop thread."""

    def __init__(self, folders, compiled: bool, rrl: RrlSettings | None = None):
        ticks = itertools.count()
        self.clock = lambda: 1_000_000.0 + next(ticks) * 1e-4
        self.registry = Registry(clock=self.clock, rng=random.Random(7))
        self.registry.compiled = compiled  # the farms' answers too (lbdns/balance/_direct.c)
        zones = {}
        for folder in folders:
            zones.update(load_folder(folder))
        self.registry.load_zones(zones)
        self.answerer = Answerer(self.registry)
        if rrl is not None:
            rrl_ticks = itertools.count()
            self.answerer.rrl = RateLimiter(rrl, clock=lambda: 500.0 + next(rrl_ticks) * 1e-3)
            self.answerer.cookies = Cookies(
                CookieSettings(secret="00" * 16), clock=lambda: 1_700_000_000.0
            )
        self.responded = 0  # queries that reached Answerer.respond
        mode = "compiled" if compiled else "batched"
        super().__init__("127.0.0.1", mode, self._respond, cache=self.answerer.udp_cache)

    def _respond(self, data: bytes, client: str, tcp: bool) -> bytes | None:
        self.responded += 1
        return self.answerer.respond(data, client, tcp)


def query(name: str, qtype: str, qid: int, edns: bool = True, **kw) -> bytes:
    message = dns.message.make_query(name, qtype, use_edns=0 if edns else False, **kw)
    message.id = qid
    return message.to_wire()


def queries() -> list[bytes]:
    ecs = dns.edns.ECSOption("198.51.100.0", 24)
    cookie = dns.edns.GenericOption(dns.edns.COOKIE, bytes(range(8)))
    asked = []
    for n in range(6):
        qid = 1000 * n
        asked += [
            query("chat.example.test.", "A", qid + 1),
            query("chat.example.test.", "AAAA", qid + 2),
            query("CHAT.Example.Test.", "A", qid + 3, edns=False),
            query("www.example.test.", "A", qid + 4, want_dnssec=True),
            query("mail.example.test.", "A", qid + 5),
            query("nope.example.test.", "A", qid + 6),
            query("example.test.", "MX", qid + 7),
            query(f"host{n}.apps.example.test.", "A", qid + 8),
            query("x.apps.example.test.", "TXT", qid + 9),
            query("chat.example.test.", "A", qid + 10, options=[ecs]),
            query(f"room{n % 3}.chat.aff.test.", "A", qid + 11),
            query(f"room{n % 3}.chat.aff.test.", "AAAA", qid + 12),
            query("subnet.aff.test.", "A", qid + 13),
            query("subnet.aff.test.", "A", qid + 14, options=[ecs]),
            query("plain.aff.test.", "AAAA", qid + 15),
            query("chat.example.test.", "A", qid + 16, options=[cookie]),
            query("outside.example.org.", "A", qid + 17),
            query("example.test.", "ANY", qid + 18),
            b"\x12\x34\x01\x00\x00\x01",  # cut short: FORMERR
            query("chat.example.test.", "A", qid + 19)[:2] + b"\x81\x00" + b"\x00" * 8,  # QR
        ]
    return asked


def ask_all(twin: Twin, wires: list[bytes]) -> list[bytes | None]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.05)  # loopback answers come within a millisecond
    got: list[bytes | None] = []
    try:
        for wire in wires:
            sock.sendto(wire, twin.address)
            try:
                got.append(sock.recv(65535))
            except TimeoutError:
                got.append(None)  # dropped (a response sent to us; a rate-limited answer)
    finally:
        sock.close()
    return got


@pytest.mark.parametrize("rrl", [False, True], ids=["plain", "rrl-and-cookies"])
def test_the_compiled_loop_answers_as_the_python_loop(tmp_path, rrl):
    folders = [ROOT / "zones", affinity_zones(tmp_path)]
    # A rate the twins' clocks exceed within the run: some answers are dropped, some slipped.
    settings = RrlSettings(enabled=True, rate=40.0, burst=8.0, slip=2) if rrl else None
    wires = queries()
    with Twin(folders, compiled=True, rrl=settings) as compiled:
        got_compiled = ask_all(compiled, wires)
    with Twin(folders, compiled=False, rrl=settings) as python:
        got_python = ask_all(python, wires)
    for n, (a, b) in enumerate(zip(got_compiled, got_python, strict=True)):
        assert a == b, f"query {n}: {wires[n]!r}"
    assert compiled.answerer.qtypes == python.answerer.qtypes
    # The farms answered alike: the same charges, answer counts and last answers.
    for name, farm in compiled.registry.farms.items():
        twin = python.registry.farms[name]
        assert farm._last == twin._last, name
        assert {h: x.answers for h, x in farm.hosts.items()} == {
            h: x.answers for h, x in twin.hosts.items()
        }, name
        if farm.accounting is not None:
            assert {h: x.pending for h, x in farm.accounting.ledgers.items()} == {
                h: x.pending for h, x in twin.accounting.ledgers.items()
            }, name
    assert compiled.answerer.rcodes == python.answerer.rcodes
    assert compiled.stats.udp_queries == python.stats.udp_queries == len(wires)
    answered = [r for r in got_compiled if r is not None]
    assert len(answered) >= len(wires) // 2
    if rrl:
        limiter_c, limiter_p = compiled.answerer.rrl, python.answerer.rrl
        assert limiter_c.dropped == limiter_p.dropped and sum(limiter_c.dropped) > 0
        assert limiter_c.slipped == limiter_p.slipped and sum(limiter_c.slipped) > 0
    # The path taken: the compiled loop answered the repeats of cached questions itself; the
    # Python loop sent every query through respond.
    assert python.responded == len(wires)
    assert compiled.responded < len(wires) // 2


def test_repeated_farm_questions_are_chosen_per_query_without_respond(tmp_path):
    # The compiled loop answers a repeated farm question from the cache, but the choice is
    # still the farm's, per query: the charges spread the answers over the hosts.
    wires = [query("chat.example.test.", "A", n) for n in range(300)]
    with Twin([ROOT / "zones"], compiled=True) as twin:
        got = ask_all(twin, wires)
        farm = twin.registry.farms["chat.example.test."]
        assert farm.seq == len(wires)
    assert twin.responded == 1  # the first one; the 299 others never left the C loop
    addresses = {dns.message.from_wire(r).answer[0][0].address for r in got if r}
    assert len(addresses) == 3, addresses


def test_an_error_in_respond_costs_one_answer_and_an_interrupt_goes_up(monkeypatch):
    # respond never raises; if it did (a bug), the compiled loop reports it as unraisable and
    # answers the rest of the batch. KeyboardInterrupt and SystemExit still go up.
    from lbdns.dnsserver import _udpfast

    def respond(data: bytes, client: str, tcp: bool) -> bytes:
        if data == b"boom":
            raise ValueError("a bug")
        if data == b"stop":
            raise KeyboardInterrupt
        return b"ok " + data

    server = bind_udp("127.0.0.1", 0)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.settimeout(1.0)
    batch = _udpfast.Batch(server.fileno(), server.family)
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    try:
        for data in (b"one", b"boom", b"two"):
            client.sendto(data, server.getsockname())
        read = 0
        while read < 3:
            select.select([server], [], [], 1.0)
            read += batch.serve(respond, None)[0]
        assert [client.recv(100), client.recv(100)] == [b"ok one", b"ok two"]
        assert [r.exc_type for r in reported] == [ValueError]
        client.sendto(b"stop", server.getsockname())
        select.select([server], [], [], 1.0)
        with pytest.raises(KeyboardInterrupt):
            batch.serve(respond, None)
        client.sendto(b"three", server.getsockname())
        select.select([server], [], [], 1.0)
        assert batch.serve(respond, None)[0] == 1
        assert client.recv(100) == b"ok three"
    finally:
        server.close()
        client.close()


@pytest.mark.parametrize("name", ["room7.chat.aff.test.", "subnet.aff.test."])
@pytest.mark.parametrize("ecs", [False, True], ids=["resolver-address", "ecs"])
def test_repeated_keyed_questions_are_answered_without_respond(tmp_path, name, ecs):
    # A key label, and a farm keyed by the client's subnet (from ECS, else from the resolver's
    # address): repeats are chosen by the farm's choose_key from the compiled loop.
    options = [dns.edns.ECSOption("198.51.100.0", 24)] if ecs else []
    wires = [query(name, "A", n, options=options) for n in range(40)]
    with Twin([affinity_zones(tmp_path)], compiled=True) as twin:
        got = ask_all(twin, wires)
    assert twin.responded == 1
    assert all(dns.message.from_wire(r).answer for r in got)
