"""random: candidates drawn uniformly at random, ignoring load and capacity.

| candidates | want | answer                               |
|------------|------|--------------------------------------|
| a, b, c    | 1    | one of a, b, c, each 1/3 of the time |
| a, b, c    | 2    | two distinct candidates              |
| (none)     | any  | (none)                               |
"""

from __future__ import annotations

from collections.abc import Sequence

from lbdns.balance.policy import Ask, Candidate


def choose(candidates: Sequence[Candidate], ask: Ask) -> Sequence[Candidate]:
    if not candidates:
        return ()
    # sample() takes the sequence as it is (no copy here; the draws are the same).
    return tuple(ask.rng.sample(candidates, min(ask.want, len(candidates))))
