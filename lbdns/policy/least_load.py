"""least-load: placeholder until the accounting policy lands (same as lowest-score).

| candidates (load) | want | answer |
|---|---|---|
| a(0.5), b(0.2) | 1 | b |
"""

from __future__ import annotations

from collections.abc import Sequence

from . import Ask, Candidate


def choose(candidates: Sequence[Candidate], ask: Ask) -> Sequence[Candidate]:
    if not candidates:
        return ()
    ranked = sorted(candidates, key=lambda c: (c.load, ask.rng.random()))
    return tuple(ranked[: ask.want])
