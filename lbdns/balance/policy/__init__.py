"""Policies: which host(s) of a farm answer a query.

A policy is one small module with one pure function::

    def choose(candidates: Sequence[Candidate], ask: Ask) -> Sequence[Candidate]

``candidates`` are the hosts that may be answered right now (already filtered by state and
address family), each with its load normalised by capacity. For the policies in ``ACCOUNTED``
that load already includes the farm's in-flight estimate (connections its recent answers are
expected to bring that no report has shown yet); the others see the last reported score only.
``ask`` says how many records are wanted and carries the per-farm sequence number, the random
source, and the expected herd of the asking resolver; for a keyed farm (``consistent-hash``) also
the key's ring position, the farm's ring (built when its hosts change), its balance factor and,
optionally, the candidates' positions by name.
The policy returns the chosen candidates
(at most ``max(ask.want, ask.split)``, at least one when ``candidates`` is not empty) and never
changes its inputs. Policies are found by name in ``POLICIES`` and bound when a zone loads.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from lbdns.validate import is_number


# Named tuples rather than dataclasses: one of each is made per query, and a tuple is built in
# half the time of a frozen dataclass.
class Candidate(NamedTuple):
    name: str
    capacity: float
    load: float  # the host's load divided by its capacity (0 when unknown)


class Ask(NamedTuple):
    want: int  # how many records to return
    seq: int  # this farm's answer counter, for rotations
    rng: random.Random
    herd: float = 0.0  # expected new connections this answer brings (score units)
    split: int = 1  # at most this many records when a herd is split
    key: int = -1  # a keyed answer: the key's 64-bit ring position (-1: no key)
    ring: Any = None  # the farm's consistent_hash.Ring, for keyed farms
    balance: float = 1.25  # c: a keyed host may carry up to c x the mean load
    # The candidates' positions by name, when the caller keeps them (a farm does, per view):
    # a keyed answer then finds its ring's hosts among the candidates without building a map.
    index: Mapping[str, int] | None = None


Policy = Callable[[Sequence[Candidate], Ask], Sequence[Candidate]]


def _table() -> dict[str, Policy]:
    from lbdns.balance.policy import (
        consistent_hash,
        least_load,
        lowest_score,
        random_choice,
        round_robin,
        weighted_round_robin,
    )

    return {
        "least-load": least_load.choose,
        "lowest-score": lowest_score.choose,
        "round-robin": round_robin.choose,
        "weighted-round-robin": weighted_round_robin.choose,
        "random": random_choice.choose,
        "consistent-hash": consistent_hash.choose,
    }


POLICIES: Mapping[str, Policy] = _table()

# Policies whose candidates' loads include the in-flight estimate and whose answers are charged.
ACCOUNTED = frozenset({"least-load", "consistent-hash"})
# Policies that answer by key: ``<key>.<farm>`` names, the client subnet, the assignment API.
KEYED = frozenset({"consistent-hash"})

SCORE_METRICS = ("connections", "cpu", "load1", "memory")


def score_weights(value: Any) -> dict[str, float]:
    """Parse a farm's ``score`` setting: a metric name, or a mapping metric -> weight."""
    if isinstance(value, str):
        value = {value: 1.0}
    if not isinstance(value, dict) or not value:
        raise ValueError("score must be a metric name or a mapping of metric to weight")
    weights = {}
    for metric, weight in value.items():
        if not isinstance(metric, str) or not metric:
            raise ValueError(f"score metric {metric!r} must be a name")
        if not is_number(weight) or not 0 <= weight <= 1e6:
            raise ValueError(
                f"score weight of {metric!r} must be a non-negative finite number (at most 1e6)"
            )
        weights[metric] = float(weight)
    if not any(weights.values()):
        raise ValueError("score needs at least one positive weight")
    return weights
