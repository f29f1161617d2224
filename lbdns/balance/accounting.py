"""In-flight accounting: the load a farm's own answers are sending that no report shows yet.

Two effects make "answer the host with the lowest reported load" overshoot:

1. Between two reports the server does not see the connections its answers bring, so every
   answer in that gap goes to the same host.
2. A recursive resolver caches an answer for the cache time ``W`` (the farm's TTL unless the
   farm says otherwise) and hands it to every client that asks meanwhile: one answer brings a
   *herd*.

The model (docs/balancing.md has the derivation):

* **Herd of an answer.** Each client key (the resolver's source address) has an EWMA of the gap
  between its queries. A resolver whose clients arrive at rate ``r`` asks again ``W + 1/r``
  seconds after its previous answer (it asks when the cache has expired *and* a client comes),
  and serves ``r (W + 1/r) = 1 + r W`` clients with each answer: that is its herd. So
  ``r = 1 / (gap - W)``, with ``gap - W`` floored at ``W/50`` for resolvers that ask as soon as
  their cache expires (*saturated* ones, within 25 % of ``W``, where timing says least). The raw
  rates of all known resolvers are then scaled together so that they add up to the farm's
  arrival rate ``R`` learned from reports: the timing ranks the resolvers, the reports set the
  scale. A client seen for the first time is charged the farm's mean herd per answer, learned as
  ``R / answers per second``.
* **Arrival rate ``R``.** From each host's reports: the increase of the ``accepted`` counter
  (connections accepted since start) per second, EWMA per host, summed over hosts with a fresh
  report. Without that counter ``R`` is unknown (a change of ``connections`` is arrivals minus
  departures), the raw rates are used as they are and the mean herd keeps its prior.
* **Charge.** An answer adds its herd (divided over the records when split) to each named host's
  ledger. The herd arrives spread over ``[t, t + W]``. A report received at ``t_r`` has already
  counted the part that arrived before ``t_r``; the host's *pending* load is the rest::

      pending = sum over answers a of herd_a * clamp((t_a + W - t_r) / W, 0, 1)

  recomputed when a report arrives (it supersedes what it has counted) and grown by each new
  answer in between. Answers are kept in time buckets of ``W/32`` so a host's ledger stays small
  at any query rate.

* **Several servers.** Each server charges its own answers and learns the others' through the
  shared store's answer exchange (``Outbox``): the herds they charged per host (at the mean time
  they charged them), how many answers they gave, and the times of the resolvers' queries they
  saw. The peers' charges go into the same ledgers as the server's own (so every host carries all
  the herds in flight, each counted once, by the server that answered it), and the peers' query
  times go into the same resolver estimates, so that every server estimates each resolver's herd
  from all its queries, as one server would, however the resolver spreads its queries over the
  servers. A query time that arrives after a later one of the same resolver splits that gap in
  two.

Everything here runs inside ``Farm.choose`` or when the farm's view is rebuilt: O(1) per query,
O(buckets) per report, no awaits, no I/O.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lbdns.balance.host import Report

SATURATED = 1.25  # gap/W below which a resolver asks as soon as its cache expires
GAP_ALPHA = 0.3  # weight of the newest gap in a client's EWMA
RATE_ALPHA = 0.3  # weight of the newest report in a host's arrival-rate EWMA
HERD_ALPHA = 0.2  # weight of the newest estimate of the mean herd per answer
BUCKETS = 32  # answer buckets per cache time
MAX_BUCKETS = 256  # per host; older buckets stay in ``pending`` until a report arrives
MAX_CLIENTS = 50_000  # client keys remembered before the table starts over
MAX_OUTBOX = 100_000  # query times kept for the exchange when nobody takes them
PRIOR_HERD = 1.0  # expected connections per answer before anything is learned
RAW_FLOOR = 0.02  # gap - W counts as at least this x W (at most 50 clients per cache time)


@dataclass(slots=True)
class ClientStat:
    last: float
    gap: float = 0.0  # EWMA of the gap between queries (0: one query seen)
    rate: float = 0.0  # raw clients per second, 1 / (gap - W), before scaling to R
    saturated: bool = False  # asks as soon as its cache expires
    # The query before ``last`` and the gap EWMA before ``last`` counted, so that a query time
    # learned late from another server can split the last gap in two.
    previous: float | None = None
    previous_gap: float = 0.0


@dataclass(slots=True)
class Ledger:
    """One host's in-flight account."""

    pending: float = 0.0  # expected connections not yet counted by a report
    buckets: deque = field(default_factory=lambda: deque(maxlen=MAX_BUCKETS))
    report: Report | None = None  # the report the pending figure was last based on
    rate: float | None = None  # arrivals per second, EWMA over reports
    unit: float = 1.0  # score units per connection (1 for the default score)
    window_answers: int = 0  # answers naming the host within the current buckets


