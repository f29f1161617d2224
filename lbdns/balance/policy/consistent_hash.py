"""consistent-hash: a key always goes to the same host, unless that host is over its bound.

Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam 2018; the rule HAProxy
calls ``hash-balance-factor``). Every host of the farm owns points on a ring, as many as its
capacity is worth (``POINTS`` at the farm's mean capacity). A key (``ask.key``, a 64-bit hash
from ``key_hash``) goes to the first host clockwise from its own point that

* is a candidate (up, and has an address of the asked family), and
* is within its bound: its load (reported plus in flight, per unit of capacity) is at most
  ``ask.balance`` (``c``) times the farm's mean load once this answer is counted, or it carries
  less than one answer's load (``ask.herd``) yet, so that an empty farm takes its first keys.

After the answer the chosen host carries at most ``c x mean + one answer's load``. The ring
holds every host of the farm whatever its state, so a host that goes down and comes back gets
its own keys back, and a host added or removed moves only the keys whose place it takes or
leaves (~1/n of them). The ring is built once when the farm's hosts change (``Ring.build``),
never per query; a query bisects it and walks a few points.

| candidates (load/capacity)  | key's ring order | herd | c    | answer                          |
|-----------------------------|------------------|------|------|---------------------------------|
| a(0/1), b(0/1), c(0/1)      | b, c, a          | 1    | 1.25 | b (empty: below one answer)     |
| a(1/1), b(4/1), c(1/1)      | b, c, a          | 1    | 1.25 | c (b 4 > 1.25 x 7/3 = 2.92)    |
| a(2/1), b(2/1), c(2/1)      | b, c, a          | 1    | 1.25 | b (2 < 1.25 x 7/3)              |
| a(1/1), c(1/1) (b not up)   | b, c, a          | 1    | 1.25 | c (b is no candidate)           |
| a(0.5/1), b(0.2/1)          | no key (-1)      | any  | any  | b (lowest load, as least-load)  |
| (none)                      | any              | any  | any  | (none)                          |

With ``ask.want`` > 1 the first ``want`` hosts along the ring that are within their bound.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from lbdns.balance.policy import Ask, Candidate

POINTS = 200  # ring points of a host of the farm's mean capacity
MAX_POINTS = 200_000  # for the whole ring: a farm of 1,000 hosts still rebuilds in milliseconds
WALKS_LIMIT = 50_000  # keys' walks remembered per ring before starting over
WALK_PREFIX = 8  # hosts of a key's walk remembered (further ones are walked when needed)
DEFAULT_BALANCE = 1.25  # c: HAProxy's hash-balance-factor 125
_TIE = 1e-12


def key_hash(key: str) -> int:
    """The 64-bit ring position of ``key`` (case-folded), the same on every server: BLAKE2b,
    not Python's per-process salted ``hash``."""
    return int.from_bytes(hashlib.blake2b(key.lower().encode(), digest_size=8).digest(), "big")


@lru_cache(maxsize=8192)
def _host_points(name: str, count: int) -> tuple[int, ...]:
    # A host's i-th point depends only on its name and i: a host whose count changes keeps its
    # first points, so only the difference moves.
    return tuple(
        int.from_bytes(hashlib.blake2b(f"{name}\x00{i}".encode(), digest_size=8).digest(), "big")
        for i in range(count)
    )


