"""Each policy against the table in its docstring."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from lbdns.balance.policy import (
    POLICIES,
    Ask,
    Candidate,
    least_load,
    lowest_score,
    random_choice,
    round_robin,
    score_weights,
)
from lbdns.balance.policy import weighted_round_robin as wrr


def cands(*items: tuple[str, float] | tuple[str, float, float]) -> tuple[Candidate, ...]:
    """("a", load) or ("a", load, capacity)."""
    return tuple(Candidate(i[0], i[2] if len(i) > 2 else 1.0, i[1]) for i in items)


def names(chosen) -> list[str]:
    return [c.name for c in chosen]


def ask(want=1, seq=0, seed=1, herd=0.0, split=1) -> Ask:
    return Ask(want, seq, random.Random(seed), herd, split)


def test_table_names_every_policy():
    assert set(POLICIES) == {
        "least-load",
        "lowest-score",
        "round-robin",
        "weighted-round-robin",
        "random",
        "consistent-hash",
    }


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_no_candidates_no_answer(policy):
    assert tuple(POLICIES[policy]((), ask())) == ()


# -- least-load ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidates", "herd", "want", "split", "expected"),
    [
        (cands(("a", 0.5), ("b", 0.2)), 0, 1, 1, ["b"]),
        (cands(("a", 0.5), ("b", 0.45)), 0.1, 1, 1, ["b"]),
        (cands(("a", 1.0, 1), ("b", 0.9, 4)), 2, 1, 1, ["b"]),
        (cands(("a", 0.5), ("b", 0.2)), 0, 2, 1, ["b", "a"]),
    ],
)
def test_least_load_table(candidates, herd, want, split, expected):
    assert names(least_load.choose(candidates, ask(want, herd=herd, split=split))) == expected


def test_least_load_projects_the_herd_onto_capacity():
    # b has more load per capacity now, but a herd of 2 lifts a (capacity 1) far more.
    chosen = least_load.choose(cands(("a", 1.0, 1), ("b", 1.2, 4)), ask(herd=2))
    assert names(chosen) == ["b"]


def test_least_load_ties_break_at_random_and_evenly():
    equal = cands(("a", 1.0), ("b", 1.0), ("c", 1.0))
    rng = random.Random(7)
    counts = Counter(names(least_load.choose(equal, Ask(1, i, rng)))[0] for i in range(3000))
    assert set(counts) == {"a", "b", "c"}
    assert all(900 < n < 1100 for n in counts.values()), counts


def test_least_load_splits_a_big_herd_over_all_allowed_records():
    four = cands(("a", 1.0), ("b", 1.0), ("c", 1.0), ("d", 1.0))
    assert sorted(names(least_load.choose(four, ask(herd=8, split=4)))) == ["a", "b", "c", "d"]
    two = least_load.choose(four, ask(herd=8, split=2))
    assert len(two) == 2 and len(set(names(two))) == 2


def test_least_load_does_not_split_below_one_connection_per_record():
    both = cands(("a", 1.0), ("b", 1.0))
    assert len(least_load.choose(both, ask(herd=1.5, split=4))) == 1


def test_least_load_split_keeps_the_overloaded_host_out():
    # Splitting over c would lift it above what a and b reach: only a and b are named.
    chosen = least_load.choose(cands(("a", 1.0), ("b", 1.0), ("c", 9.0)), ask(herd=4, split=3))
    assert sorted(names(chosen)) == ["a", "b"]


def test_least_load_never_changes_its_input():
    candidates = [Candidate("a", 1, 0.5), Candidate("b", 1, 0.2)]
    before = list(candidates)
    least_load.choose(candidates, ask(herd=5, split=2))
    assert candidates == before


# -- lowest-score ----------------------------------------------------------------------------


def test_lowest_score_table():
    assert names(lowest_score.choose(cands(("a", 0.5), ("b", 0.2)), ask())) == ["b"]
    assert names(lowest_score.choose(cands(("a", 0.5), ("b", 0.2)), ask(2))) == ["b", "a"]
    seen = {
        names(lowest_score.choose(cands(("a", 0.2), ("b", 0.2)), ask(seed=s)))[0] for s in range(40)
    }
    assert seen == {"a", "b"}


# -- round-robin -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seq", "want", "expected"), [(0, 1, ["a"]), (1, 1, ["b"]), (4, 2, ["b", "c"])]
)
def test_round_robin_table(seq, want, expected):
    abc = cands(("a", 0), ("b", 0), ("c", 0))
    assert names(round_robin.choose(abc, ask(want, seq))) == expected


# -- weighted-round-robin ----------------------------------------------------------------------


def test_weighted_round_robin_table():
    ab = cands(("a", 0, 1), ("b", 0, 1))
    assert [names(wrr.choose(ab, ask(1, s)))[0] for s in range(4)] == ["a", "b", "a", "b"]
    ab3 = cands(("a", 0, 1), ("b", 0, 3))
    assert [names(wrr.choose(ab3, ask(1, s)))[0] for s in range(4)] == ["b", "a", "b", "b"]


def test_weighted_round_robin_names_distinct_hosts():
    ab3 = cands(("a", 0, 1), ("b", 0, 3))
    for s in range(8):
        assert sorted(names(wrr.choose(ab3, ask(2, s)))) == ["a", "b"]


# -- random ------------------------------------------------------------------------------------


def test_random_table():
    abc = cands(("a", 0), ("b", 0), ("c", 0))
    rng = random.Random(3)
    counts = Counter(names(random_choice.choose(abc, Ask(1, 0, rng)))[0] for _ in range(3000))
    assert all(900 < n < 1100 for n in counts.values()), counts
    two = random_choice.choose(abc, ask(2))
    assert len(set(names(two))) == 2


# -- score settings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({}, "metric name or a mapping"),
        ({"cpu": -1}, "non-negative"),
        ({"cpu": 0}, "at least one positive"),
        ({"cpu": True}, "non-negative"),
        ({"cpu": float("inf")}, "finite"),
        (3, "metric name or a mapping"),
    ],
)
def test_bad_score_settings(value, message):
    with pytest.raises(ValueError, match=message):
        score_weights(value)


def test_score_settings():
    assert score_weights("cpu") == {"cpu": 1.0}
    assert score_weights({"connections": 1, "cpu": 200}) == {"connections": 1.0, "cpu": 200.0}