@dataclass(slots=True)
class Outbox:
    """What this server's accounting has to tell the other servers since the last exchange."""

    answers: int = 0  # answers charged
    charges: dict[str, list[float]] = field(default_factory=dict)  # host -> [herd, herd x time]
    queries: list[tuple[str, float]] = field(default_factory=list)  # (client, time) that counted

    def to_json(self) -> dict:
        return {
            "answers": self.answers,
            "charges": {h: [c[0], c[1] / c[0] if c[0] else 0.0] for h, c in self.charges.items()},
            "queries": self.queries,
        }


class Accounting:
    """The in-flight ledgers and resolver herd estimates of one farm."""

    def __init__(self, window: float):
        self.window = max(window, 0.001)
        self.bucket = self.window / BUCKETS
        self.ledgers: dict[str, Ledger] = {}
        self.clients: dict[str, ClientStat] = {}
        self.raw_rate = 0.0  # sum of the known clients' raw rates
        self.saturated = 0  # how many saturated clients
        self.arrival_rate: float | None = None  # R, clients per second farm-wide
        self.mean_herd = PRIOR_HERD
        self.answers = 0  # answers charged so far
        self._herd_mark = (0.0, 0)  # (time, answers) at the last mean-herd update
        self._swept = 0.0
        # Set by a shared store that exchanges the accounting with other servers; None alone.
        self.outbox: Outbox | None = None

    # -- herds ------------------------------------------------------------------------------

    def herd(self, client: str, now: float) -> float:
        """The expected number of new connections one answer to ``client`` brings."""
        stat = self.clients.get(client)
        if stat is None:
            if len(self.clients) >= MAX_CLIENTS:
                self._forget_clients()
            self.clients[client] = ClientStat(now)
            self._queried(client, now)
            return self.mean_herd
        if self._observe(stat, now):
            self._queried(client, now)
        return self._herd_of(stat)

    def _queried(self, client: str, now: float) -> None:
        outbox = self.outbox
        if outbox is not None and len(outbox.queries) < MAX_OUTBOX:
            outbox.queries.append((client, now))

    def _observe(self, stat: ClientStat, at: float) -> bool:
        """Count a query of the resolver at ``at``; False when it does not change the estimate."""
        window = self.window
        gap = at - stat.last
        if -0.5 * window < gap < 0.5 * window:
            # Another query within the cache time: a second qtype, a retry, several resolver
            # processes behind one address, or the same query answered by another server.
            if gap > 0.0:
                stat.last = at
            return False
        if gap > 0.0:
            stat.previous, stat.previous_gap = stat.last, stat.gap
            stat.last = at
            self._gap(stat, gap)
            return True
        # A query older than the last one, learned late from another server: it fell between
        # the last two, so the last gap was two gaps.
        previous = stat.previous
        if previous is not None and at - previous < 0.5 * window:
            return False
        if previous is not None:
            stat.gap = stat.previous_gap
            self._gap(stat, at - previous)
        stat.previous, stat.previous_gap = at, stat.gap
        self._gap(stat, stat.last - at)
        return True

    def _gap(self, stat: ClientStat, gap: float) -> None:
        window = self.window
        gap = min(gap, 20.0 * window)
        stat.gap = gap if stat.gap == 0.0 else stat.gap + GAP_ALPHA * (gap - stat.gap)
        if stat.saturated:
            self.saturated -= 1
        self.raw_rate -= stat.rate
        stat.saturated = stat.gap < SATURATED * window
        if stat.saturated:
            self.saturated += 1
        stat.rate = 1.0 / max(stat.gap - window, RAW_FLOOR * window)
        self.raw_rate += stat.rate

    def peer_queries(self, queries: list) -> None:
        """Query times another server saw: the resolvers' estimates count them like our own."""
        clients = self.clients
        for client, at in queries:
            stat = clients.get(client)
            if stat is None:
                if len(clients) >= MAX_CLIENTS:
                    self._forget_clients()
                clients[client] = ClientStat(float(at))
            else:
                self._observe(stat, float(at))

    def _herd_of(self, stat: ClientStat) -> float:
        if stat.gap == 0.0:
            return self.mean_herd
        rate = stat.rate
        if self.arrival_rate and self.raw_rate > 0.0:  # nothing to scale to without arrivals
            rate *= self.arrival_rate / self.raw_rate
        return 1.0 + rate * self.window

    def _forget_clients(self) -> None:
        self.clients.clear()
        self.raw_rate = 0.0
        self.saturated = 0

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
            self.raw_rate -= stat.rate

    # -- charges ----------------------------------------------------------------------------

    def ledger(self, host: str) -> Ledger:
        ledger = self.ledgers.get(host)
        if ledger is None:
            ledger = self.ledgers[host] = Ledger()
        return ledger

    def charge(self, ledger: Ledger, herd: float, now: float, host: str = "") -> None:
        """An answer named the host: expect ``herd`` more connections over the cache time."""
        ledger.pending += herd
        ledger.window_answers += 1
        key = int(now / self.bucket)
        buckets = ledger.buckets
        if buckets and buckets[-1][0] == key:
            buckets[-1][1] += herd
            buckets[-1][2] += 1
        else:
            buckets.append([key, herd, 1])
        outbox = self.outbox
        if outbox is not None:
            sums = outbox.charges.get(host)
            if sums is None:
                outbox.charges[host] = [herd, herd * now]
            else:
                sums[0] += herd
                sums[1] += herd * now

    def charge_peer(self, ledger: Ledger, herd: float, at: float) -> float:
        """Another server's answers charged ``herd`` to the host at about ``at``; returns the
        part still to come after the host's last report (added to its pending load)."""
        window = self.window
        report = ledger.report
        left = 1.0 if report is None else (at + window - report.received) / window
        if left <= 0.0:
            return 0.0  # the report has counted all of it already
        pending = herd * min(left, 1.0)
        ledger.pending += pending
        key = int(at / self.bucket)
        buckets = ledger.buckets
        i = len(buckets)
        while i and buckets[i - 1][0] > key:  # the exchange is late: a few buckets at most
            i -= 1
        if i and buckets[i - 1][0] == key:
            buckets[i - 1][1] += herd
        elif i == len(buckets):
            buckets.append([key, herd, 0])
        elif len(buckets) < MAX_BUCKETS:
            buckets.insert(i, [key, herd, 0])
        return pending

    def answered(self) -> None:
        """One more answer charged (the mean herd per answer is learned from the count)."""
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

    # -- reports ----------------------------------------------------------------------------

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
        # What the report has not seen yet of each answer's herd.
        window, width = self.window, self.bucket
        buckets = ledger.buckets
        while buckets and (buckets[0][0] + 1) * width + window <= at:
            buckets.popleft()
        pending = 0.0
        answers = 0
        for key, herd, count in buckets:
            start = (key + 0.5) * width
            left = (start + window - at) / window
            pending += herd * (1.0 if left > 1.0 else left if left > 0.0 else 0.0)
            answers += count
        ledger.pending = pending
        ledger.window_answers = answers
        rates = [f.rate for f in fresh if f.rate is not None]
        if rates:
            self.arrival_rate = sum(rates)
            self._learn_mean_herd(now)
        self.sweep(now)

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