@dataclass(frozen=True, slots=True)
class Ring:
    """The sorted ring of a farm: ``points[i]`` belongs to host ``names[owners[i]]``."""

    points: tuple[int, ...]
    owners: tuple[int, ...]
    names: tuple[str, ...]
    # key position -> the first WALK_PREFIX host names in the order the key tries them: a key
    # is walked once per ring, not per query (the ring is rebuilt, with an empty table, when the
    # hosts change); at most WALKS_LIMIT keys of WALK_PREFIX names, whatever the farm's size.
    walks: dict[int, tuple[str, ...]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(cls, hosts: Sequence[tuple[str, float]]) -> Ring:
        """The ring of ``(name, capacity)`` hosts (order does not matter)."""
        hosts = sorted(hosts)
        if not hosts:
            return cls((), (), ())
        mean = sum(capacity for _, capacity in hosts) / len(hosts)
        per_host = min(POINTS, max(1, MAX_POINTS // len(hosts)))
        pairs = []
        for index, (name, capacity) in enumerate(hosts):
            count = max(1, round(per_host * capacity / mean))
            pairs.extend((point, index) for point in _host_points(name, count))
        pairs.sort()
        return cls(
            tuple(p for p, _ in pairs), tuple(i for _, i in pairs), tuple(n for n, _ in hosts)
        )

    def order(self, key: int, limit: int = 0) -> list[str]:
        """Host names in the order ``key`` tries them (all hosts, or the first ``limit``)."""
        if limit and limit <= WALK_PREFIX:
            return list(self.walk(key)[:limit])
        return self._walk(key, limit or len(self.names))

    def walk(self, key: int) -> tuple[str, ...]:
        """The first ``WALK_PREFIX`` host names (all, when fewer) in the order ``key`` tries
        them, remembered per key: the query path's walk."""
        walk = self.walks.get(key)
        if walk is None:
            if len(self.walks) >= WALKS_LIMIT:
                self.walks.clear()
            walk = self.walks[key] = tuple(self._walk(key, WALK_PREFIX))
        return walk

    def _walk(self, key: int, want: int) -> list[str]:
        out: list[str] = []
        size = len(self.points)
        if not size:
            return out
        start = bisect_right(self.points, key)
        seen = set()
        for step in range(size):
            owner = self.owners[(start + step) % size]
            if owner not in seen:
                seen.add(owner)
                out.append(self.names[owner])
                if len(out) == want:
                    break
        return out


EMPTY_RING = Ring((), (), ())


def choose(candidates: Sequence[Candidate], ask: Ask) -> Sequence[Candidate]:
    n = len(candidates)
    if not n:
        return ()
    want, _, _, herd, _, key, ring, balance, index = ask  # each field read is a lookup: once
    if ring is None:
        ring = EMPTY_RING
    if key < 0 or not ring.points:
        return (_lowest(candidates, ask),)
    if index is None:
        index = {c[0]: i for i, c in enumerate(candidates)}
    total_load = total_capacity = 0.0
    for _, capacity, load in candidates:
        total_capacity += capacity
        total_load += load * capacity
    limit = balance * (total_load + herd) / total_capacity  # c x mean, this answer counted
    walk = ring.walks.get(key) or ring.walk(key)
    if want == 1:
        # One record, the common case: the first host of the walk within its bound.
        for name in walk:
            i = index.get(name)
            if i is not None:
                c = candidates[i]
                if c[2] <= limit or c[2] * c[1] < herd:
                    return (c,)
        chosen: tuple[Candidate, ...] = ()
    else:
        want = min(want, n)
        chosen = _within_bound(walk, candidates, index, limit, herd, want)
    if len(chosen) < want and len(walk) < len(ring.names):
        # None of the remembered hosts could take it (rare): along the whole ring.
        chosen = _within_bound(ring.order(key), candidates, index, limit, herd, want)
    if chosen:
        return chosen
    # Every candidate is at its bound (c = 1 with equal loads) or the ring does not know them
    # (a host added since the ring was built): the least loaded, as least-load would.
    return (_lowest(candidates, ask),)


def _within_bound(
    names: Sequence[str],
    candidates: Sequence[Candidate],
    index: Mapping[str, int],
    limit: float,
    herd: float,
    want: int,
) -> tuple[Candidate, ...]:
    """The first ``want`` candidates along ``names`` within the bound (or carrying less than
    one answer's load)."""
    chosen: list[Candidate] = []
    for name in names:
        i = index.get(name)
        if i is None:
            continue
        c = candidates[i]
        if c[2] <= limit or c[2] * c[1] < herd:
            chosen.append(c)
            if len(chosen) == want:
                break
    return tuple(chosen)


def _lowest(candidates: Sequence[Candidate], ask: Ask) -> Candidate:
    best, best_key, ties = candidates[0], candidates[0][2] + ask.herd / candidates[0][1], 1
    for c in candidates[1:]:
        key = c[2] + ask.herd / c[1]
        if key < best_key - _TIE:
            best, best_key, ties = c, key, 1
        elif key <= best_key + _TIE:
            ties += 1
            if ask.rng.random() * ties < 1.0:
                best = c
    return best


SUBNET_V4 = 24  # the client-subnet key: the resolver's (or ECS) /24 ...
SUBNET_V6 = 56  # ... or /56, the prefixes resolvers send in ECS by default (RFC 7871 11.1)


@lru_cache(maxsize=65536)
def client_subnet(address: str) -> str:
    """The client-subnet key of an address: its /24 (IPv4, also IPv4-mapped) or /56 (IPv6)."""
    import ipaddress

    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = SUBNET_V4 if ip.version == 4 else SUBNET_V6
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def ecs_subnet(family: int, source: int, address: bytes) -> tuple[str, int] | None:
    """The client-subnet key of an EDNS Client Subnet option (RFC 7871) and the scope prefix
    the answer is valid for; None when the option names no usable subnet (prefix 0, bad
    family or length)."""
    import ipaddress

    if family == 1 and 0 < source <= 32 and len(address) == (source + 7) // 8:
        scope = min(source, SUBNET_V4)
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(
            address.ljust(4, b"\0")
        )
    elif family == 2 and 0 < source <= 128 and len(address) == (source + 7) // 8:
        scope = min(source, SUBNET_V6)
        ip = ipaddress.IPv6Address(address.ljust(16, b"\0"))
    else:
        return None
    network = ipaddress.ip_network(f"{ip}/{scope}", strict=False)
    # A subnet shorter than the default prefix keys as itself: it is all the server knows.
    return str(network), scope
