"""A sampled latency histogram kept as plain integers, cheap enough for the DNS path.

The transports time one query per batch they read (the first datagram of each readiness event,
the first message of each TCP read). Under light load that is nearly every query; under heavy
load batches fill up and about one query in ``UDP_BATCH`` is timed, so the cost stays a few
nanoseconds per query. The metrics endpoint turns the buckets into a Prometheus histogram at
scrape time. With several workers each sends its buckets with its other DNS counters
(``lbdns.workers.counters``) and the histogram scraped is their sum (``add_counts``).
"""

from __future__ import annotations

from bisect import bisect_left

# Upper bounds in seconds: answering from a precomputed template takes a few microseconds, a
# first answer that resolves and packs takes about a hundred.
BOUNDS = (
    0.000005,
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
)


class LatencyHistogram:
    """Counts per bucket (the last one is +Inf), a total count and a sum of seconds."""

    __slots__ = ("bounds", "buckets", "count", "total")

    def __init__(self, bounds: tuple[float, ...] = BOUNDS) -> None:
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(self.bounds, seconds)] += 1
        self.count += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, cumulative count) pairs as Prometheus wants them, ending with +Inf."""
        out = []
        running = 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.buckets, strict=True):
            running += count
            out.append((bound, running))
        return out

    def counts(self) -> dict[str, int]:
        """The non-empty buckets by index (JSON-ready, and summed key by key across workers)."""
        return {str(index): count for index, count in enumerate(self.buckets) if count}

    def add_counts(self, counts: dict[str, int], total: float) -> None:
        """Add another process's ``counts()`` and sum of seconds to this histogram."""
        for index, count in counts.items():
            self.buckets[int(index)] += count
            self.count += count
        self.total += total
