"""In-flight accounting: the load a farm's own answers are sending that no report shows yet.

Two effects make "answer the host with the lowest reported load" overshoot:

1. Between two reports the server does not see the connections its answers bring, so every
   answer in that gap goes to the same host.
2. A recursive resolver caches an answer for its cache time ``T`` (the TTL it was given; the
   farm's ``cache_time`` scales it when resolvers are known to keep answers longer) and hands it
   to every client that asks meanwhile: one answer brings a *herd*.

The model (docs/balancing.md has the derivation):

* **Who caches.** A client that asks again within half the TTL it was given is not caching (a
  ``dig`` loop, a stub resolver, an application without a cache): after ``DIRECT_AFTER`` such
  re-asks in a row it is a *direct* asker. Each of its answers brings about its own share of the
  arrivals, not a herd: ``min(mean herd per answer, R / its query rate)`` (or at most 1 when
  ``R`` is unknown), and that load comes at once, so the next report counts it. A long gap makes
  it a caching client again.
* **Herd of a caching client.** Each client key (the resolver's source address, or its ECS
  subnet) has an EWMA of its *idle* time: the gap between its queries less the cache time of the
  answer before. A resolver whose clients arrive at rate ``r`` asks again ``T + 1/r`` after an
  answer of cache time ``T`` (when the cache has expired *and* a client comes), so
  ``r = 1 / idle``, floored at ``T/50`` of idle for resolvers that ask as soon as their cache
  expires (*saturated*, idle under ``T/4``). An answer of cache time ``T`` brings ``1 + r T``.
  The raw rates of all caching resolvers are scaled together so that they add up to the farm's
  arrival rate ``R`` learned from reports: the timing ranks the resolvers, the reports set the
  scale. A client seen for the first time is charged the farm's mean herd per answer, learned
  as ``R / answers per second``. (The farm picks ``T`` per answer: big herds get short TTLs.)
* **Arrival rate ``R``.** From each host's reports: the increase of the ``accepted`` counter
  (connections accepted since start) per second, EWMA per host, summed over hosts with a fresh
  report. Without that counter ``R`` is unknown (a change of ``connections`` is arrivals minus
  departures), the raw rates are used as they are and the mean herd keeps its prior.
* **Charge.** An answer adds its herd (divided over the records when split) to each named host's
  ledger. The herd arrives spread over ``[t, t + T]``. A report received at ``t_r`` has already
  counted the part that arrived before ``t_r``; the host's *pending* load is the rest::

      pending = sum over answers a of herd_a * clamp((t_a + T_a - t_r) / T_a, 0, 1)

  recomputed when a report arrives (it supersedes what it has counted) and grown by each new
  answer in between. Answers are kept in time buckets of ``T/32``, one track per cache time, so
  a host's ledger stays small at any query rate.
* **Time.** Charges also expire by time: what should have arrived longer ago than the host's
  staleness horizon is dropped whether or not a report came (``settle``), so the in-flight load
  and the recent share of a host whose agent died fall to zero instead of staying frozen.

* **Several servers.** Each server charges its own answers and learns the others' through the
  shared store's answer exchange (``Outbox``): the herds they charged per host (at the mean time
  and cache time they charged them), how many answers they gave, and the times of the resolvers'
  queries they saw. The peers' charges go into the same ledgers as the server's own (so every
  host carries all the herds in flight, each counted once, by the server that answered it), and
  the peers' query times go into the same resolver estimates, so that every server estimates
  each resolver's herd from all its queries, as one server would, however the resolver spreads
  its queries over the servers. A query time that arrives after a later one of the same resolver
  splits that gap in two. Direct askers' charges are not exchanged: they come at once and the
  next report counts them.

Everything here runs inside ``Farm.choose`` or when the farm's view is rebuilt: O(1) per query,
O(buckets) per report, no awaits, no I/O.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lbdns.balance.host import Report

SATURATED = 0.25  # idle/T below which a resolver asks as soon as its cache expires
GAP_ALPHA = 0.3  # weight of the newest gap in a client's EWMA
RATE_ALPHA = 0.3  # weight of the newest report in a host's arrival-rate EWMA
HERD_ALPHA = 0.2  # weight of the newest estimate of the mean herd per answer
BUCKETS = 32  # answer buckets per cache time
MAX_BUCKETS = 256  # per track; older buckets stay in ``pending`` until a report arrives
MAX_CLIENTS = 50_000  # client keys remembered before the table starts over
MAX_OUTBOX = 100_000  # query times kept for the exchange when nobody takes them
PRIOR_HERD = 1.0  # expected connections per answer before anything is learned
RAW_FLOOR = 0.02  # idle counts as at least this x T (at most 50 clients per cache time)
QUICK = 0.5  # a re-ask within this fraction of the answer's cache time is not a cache refill
DIRECT_AFTER = 2  # quick re-asks in a row that make a client a direct (non-caching) asker
DIRECT = 0.0  # the track of direct askers' charges: they arrive at once


@dataclass(slots=True)
class ClientStat:
    last: float
    ttl: float  # cache time of the last answer it was given (seconds it may keep it)
    gap: float = 0.0  # EWMA of the gap between queries (0: one query seen)
    idle: float = 0.0  # EWMA of gap - cache time: how long it waits for a client after expiry
    rate: float = 0.0  # raw clients per second, 1 / idle, before scaling to R
    saturated: bool = False  # asks as soon as its cache expires
    direct: bool = False  # re-asks within its TTL: not caching
    quick: int = 0  # quick re-asks in a row
    recent: float = 0.0  # EWMA of the quick gaps (a direct asker's time between queries)
    # The query before ``last`` and the EWMAs before ``last`` counted, so that a query time
    # learned late from another server can split the last gap in two.
    previous: float | None = None
    previous_gap: float = 0.0
    previous_idle: float = 0.0


@dataclass(slots=True)
class Ledger:
    """One host's in-flight account."""

    pending: float = 0.0  # expected connections not yet counted by a report
    # cache time -> buckets [key, herd, answers] (key = start // (cache time / BUCKETS));
    # DIRECT (0.0) holds direct askers' charges, in buckets of ``Accounting.direct_bucket``.
    tracks: dict[float, deque] = field(default_factory=dict)
    report: Report | None = None  # the report the pending figure was last based on
    rate: float | None = None  # arrivals per second, EWMA over reports
    unit: float = 1.0  # score units per connection (1 for the default score)
    window_answers: int = 0  # answers naming the host within the last cache time


