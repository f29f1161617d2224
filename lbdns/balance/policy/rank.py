"""The few lowest candidates by projected load, without sorting: the policies' shared selection.

A query for a farm name ranks at most a handful of hosts (``split`` is at most 16), so a bounded
insertion into a list of at most ``limit`` entries costs O(n x limit) comparisons and allocates
two short lists, where ``sorted`` with a random tie key built a key tuple and drew a random
number for every candidate on every query.

Exact ties are broken at random as if every candidate carried an independent uniform draw
compared after the key (what ``sorted(key=lambda c: (key(c), rng.random()))`` does): a draw is
made only when a tie has to be decided, and each candidate keeps its draw for later comparisons,
so the order among tied candidates is uniformly random and so is the subset of them that fits.
"""

from __future__ import annotations

import random
from bisect import bisect_left, bisect_right
from collections.abc import Sequence

from lbdns.balance.policy import Candidate


def lowest(
    candidates: Sequence[Candidate], share: float, limit: int, rng: random.Random
) -> tuple[list[float], list[Candidate]]:
    """The ``limit`` candidates with the lowest ``load + share / capacity``, lowest first, and
    their keys (the same floats, bit for bit, that the expression gives)."""
    keys: list[float] = []
    picked: list[Candidate] = []
    draws: dict[str, float] | None = None  # name -> tie-break draw, made when first needed
    for c in candidates:
        key = c[2] + share / c[1]
        full = len(keys) == limit
        if full and key > keys[-1]:
            continue  # the common case once the list is full: one comparison
        i = bisect_right(keys, key)
        if i and keys[i - 1] == key:
            # A tie: behind the tied candidates whose draw is lower than this one's.
            if draws is None:
                draws = {}
            draw = draws[c[0]] = rng.random()
            first = bisect_left(keys, key)
            while i > first:
                other = picked[i - 1][0]
                if other not in draws:
                    draws[other] = rng.random()
                if draws[other] < draw:
                    break
                i -= 1
            if i == limit:
                continue  # lost the tie for the last place
        keys.insert(i, key)
        picked.insert(i, c)
        if full:
            keys.pop()
            picked.pop()
    return keys, picked
