"""The policies' selection without sorting (lbdns.balance.policy.rank) and the path it takes.

``rank.lowest`` must give what ``sorted`` with a random tie key gave (the same candidates, in the
same order, with the same keys; ties broken uniformly at random), and the split search of
least-load must reach its answer without ``sorted`` on the query path.
"""

from __future__ import annotations

import builtins
import itertools
import random
from collections import Counter

import pytest
from dnslib import QTYPE
from test_farm import Clock, make_farm, report_all

from lbdns.balance.policy import POLICIES, Ask, Candidate, least_load, lowest_score, rank


def _sorted_lowest(candidates, share, limit):
    """The selection as it was written before: a full sort (ties left in input order here)."""
    ranked = sorted(candidates, key=lambda c: c.load + share / c.capacity)[:limit]
    return [c.load + share / c.capacity for c in ranked], ranked


def _sorted_choose(candidates, ask):
    """least-load's split search as it was written with sorts: the reference for its answers."""
    n = len(candidates)
    herd = ask.herd
    want = min(ask.want, n)

    def lowest_k(k):
        keys, ranked = _sorted_lowest(candidates, herd / k, k)
        return max(keys), ranked

    best_cost, chosen = lowest_k(want)
    most = min(max(ask.split, want), n, int(herd // least_load.MIN_PER_RECORD))
    if not (want == 1 and (n == 1 or ask.split < 2 or herd < 2 * least_load.MIN_PER_RECORD)):
        for k in range(want + 1, most + 1):
            cost, picked = lowest_k(k)
            if cost < best_cost * (1.0 - least_load.SPLIT_GAIN):
                best_cost, chosen = cost, picked
    return chosen


def _distinct_loads(rng, n):
    # Random loads: no two projected loads tie, so the sort's order is the only right one.
    return [Candidate(f"h{i}", rng.choice((1.0, 2.0, 4.0)), rng.uniform(0, 10)) for i in range(n)]


def test_lowest_is_the_sorted_prefix_bit_for_bit():
    rng = random.Random(11)
    for _ in range(500):
        candidates = _distinct_loads(rng, rng.randint(1, 9))
        share, limit = rng.choice((0.0, 0.5, 3.0, 17.0)), rng.randint(1, 10)
        keys, picked = rank.lowest(candidates, share, limit, random.Random(1))
        assert (keys, picked) == _sorted_lowest(candidates, share, limit)


def test_lowest_breaks_ties_uniformly_in_order_and_in_subset():
    equal = [Candidate(name, 1.0, 1.0) for name in "abcd"]
    rng = random.Random(3)
    orders = Counter(
        tuple(c.name for c in rank.lowest(equal, 0.0, 2, rng)[1]) for _ in range(12000)
    )
    # every ordered pair of the 4 equal hosts: 12 of them, about 1000 times each
    assert set(orders) == set(itertools.permutations("abcd", 2))
    assert all(850 < n < 1150 for n in orders.values()), orders


def test_lowest_keeps_a_strictly_lower_candidate_ahead_of_tied_ones():
    cands = [Candidate("a", 1.0, 2.0), Candidate("b", 1.0, 1.0), Candidate("c", 1.0, 2.0)]
    rng = random.Random(4)
    seen = Counter()
    for _ in range(400):
        keys, picked = rank.lowest(cands, 0.0, 2, rng)
        assert picked[0].name == "b" and keys == [1.0, 2.0]
        seen[picked[1].name] += 1
    assert set(seen) == {"a", "c"} and min(seen.values()) > 150, seen


def test_least_load_answers_what_the_sorted_search_answered():
    rng = random.Random(7)
    for _ in range(2000):
        n = rng.randint(1, 8)
        candidates = _distinct_loads(rng, n)
        if rng.random() < 0.5:  # equal capacities: the one-ranking path
            candidates = [c._replace(capacity=2.0) for c in candidates]
        ask = Ask(
            rng.randint(1, 3),
            0,
            random.Random(2),
            rng.choice((0, 1.5, 3, 8, 40)),
            rng.randint(1, 6),
        )
        got = least_load.choose(candidates, ask)
        want = _sorted_choose(candidates, ask)
        assert [c.name for c in got] == [c.name for c in want], (candidates, ask)


def test_lowest_score_is_the_sorted_prefix():
    rng = random.Random(9)
    for _ in range(300):
        candidates = _distinct_loads(rng, rng.randint(1, 6))
        want = rng.randint(1, 4)
        got = lowest_score.choose(candidates, Ask(want, 0, rng))
        assert list(got) == sorted(candidates, key=lambda c: c.load)[:want]


@pytest.fixture
def no_sort(monkeypatch):
    """``sorted`` raises while set; ``rank.lowest`` counts its calls."""

    def refuse(*args, **kwargs):
        raise AssertionError("sorted() called on the query path")

    calls = Counter()
    real = rank.lowest

    def counted(*args):
        calls["lowest"] += 1
        return real(*args)

    monkeypatch.setattr(least_load, "lowest", counted)
    yield lambda: monkeypatch.setattr(builtins, "sorted", refuse), calls


@pytest.mark.parametrize("capacities", [(1, 1, 1, 1), (1, 2, 2, 1)])
def test_the_split_search_of_a_busy_resolver_does_not_sort(no_sort, capacities):
    forbid, calls = no_sort
    clock = Clock()
    farm = make_farm(
        "ttl: 5\nsplit: 4", hosts=dict(zip("abcd", capacities, strict=True)), clock=clock
    )
    report_all(farm, {h: 10 for h in "abcd"})
    busy = "10.7.7.7"
    for _ in range(4):  # asks every 6 s with a 5 s cache time: a herd well above 2
        farm.choose(QTYPE.A, busy)
        clock.now += 6.0
        report_all(farm, {h: 10 for h in "abcd"})
    farm.view()  # the view (rebuilt on reports, not per query) may sort its fallback tier
    forbid()
    before = calls["lowest"]
    chosen = farm.choose(QTYPE.A, busy)
    assert farm.last.herd > 2
    assert calls["lowest"] > before  # the split search ran, through the selection
    assert len(chosen) >= 2  # and split the herd


@pytest.mark.parametrize("name", sorted(POLICIES))
@pytest.mark.parametrize("want", [1, 2])
def test_no_policy_sorts(monkeypatch, name, want):
    def refuse(*args, **kwargs):
        raise AssertionError("sorted() called on the query path")

    candidates = [
        Candidate(h, c, load) for h, c, load in (("a", 1, 3.0), ("b", 2, 1.0), ("c", 1, 2.0))
    ]
    policy = POLICIES[name]
    expected = policy(candidates, Ask(want, 5, random.Random(1), 6.0, 3))
    monkeypatch.setattr(builtins, "sorted", refuse)
    assert policy(candidates, Ask(want, 5, random.Random(1), 6.0, 3)) == expected
