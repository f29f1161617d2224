"""weighted-round-robin: candidates in turn, each as often as its capacity.

Smooth weighted rotation (as nginx does it): over any window of sum(capacity) answers each
candidate is named in proportion to its capacity, interleaved rather than in bursts. The
schedule is a pure function of the candidate set and ``ask.seq``.

| candidates (capacity) | ask.seq 0..3 | answers        |
|-----------------------|--------------|----------------|
| a(1), b(1)            | 0..3         | a, b, a, b     |
| a(1), b(3)            | 0..3         | b, a, b, b     |
| (none)                | any          | (none)         |
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from lbdns.balance.policy import Ask, Candidate

_MAX_SCHEDULE = 4096


def choose(candidates: Sequence[Candidate], ask: Ask) -> Sequence[Candidate]:
    n = len(candidates)
    if not n:
        return ()
    order = _schedule(tuple(c.capacity for c in candidates))
    start = ask.seq % len(order)
    if ask.want == 1:
        return (candidates[order[start]],)
    chosen: list[Candidate] = []
    for i in range(len(order)):
        candidate = candidates[order[(start + i) % len(order)]]
        if candidate not in chosen:
            chosen.append(candidate)
            if len(chosen) == min(ask.want, n):
                break
    return tuple(chosen)


@lru_cache(maxsize=256)
def _schedule(capacities: tuple[float, ...]) -> tuple[int, ...]:
    # Scale capacities to small integers so the cycle stays short.
    smallest = min(capacities)
    weights = [max(1, round(c / smallest)) for c in capacities]
    while sum(weights) > _MAX_SCHEDULE:
        weights = [max(1, w // 2) for w in weights]
    total = sum(weights)
    current = [0] * len(weights)
    order = []
    for _ in range(total):
        for i, w in enumerate(weights):
            current[i] += w
        best = max(range(len(weights)), key=lambda i: current[i])
        current[best] -= total
        order.append(best)
    return tuple(order)
