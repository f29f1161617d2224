"""round-robin: every candidate in turn, ignoring load and capacity.

| candidates | ask.seq | want | answer   |
|------------|---------|------|----------|
| a, b, c    | 0       | 1    | a        |
| a, b, c    | 1       | 1    | b        |
| a, b, c    | 4       | 2    | b, c     |
| (none)     | any     | any  | (none)   |
"""

from __future__ import annotations

from collections.abc import Sequence

from lbdns.balance.policy import Ask, Candidate


def choose(candidates: Sequence[Candidate], ask: Ask) -> Sequence[Candidate]:
    n = len(candidates)
    if not n:
        return ()
    start = ask.seq % n
    if ask.want == 1:
        return (candidates[start],)
    return tuple(candidates[(start + i) % n] for i in range(min(ask.want, n)))
