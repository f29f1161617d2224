"""lowest-score: the candidate(s) with the lowest normalised load; ties broken at random.

The naive load-aware policy: it trusts the last reported load and so sends every answer between
two reports to the same host. Kept as a baseline for comparison.

| candidates (load) | want | answer                 |
|-------------------|------|------------------------|
| a(0.5), b(0.2)    | 1    | b                      |
| a(0.2), b(0.2)    | 1    | a or b, at random      |
| a(0.5), b(0.2)    | 2    | b, a                   |
| (none)            | any  | (none)                 |
"""

from __future__ import annotations

from collections.abc import Sequence

from lbdns.balance.policy import Ask, Candidate
from lbdns.balance.policy.rank import lowest


def choose(candidates: Sequence[Candidate], ask: Ask) -> Sequence[Candidate]:
    if not candidates:
        return ()
    return tuple(lowest(candidates, 0.0, ask.want, ask.rng)[1])
