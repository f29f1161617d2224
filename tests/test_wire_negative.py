"""Negative answers to names that do not exist are shared: a flood of random names makes no
object per name (the answer depends on the name only through its length), and every answer is
still the right one for its own question."""

from __future__ import annotations

import random

import dns.message
import dns.rcode
import dns.rdatatype
from support import EXAMPLE_ZONES

from lbdns.dnsserver.wire import Answerer
from lbdns.registry import Registry
from lbdns.zone.parse import load_folder

LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789"


def _answerer() -> Answerer:
    registry = Registry()
    registry.load_zones(load_folder(EXAMPLE_ZONES))
    return Answerer(registry)


def test_random_names_share_one_negative_answer_per_name_length():
    answerer = _answerer()
    rng = random.Random(7)
    lengths = set()
    for _ in range(300):
        label = "".join(rng.choice(LETTERS) for _ in range(rng.randrange(1, 40)))
        name = f"{label}.example.test."
        query = dns.message.make_query(name, rng.choice(("A", "AAAA", "TXT")), use_edns=0)
        reply = dns.message.from_wire(answerer.respond(query.to_wire(), "127.0.0.1"))
        assert reply.rcode() == dns.rcode.NXDOMAIN
        assert reply.question == query.question  # its own question, exactly
        (soa,) = reply.authority
        assert soa.rdtype == dns.rdatatype.SOA and soa.name.to_text() == "example.test."
        lengths.add(len(label))
    kept = {id(entry) for entry in answerer.synthesised.values()}
    assert len(answerer.synthesised) == 300  # each name is still remembered...
    assert len(kept) == len(lengths)  # ...with the answer of its length, not one of its own


def test_nodata_under_an_existing_name_is_shared_too_and_names_its_zone():
    answerer = _answerer()
    replies = []
    for name in ("mail.example.test.", "sip.example.test."):
        query = dns.message.make_query(name, "TXT")
        replies.append(dns.message.from_wire(answerer.respond(query.to_wire(), "127.0.0.1")))
    for reply in replies:
        assert reply.rcode() == dns.rcode.NOERROR and not reply.answer
        assert reply.authority[0].name.to_text() == "example.test."
    # Two names of the same length (mail, sip + 1 octet less): one answer each length.
    assert len({id(t) for t in answerer.negatives.values()}) == len(answerer.negatives) == 2