@dataclass(slots=True)
class Outbox:
    """What this server's accounting has to tell the other servers since the last exchange."""

    answers: int = 0  # answers charged
    # host -> [herd, herd x time, herd x cache time]
    charges: dict[str, list[float]] = field(default_factory=dict)
    # (client, time[, cache time answered]) of the queries that counted
    queries: list[tuple] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "answers": self.answers,
            "charges": {
                h: [c[0], c[1] / c[0], c[2] / c[0]] if c[0] else [0.0, 0.0, 0.0]
                for h, c in self.charges.items()
            },
            "queries": self.queries,
        }


class Accounting:
    """The in-flight ledgers and resolver herd estimates of one farm."""

    def __init__(self, window: float):
        self.window = max(window, 0.001)  # the longest cache time (the farm's TTL)
        self.bucket = self.window / BUCKETS
        # Direct askers' buckets are narrower: the next report counts what came before it.
        self.direct_bucket = self.bucket / 8
        self.ledgers: dict[str, Ledger] = {}
        self.clients: dict[str, ClientStat] = {}
        self.raw_rate = 0.0  # sum of the caching clients' raw rates
        self.saturated = 0  # how many saturated clients
        self.direct = 0  # how many direct (non-caching) clients
        self.arrival_rate: float | None = None  # R, clients per second farm-wide
        self.mean_herd = PRIOR_HERD
        self.answers = 0  # answers charged so far
        self._herd_mark = (0.0, 0)  # (time, answers) at the last mean-herd update
        self._swept = 0.0
        # Set by a shared store that exchanges the accounting with other servers; None alone.
        self.outbox: Outbox | None = None

    # -- herds ------------------------------------------------------------------------------

    def observe(self, client: str, now: float) -> ClientStat | None:
        """Count a query of ``client``; its estimate, or None when it was never seen before."""
        stat = self.clients.get(client)
        if stat is None:
            if len(self.clients) >= MAX_CLIENTS:
                self._forget_clients()
            self.clients[client] = ClientStat(now, self.window)
            self._queried(client, now)
            return None
        if stat.direct:
            gap = now - stat.last
            if 0.0 < gap < QUICK * stat.ttl:
                # A direct asker's next re-ask (what ``_observe`` does with it, without the
                # call): most queries of a client that does not cache.
                stat.last = now
                stat.recent += GAP_ALPHA * (gap - stat.recent)
                return stat
        if self._observe(stat, now):
            self._queried(client, now)
        return stat

    def herd(self, client: str, now: float) -> float:
        """The expected number of new connections one answer of the full cache time to
        ``client`` brings (counts the query, like ``observe``)."""
        return self.arrival(client, now)[0]

    def arrival(self, client: str, now: float) -> tuple[float, bool]:
        """``herd``, and whether it comes at once (``client`` is a direct asker: its answer is
        charged with ``charge_direct``)."""
        stat = self.observe(client, now)
        if stat is None:
            return self.mean_herd, False
        if stat.direct:
            return self.direct_herd(stat), True
        return self.herd_of(stat, self.window), False

    def direct_herd(self, stat: ClientStat) -> float:
        """What one answer to a direct asker brings: its own share of the arrivals."""
        if self.arrival_rate is None:
            return min(1.0, self.mean_herd)
        per_query = self.arrival_rate * stat.recent if stat.recent > 0.0 else self.mean_herd
        return min(self.mean_herd, per_query)

    def rate_of(self, stat: ClientStat) -> float:
        """A caching client's clients per second (scaled to the arrival rate when known)."""
        rate = stat.rate
        if self.arrival_rate is not None and self.raw_rate > 0.0:
            rate *= self.arrival_rate / self.raw_rate
        return rate

    def herd_of(self, stat: ClientStat, cache_time: float) -> float:
        """A caching client's herd for an answer kept ``cache_time`` seconds."""
        if stat.gap == 0.0:
            return self.mean_herd
        return 1.0 + self.rate_of(stat) * cache_time

    def gave(self, client: str, stat: ClientStat, cache_time: float) -> None:
        """The answer to ``client``'s last query is kept ``cache_time`` seconds: its next gap
        is measured from that (and the other servers learn it with the query time)."""
        stat.ttl = cache_time
        outbox = self.outbox
        if outbox is not None and outbox.queries:
            last = outbox.queries[-1]
            if last[0] == client and last[1] == stat.last:
                outbox.queries[-1] = (client, stat.last, cache_time)

    def _queried(self, client: str, now: float) -> None:
        outbox = self.outbox
        if outbox is not None and len(outbox.queries) < MAX_OUTBOX:
            outbox.queries.append((client, now))

    def _observe(self, stat: ClientStat, at: float) -> bool:
        """Count a query of the client at ``at``; False when it does not change the herd
        estimate (a quick re-ask, which counts towards being a direct asker instead)."""
        gap = at - stat.last
        quick = QUICK * stat.ttl
        if -quick < gap < quick:
            # Another query within the cache time: a retry, the same query answered by another
            # server, several resolvers behind one address, or a client that does not cache.
            if gap > 0.0:
                stat.last = at
                stat.recent = (
                    gap if stat.recent == 0.0 else stat.recent + GAP_ALPHA * (gap - stat.recent)
                )
                if not stat.direct:
                    stat.quick += 1
                    if stat.quick >= DIRECT_AFTER:
                        self._set_direct(stat, True)
            return False
        if gap > 0.0:
            if stat.direct:
                self._set_direct(stat, False)  # it waited: perhaps it caches now
            stat.quick = 0
            stat.previous, stat.previous_gap, stat.previous_idle = stat.last, stat.gap, stat.idle
            stat.last = at
            self._gap(stat, gap)
            return True
        # A query older than the last one, learned late from another server: it fell between
        # the last two, so the last gap was two gaps.
        previous = stat.previous
        if previous is not None and at - previous < quick:
            return False
        if previous is not None:
            stat.gap, stat.idle = stat.previous_gap, stat.previous_idle
            self._gap(stat, at - previous)
        stat.previous, stat.previous_gap, stat.previous_idle = at, stat.gap, stat.idle
        self._gap(stat, stat.last - at)
        return True

    def _set_direct(self, stat: ClientStat, direct: bool) -> None:
        stat.direct = direct
        if direct:
            self.direct += 1
            if stat.saturated:
                self.saturated -= 1
            self.raw_rate -= stat.rate
            stat.saturated, stat.rate, stat.gap, stat.idle = False, 0.0, 0.0, 0.0
            stat.previous = None
        else:
            self.direct -= 1
            stat.recent = 0.0

    def _gap(self, stat: ClientStat, gap: float) -> None:
        ttl = stat.ttl
        gap = min(gap, 20.0 * self.window)
        idle = max(gap - ttl, 0.0)
        if stat.gap == 0.0:
            stat.gap, stat.idle = gap, idle
        else:
            stat.gap += GAP_ALPHA * (gap - stat.gap)
            stat.idle += GAP_ALPHA * (idle - stat.idle)
        if stat.saturated:
            self.saturated -= 1
        self.raw_rate -= stat.rate
        stat.saturated = stat.idle < SATURATED * ttl
        if stat.saturated:
            self.saturated += 1
        stat.rate = 1.0 / max(stat.idle, RAW_FLOOR * ttl, 0.001)
        self.raw_rate += stat.rate

    def peer_queries(self, queries: list) -> None:
        """Query times another server saw: the resolvers' estimates count them like our own."""
        clients = self.clients
        for query in queries:
            client, at = query[0], float(query[1])
            stat = clients.get(client)
            if stat is None:
                if len(clients) >= MAX_CLIENTS:
                    self._forget_clients()
                stat = clients[client] = ClientStat(at, self.window)
            else:
                self._observe(stat, at)
            if len(query) > 2 and stat.last == at:  # the cache time that server answered
                stat.ttl = float(query[2]) or self.window

    def _forget_clients(self) -> None:
        self.clients.clear()
        self.raw_rate = 0.0
        self.saturated = 0
        self.direct = 0

    def sweep(self, now: float) -> None:
        """Forget resolvers that stopped asking (called when a report is taken in)."""
        if now - self._swept < 10.0 * self.window:
            return
        self._swept = now
        idle = 20.0 * self.window
        for key in [k for k, s in self.clients.items() if now - s.last > idle]:
            stat = self.clients.pop(key)
            if stat.saturated:
                self.saturated -= 1
            if stat.direct:
                self.direct -= 1
            self.raw_rate -= stat.rate

    # -- charges ----------------------------------------------------------------------------

    def ledger(self, host: str) -> Ledger:
        ledger = self.ledgers.get(host)
        if ledger is None:
            ledger = self.ledgers[host] = Ledger()
        return ledger

    def charge(
        self, ledger: Ledger, herd: float, now: float, host: str = "", cache_time: float = 0.0
    ) -> None:
        """An answer named the host: expect ``herd`` more connections over ``cache_time``
        (default: the farm's; ``DIRECT`` is not allowed here, see ``charge_direct``)."""
        cache_time = cache_time or self.window
        ledger.pending += herd
        ledger.window_answers += 1
        track = ledger.tracks.get(cache_time)
        if track is None:
            track = ledger.tracks[cache_time] = deque(maxlen=MAX_BUCKETS)
        key = int(now * BUCKETS / cache_time)
        if track and track[-1][0] == key:
            last = track[-1]
            last[1] += herd
            last[2] += 1
        else:
            track.append([key, herd, 1])
        outbox = self.outbox
        if outbox is not None:
            sums = outbox.charges.get(host)
            if sums is None:
                outbox.charges[host] = [herd, herd * now, herd * cache_time]
            else:
                sums[0] += herd
                sums[1] += herd * now
                sums[2] += herd * cache_time

    def charge_direct(self, ledger: Ledger, herd: float, now: float) -> None:
        """An answer to a direct asker named the host: ``herd`` comes at once, and the next
        report counts it."""
        ledger.pending += herd
        ledger.window_answers += 1
        track = ledger.tracks.get(DIRECT)
        if track is None:
            track = ledger.tracks[DIRECT] = deque(maxlen=MAX_BUCKETS)
        key = int(now / self.direct_bucket)
        if track and track[-1][0] == key:
            last = track[-1]
            last[1] += herd
            last[2] += 1
        else:
            track.append([key, herd, 1])

    def charge_peer(self, ledger: Ledger, herd: float, at: float, cache_time: float = 0.0) -> float:
        """Another server's answers charged ``herd`` to the host at about ``at``, to arrive
        over ``cache_time``; returns the part still to come after the host's last report
        (added to its pending load)."""
        window = cache_time if cache_time > 0.0 else self.window
        report = ledger.report
        left = 1.0 if report is None else (at + window - report.received) / window
        if left <= 0.0:
            return 0.0  # the report has counted all of it already
        pending = herd * min(left, 1.0)
        ledger.pending += pending
        track = ledger.tracks.get(window)
        if track is None:
            track = ledger.tracks[window] = deque(maxlen=MAX_BUCKETS)
        key = int(at * BUCKETS / window)
        i = len(track)
        while i and track[i - 1][0] > key:  # the exchange is late: a few buckets at most
            i -= 1
        if i and track[i - 1][0] == key:
            track[i - 1][1] += herd
        elif i == len(track):
            track.append([key, herd, 0])
        elif len(track) < MAX_BUCKETS:
            track.insert(i, [key, herd, 0])
        return pending

    def answered(self, direct: bool = False) -> None:
        """One more answer charged (the mean herd per answer is learned from the count of
        answers that may bring herds: a direct asker's do not)."""
        if direct:
            return
        self.answers += 1
        if self.outbox is not None:
            self.outbox.answers += 1

    def take_outbox(self) -> Outbox | None:
        """What to tell the other servers now (None when there is nothing); starts a new one."""
        outbox = self.outbox
        if outbox is None:
            self.outbox = Outbox()
            return None
        if not (outbox.answers or outbox.charges or outbox.queries):
            return None
        self.outbox = Outbox()
        return outbox

    # -- reports and time -------------------------------------------------------------------

    def reported(
        self,
        ledger: Ledger,
        report: Report,
        unit: float,
        now: float,
        fresh: list[Ledger],
    ) -> None:
        """A new report for the host of ``ledger``: it supersedes what it has counted.

        ``fresh`` are the ledgers of every host whose report is fresh (for the arrival rate).
        """
        previous = ledger.report
        ledger.report = report
        ledger.unit = unit
        at = report.received
        if previous is not None and at > previous.received:
            arrivals = _arrivals(previous, report)
            if arrivals is not None:
                rate = arrivals / (at - previous.received)
                old = ledger.rate
                ledger.rate = rate if old is None else old + RATE_ALPHA * (rate - old)
        self._recount(ledger, at, at, now)
        rates = [f.rate for f in fresh if f.rate is not None]
        if rates:
            self.arrival_rate = sum(rates)
            self._learn_mean_herd(now)
        self.sweep(now)

    def settle(self, ledger: Ledger, now: float, horizon: float) -> None:
        """Let time pass on the ledger: herds that should have arrived more than ``horizon``
        ago (the host's staleness horizon: a live host has reported since) are dropped, and the
        recent answers are recounted, whether or not a report came."""
        counted = ledger.report.received if ledger.report is not None else float("-inf")
        self._recount(ledger, counted, now - horizon, now)

    def _recount(self, ledger: Ledger, counted: float, expired: float, now: float) -> None:
        """Pending load as of a report at ``counted``: buckets whose herd arrived before then,
        or before ``expired``, are dropped; answers within the last cache time are recounted."""
        pending = 0.0
        answers = 0
        recent = now - self.window
        for cache_time, track in ledger.tracks.items():
            if cache_time == DIRECT:
                width = self.direct_bucket
                done = max(counted, expired)
                while track and (track[0][0] + 1) * width <= done:
                    track.popleft()
                for key, herd, count in track:
                    pending += herd  # what no report has counted yet
                    if (key + 1) * width > recent:
                        answers += count
                continue
            width = cache_time / BUCKETS
            done = max(counted, expired)
            while track and (track[0][0] + 1) * width + cache_time <= done:
                track.popleft()
            for key, herd, count in track:
                start = (key + 0.5) * width
                left = (start + cache_time - counted) / cache_time
                pending += herd * (1.0 if left > 1.0 else left if left > 0.0 else 0.0)
                if (key + 1) * width > recent:
                    answers += count
        ledger.pending = pending
        ledger.window_answers = answers

    def _learn_mean_herd(self, now: float) -> None:
        since, answers = self._herd_mark
        elapsed = now - since
        if elapsed < self.window:
            return
        self._herd_mark = (now, self.answers)
        answered = self.answers - answers
        if since == 0.0 or answered <= 0 or self.arrival_rate is None:
            return
        estimate = self.arrival_rate * elapsed / answered
        estimate = min(max(estimate, 0.05), 10_000.0)
        self.mean_herd += HERD_ALPHA * (estimate - self.mean_herd)


def _arrivals(previous: Report, report: Report) -> float | None:
    # Only a counter of accepted connections says how many arrived: a change of ``connections``
    # is arrivals minus departures, about zero in a steady state whatever the arrival rate.
    new, old = report.metrics.get("accepted"), previous.metrics.get("accepted")
    if new is not None and old is not None and new >= old:
        return float(new - old)
    return None
