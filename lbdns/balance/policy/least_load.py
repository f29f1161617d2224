"""least-load (the default): the host(s) whose load will be lowest once this answer's herd lands.

The farm hands in each candidate's load already including its in-flight estimate (the
connections recent answers are expected to bring that no report has counted yet, see
``lbdns.balance.accounting``) and the herd this answer is expected to bring (``ask.herd``: how many
clients the asking resolver will send to whatever it is told, in score units). Each candidate's
*projected* load is ``load + herd / k / capacity`` when the herd is split over ``k`` records.

* ``k = ask.want`` records: the ``k`` candidates with the lowest projected load.
* A herd worth at least ``MIN_PER_RECORD`` per record may be split over up to ``ask.split``
  records, when that lowers the highest projected load among the chosen by more than
  ``SPLIT_GAIN`` (a fraction of it): a big resolver then spreads its clients instead of landing
  them all on one host.
* Exact ties are broken with ``ask.rng``, so equal hosts share the answers evenly.

| candidates (load/capacity) | herd | want | split | answer                               |
|----------------------------|------|------|-------|--------------------------------------|
| a(0.5/1), b(0.2/1)         | 0    | 1    | 1     | b                                    |
| a(0.5/1), b(0.45/1)        | 0.1  | 1    | 1     | b (0.55 vs 0.5)                      |
| a(1.0/1), b(0.9/4)         | 2    | 1    | 1     | b (0.9 + 2/4 = 1.4 < 1.0 + 2 = 3.0)  |
| a(1.0/1), b(1.0/1)         | 0    | 1    | 1     | a or b, at random                    |
| a(0.5/1), b(0.2/1)         | 0    | 2    | 1     | b, a                                 |
| a,b,c,d (1.0/1 each)       | 8    | 1    | 4     | all four (1.0 + 8/4 = 3 < 9)         |
| a,b,c,d (1.0/1 each)       | 8    | 1    | 2     | two of them, at random               |
| a,b (1.0/1 each)           | 1.5  | 1    | 4     | one of them (1.5 < 2 x MIN_PER_RECORD) |
| (none)                     | any  | any  | any   | (none)                               |
"""

from __future__ import annotations

from collections.abc import Sequence

from lbdns.balance.policy import Ask, Candidate
from lbdns.balance.policy.rank import lowest

MIN_PER_RECORD = 1.0  # a record must be worth at least one expected connection
SPLIT_GAIN = 0.001  # split only when the highest projected load drops by more than 0.1 %
TIE = 1e-12  # loads this close are equal (exact ties, less float noise)


def choose(candidates: Sequence[Candidate], ask: Ask) -> Sequence[Candidate]:
    n = len(candidates)
    if not n:
        return ()
    herd = ask.herd
    if ask.want == 1 and (n == 1 or ask.split < 2 or herd < 2 * MIN_PER_RECORD):
        return _lowest(candidates, herd, ask)[1]  # one record, and no split is possible
    want = min(ask.want, n)
    rng = ask.rng
    if want == 1:
        best_cost, chosen = _lowest(candidates, herd, ask)
    else:
        keys, ranked = lowest(candidates, herd / want, want, rng)
        best_cost, chosen = keys[-1], ranked
    most = min(max(ask.split, want), n, int(herd // MIN_PER_RECORD))
    if most <= want:
        return tuple(chosen)
    if want == 1 and _split_cannot_win(candidates, herd / most, best_cost * (1.0 - SPLIT_GAIN)):
        return chosen
    capacity = candidates[0][1]
    for c in candidates:
        if c[1] != capacity:
            break
    else:
        # Equal capacities: every k ranks the hosts in the same order (by load), so one ranking
        # of the ``most`` lowest serves every k; k records cost the k-th lowest load plus the
        # k-th share of the herd (the same float as the largest projected load among them).
        loads, ranked = lowest(candidates, 0.0, most, rng)
        best_k = 0
        for k in range(want + 1, most + 1):
            cost = loads[k - 1] + herd / k / capacity
            if cost < best_cost * (1.0 - SPLIT_GAIN):
                best_cost, best_k = cost, k
        return tuple(ranked[:best_k]) if best_k else tuple(chosen)
    # Capacities differ: the order depends on the share, so one ranking per k.
    for k in range(want + 1, most + 1):
        keys, ranked = lowest(candidates, herd / k, k, rng)
        if keys[-1] < best_cost * (1.0 - SPLIT_GAIN):
            best_cost, chosen = keys[-1], ranked
    return tuple(chosen)


def _split_cannot_win(candidates: Sequence[Candidate], share: float, threshold: float) -> bool:
    """True when no split over 2..most records can cost less than ``threshold``.

    k >= 2 records cost the largest of their projected loads, which is at least the second
    lowest over all candidates, and each projected load with the k-th share of the herd is at
    least the one with the smallest share (``share`` = herd / most). One pass, and the common
    case of a busy resolver whose split would not pay skips the ranking altogether.
    """
    first = second = float("inf")
    for c in candidates:
        key = c[2] + share / c[1]
        if key < second:
            if key < first:
                first, second = key, first
            else:
                second = key
    return second >= threshold


def _lowest(candidates: Sequence[Candidate], herd: float, ask: Ask) -> tuple[float, tuple]:
    # One pass, no sort: the query path calls this for every answer.
    first = candidates[0]
    best, best_key, ties = first, first[2] + herd / first[1], 1
    for i in range(1, len(candidates)):
        c = candidates[i]
        key = c[2] + herd / c[1]  # load + herd / capacity
        if key < best_key - TIE:
            best, best_key, ties = c, key, 1
        elif key <= best_key + TIE:
            ties += 1
            if ask.rng.random() * ties < 1.0:  # each of the tied kept with chance 1/ties
                best = c
    return best_key, (best,)
