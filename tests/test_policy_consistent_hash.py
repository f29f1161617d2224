"""consistent-hash against the table in its docstring, and the ring's properties."""

from __future__ import annotations

import random

import pytest

from lbdns.balance.policy import Ask, Candidate
from lbdns.balance.policy import consistent_hash as ch

RING = ch.Ring.build([("a", 1.0), ("b", 1.0), ("c", 1.0)])


def key_with_order(order: list[str]) -> int:
    """A key whose walk along RING tries the hosts in ``order``."""
    for i in range(10_000):
        position = ch.key_hash(f"k{i}")
        if RING.order(position) == order:
            return position
    raise AssertionError(f"no key walks {order}")


def cands(*items: tuple[str, float]) -> tuple[Candidate, ...]:
    return tuple(Candidate(name, 1.0, load) for name, load in items)


def ask(key: int, herd: float = 1.0, c: float = 1.25, want: int = 1) -> Ask:
    return Ask(want, 0, random.Random(1), herd, 1, key, RING, c)


BCA = key_with_order(["b", "c", "a"])


@pytest.mark.parametrize(
    ("candidates", "key", "herd", "expected"),
    [
        (cands(("a", 0), ("b", 0), ("c", 0)), BCA, 1, ["b"]),
        (cands(("a", 1), ("b", 4), ("c", 1)), BCA, 1, ["c"]),
        (cands(("a", 2), ("b", 2), ("c", 2)), BCA, 1, ["b"]),
        (cands(("a", 1), ("c", 1)), BCA, 1, ["c"]),
        (cands(("a", 0.5), ("b", 0.2)), -1, 0, ["b"]),
        ((), BCA, 1, []),
    ],
)
def test_docstring_table(candidates, key, herd, expected):
    assert [c.name for c in ch.choose(candidates, ask(key, herd))] == expected


def test_want_two_gives_the_next_within_bound_along_the_ring():
    chosen = ch.choose(cands(("a", 0), ("b", 0), ("c", 0)), ask(BCA, want=2))
    assert [c.name for c in chosen] == ["b", "c"]


def test_the_callers_index_of_candidates_gives_the_same_choice_as_none():
    # A farm hands in its positions by name (Ask.index) and plain (name, capacity, load)
    # tuples once charged: the same hosts as the policy's own map of Candidates.
    rng = random.Random(7)
    hosts = [f"h{i}" for i in range(12)]
    ring = ch.Ring.build([(h, 1.0 + i % 3) for i, h in enumerate(hosts)])
    differ = 0
    for trial in range(2000):
        live = [h for h in hosts if rng.random() < 0.8] or hosts[:1]
        candidates = [(h, 1.0 + hosts.index(h) % 3, rng.random() * 3) for h in live]
        index = {c[0]: i for i, c in enumerate(candidates)}
        key, want = ch.key_hash(f"k{trial % 300}"), 1 + trial % 3
        herd, c = rng.choice([0.5, 1.0, 4.0]), rng.choice([1.0, 1.25, 2.0])
        own = ch.choose(
            [Candidate(*x) for x in candidates], Ask(want, 0, rng, herd, 1, key, ring, c)
        )
        given = ch.choose(candidates, Ask(want, 0, rng, herd, 1, key, ring, c, index))
        assert [x[0] for x in given] == [x.name for x in own]
        differ += [x.name for x in own] != [ring.order(key)[0]]
    assert differ > 100  # the bound sent many keys past their first host


def test_key_hash_is_the_same_in_every_process_and_case():
    # BLAKE2b of the case-folded key, a fixed value, not Python's per-process salted hash().
    assert ch.key_hash("Room42") == ch.key_hash("room42") == 0x43E092108E4E918E


def test_ring_weights_hosts_by_capacity():
    ring = ch.Ring.build([("a", 1.0), ("b", 3.0)])
    owners = [ring.names[o] for o in ring.owners]
    assert owners.count("b") == pytest.approx(3 * owners.count("a"), rel=0.02)


def test_adding_a_host_moves_only_keys_to_it():
    hosts = [(f"h{i}", 1.0) for i in range(8)]
    before = ch.Ring.build(hosts)
    after = ch.Ring.build([*hosts, ("h8", 1.0)])
    moved = 0
    for i in range(20_000):
        position = ch.key_hash(f"key{i}")
        old, new = before.order(position, 1)[0], after.order(position, 1)[0]
        if old != new:
            assert new == "h8"
            moved += 1
    assert moved / 20_000 <= 1.2 / 9


def test_client_subnets():
    assert ch.client_subnet("192.0.2.77") == "192.0.2.0/24"
    assert ch.client_subnet("::ffff:192.0.2.77") == "192.0.2.0/24"
    assert ch.client_subnet("2001:db8:1:2ff::1") == "2001:db8:1:200::/56"
    assert ch.ecs_subnet(1, 24, bytes([198, 51, 100])) == ("198.51.100.0/24", 24)
    assert ch.ecs_subnet(1, 32, bytes([198, 51, 100, 9])) == ("198.51.100.0/24", 24)
    assert ch.ecs_subnet(1, 16, bytes([198, 51])) == ("198.51.0.0/16", 16)
    assert ch.ecs_subnet(2, 64, bytes(8)) == ("::/56", 56)
    assert ch.ecs_subnet(1, 0, b"") is None  # the client asked not to be located
    assert ch.ecs_subnet(1, 24, bytes(4)) is None  # address longer than its prefix
    assert ch.ecs_subnet(3, 24, bytes(3)) is None


def test_a_keys_walk_is_worked_out_once_per_ring_and_matches_the_points():
    ring = ch.Ring.build([(f"h{i}", 1.0 + i % 3) for i in range(12)])
    position = ch.key_hash("room42")
    # Every host once, in the order of the first point of each clockwise from the key's
    # position (computed here from the points, not by the methods under test).
    size = len(ring.points)
    start = next((i for i, p in enumerate(ring.points) if p > position), size)
    expected = []
    for step in range(size):
        name = ring.names[ring.owners[(start + step) % size]]
        if name not in expected:
            expected.append(name)
    assert ring.order(position) == expected and len(expected) == 12
    walk = ring.walk(position)
    assert list(walk) == expected[: ch.WALK_PREFIX]  # the first hosts only, whatever the size
    assert ring.walks[position] is walk and ring.walk(position) is walk  # remembered
    assert ring.order(position, 3) == expected[:3]
    everyone = tuple(Candidate(n, 1.0, 0.0) for n in ring.names)
    ask = Ask(1, 0, random.Random(1), 1.0, 1, position, ring, 1.25)
    assert ch.choose(everyone, ask)[0].name == expected[0]
    # The remembered hosts all gone (down, or without the asked family): the walk goes on.
    rest = tuple(c for c in everyone if c.name not in walk)
    assert ch.choose(rest, ask)[0].name == expected[ch.WALK_PREFIX]
    two = Ask(2, 0, random.Random(1), 1.0, 1, position, ring, 1.25)
    assert [c.name for c in ch.choose(rest, two)] == expected[ch.WALK_PREFIX : ch.WALK_PREFIX + 2]
    rebuilt = ch.Ring.build([(f"h{i}", 1.0 + i % 3) for i in range(13)])  # a host added
    assert rebuilt.walks == {}  # a new ring: its walks are worked out afresh


def test_the_remembered_walks_are_capped(monkeypatch):
    monkeypatch.setattr(ch, "WALKS_LIMIT", 10)
    ring = ch.Ring.build([("a", 1.0), ("b", 1.0)])
    for i in range(35):
        ring.walk(ch.key_hash(f"k{i}"))
        assert len(ring.walks) <= 10
