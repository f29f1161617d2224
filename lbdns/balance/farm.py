"""A farm at run time: its hosts, their reports and states, and the choice of answer.

The DNS path calls ``Farm.choose`` once per query for a farm name. It never awaits: it reads the
farm's current ``FarmView`` (an immutable snapshot of states and scores, rebuilt when a report or
an admin change arrives, or when a host's report goes stale) and asks the farm's policy. For the
load-aware default policy the farm also keeps, per host, the load its own recent answers are
expected to bring (``lbdns.balance.accounting``), added to each candidate's score before the policy sees
it and charged after each answer.

Host states are in ``lbdns.balance.host``; what a farm's state and last answer mean, as the
explain endpoint and the check verdicts show them, in ``lbdns.balance.explain``.

Warm-up: until ``stale_after`` report intervals after the first report the farm received
(a restart), hosts that have not reported yet are answered at the mean reported load, so the
first host to report does not get every answer. After that a never-reported host is answered
only when no host is up (fail-open, after stale hosts).

Keyed farms (policy ``consistent-hash``): ``choose_key`` answers a key (a label under the farm,
or the client's subnet) from the farm's ring (``lbdns.balance.policy.consistent_hash``), rebuilt
when a view is built after the set of hosts or their capacities changed. ``assign`` is the
assignment API's choice: one host, charged exactly one connection.

The DNS path calls ``query_answer`` and ``key_answer``: ``answer`` and ``choose_key``, or where
the extension ``_direct`` was built the same answers made in C for a direct asker's repeated
query (``lbdns/balance/_direct.c``), which hands every other query to ``answer_at`` or
``choose_key_at`` before it changes anything.
"""

from __future__ import annotations

import random
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

from dnslib import QTYPE

from lbdns.balance.accounting import GAP_ALPHA, MAX_BUCKETS, QUICK, Accounting, Ledger
from lbdns.balance.check import combine
from lbdns.balance.drain import drain_status
from lbdns.balance.host import (
    DISABLED,
    DOWN,
    DRAINED,
    DRAINING,
    NEW,
    STALE,
    UP,
    Host,
    raw_score,
    score,
)
from lbdns.balance.policy import ACCOUNTED, POLICIES, Ask, Candidate, least_load
from lbdns.balance.policy.consistent_hash import EMPTY_RING, Ring, key_hash
from lbdns.zone.model import FarmSpec

try:  # a direct asker's repeated query answered in C (lbdns/balance/_direct.c); optional
    from lbdns.balance import _direct
except ImportError:  # pragma: no cover - built wherever the tests run
    _direct = None

Clock = Callable[[], float]

# Answers that are not host lists.
NODATA = "nodata"
SERVFAIL = "servfail"
SORRY = "sorry"

INFINITE = float("inf")
LEARN_TTL = 5  # seconds: the TTL of a first answer to a client whose herd is not known yet
MIN_BUDGET = 4.0  # connections an answer may always bring at the full TTL (a few
# connections more or less unbalance nothing, and shorter TTLs cost queries)
STICKY_LIMIT = 50_000  # client keys remembered for A/AAAA stickiness before starting over
KEY_LIMIT = 50_000  # ring positions of keys remembered before starting over
_QTYPES = (QTYPE.A, QTYPE.AAAA)
# Ask((want, seq, rng, herd, split, key, ring, balance, index)) without the Python-level __new__
# of a named tuple (a third of a charged answer's own time).
_new_ask = partial(tuple.__new__, Ask)
_UNKEYED_BALANCE = Ask._field_defaults["balance"]  # an unkeyed Ask's balance field


def _by_projected_load(chosen: Sequence[Candidate], herd: float) -> list[Candidate]:
    """``chosen`` ordered by load + herd / capacity, equal ones in their order: what
    ``sorted(chosen, key=...)`` gives, by insertion into a list of a few (no key tuples, no
    sort on the query path)."""
    keys: list[float] = []
    ordered: list[Candidate] = []
    for c in chosen:
        key = c[2] + herd / c[1]
        i = bisect_right(keys, key)
        keys.insert(i, key)
        ordered.insert(i, c)
    return ordered


def _names(chosen: Sequence[Candidate]) -> tuple[str, ...]:
    if len(chosen) == 1:
        return (chosen[0][0],)
    return tuple(c[0] for c in chosen)


@dataclass(frozen=True, slots=True)
class FarmView:
    """An immutable snapshot of a farm's states and reported scores."""

    states: Mapping[str, str]
    scores: Mapping[str, float]
    candidates: Mapping[int, tuple[Candidate, ...]]  # qtype -> answerable hosts
    fallback: Mapping[int, tuple[Candidate, ...]]  # qtype -> least-bad hosts (fail-open)
    valid_until: float  # the view must be rebuilt at this time (a report goes stale)
    built: float = 0.0
    warming: bool = False  # never-reported hosts are answered until the first reports are in
    reasons: Mapping[str, str | None] = field(default_factory=dict)  # "agent", "check", ...


class LastAnswer(NamedTuple):
    """What the last answer was chosen from (``lbdns.balance.explain`` says why)."""

    when: float
    client: str
    qtype: int
    herd: float
    candidates: tuple[Candidate, ...]
    chosen: tuple[str, ...]
    how: str  # "policy", "sticky", "fail-open", "watermark", "key", "assign"
    key: str | None = None  # the key of a keyed answer or an assignment
    ttl: int = 0  # the TTL answered (0 for an assignment)
    asker: str = ""  # "new", "caching", "direct" (re-asks within its TTL), "" (not accounted)


class Assignment(NamedTuple):
    """The assignment API's answer: the host chosen, how, and what it was chosen from (its
    reason in a sentence is ``lbdns.balance.explain.answer_reason``)."""

    host: str
    how: str  # "key" (its place on the ring or the next within bound), "policy"
    answer: LastAnswer


@dataclass
class Farm:
    """Run-time state of one farm."""

    spec: FarmSpec
    hosts: dict[str, Host] = field(default_factory=dict)
    clock: Clock = time.time
    rng: random.Random = field(default_factory=random.Random)
    seq: int = 0
    _view: FarmView | None = None
    compiled: bool = True  # query_answer and key_answer in C where built (``udp_compiled``)

    def __post_init__(self) -> None:
        self.policy = POLICIES[self.spec.policy]
        for host_spec in self.spec.hosts:
            self.hosts.setdefault(host_spec.name, Host(host_spec))
        window = self.spec.cache_time if self.spec.cache_time is not None else self.spec.ttl
        self.accounting: Accounting | None = (
            Accounting(float(window) or 1.0) if self.spec.policy in ACCOUNTED else None
        )
        self.started = self.clock()
        self.first_report: float | None = None
        # (when, client, qtype, herd, candidates, chosen, how) of the last answer: ``last``.
        self._last: tuple | None = None
        # qtype -> the candidates answered now, loads including the in-flight estimate; the
        # charges after each answer replace entries in place (the view itself stays frozen),
        # with plain (name, capacity, load) tuples, a Candidate's fields: a named tuple costs
        # four times as much to build, and this is done per answer. Read them by index.
        self._live: dict[int, list[Candidate]] = {}
        self._positions: dict[int, dict[str, int]] = {}
        self._slots: dict[str, list[tuple[list[Candidate], int]]] = {}  # host -> live entries
        self._failing_open: dict[int, bool] = {}
        self._sticky: dict[str, tuple[float, tuple[str, ...], int, int]] = {}
        self._herd_unit = 1.0
        # Keyed farms: the ring (rebuilt when the hosts or their capacities change), the keys'
        # ring positions, and the last answer per key (the AAAA after the A: same host).
        self.ring: Ring = EMPTY_RING
        self._ring_hosts: tuple[tuple[str, float], ...] | None = None
        self._key_positions: dict[str, int] = {}
        self._key_sticky: dict[str, tuple[float, tuple[str, ...], int]] = {}
        # Connections (score units / herd unit) one answer may bring before its TTL is cut:
        # herd_budget x the fair share of a capacity unit.
        self._budget = float("inf")
        # Seconds resolvers keep an answer per second of TTL (cache_time / ttl, 1 without it).
        spec = self.spec
        self._cache_per_ttl = (
            spec.cache_time / spec.ttl if spec.cache_time is not None and spec.ttl else 1.0
        )
        # What the DNS path calls for a farm name (``answer``) and for a key (``choose_key``):
        # those, or the same in C for the commonest case, a direct asker's repeated query
        # answered with one record, which hands every other case to ``answer_at`` or
        # ``choose_key_at`` before it changes anything.
        self.query_answer: Callable[..., tuple[tuple[str, ...] | str, int]] = self.answer
        self.key_answer: Callable[..., tuple[str, ...] | str] = self.choose_key
        compiled = self.compiled and _direct is not None and spec.answers == 1
        if compiled and spec.keyed:
            self.key_answer = self._direct_chooser()
        elif compiled and spec.policy == "least-load" and spec.watermark is None:
            self.query_answer = self._direct_chooser()

    def _direct_chooser(self, fallback: Callable[..., Any] | None = None) -> Any:
        """The compiled answer of this farm (``lbdns/balance/_direct.c``), handing what it does
        not answer itself to ``fallback`` (default: ``choose_key_at`` or ``answer_at``)."""
        spec = self.spec
        if fallback is None:
            fallback = self.choose_key_at if spec.keyed else self.answer_at
        return _direct.Chooser(
            self,
            fallback,
            keyed=spec.keyed,
            new_track=partial(deque, maxlen=MAX_BUCKETS),
            ttl=spec.ttl,
            balance=spec.balance_factor,
            quick=QUICK,
            gap_alpha=GAP_ALPHA,
            split=spec.split,
            split_herd=2 * least_load.MIN_PER_RECORD,
            tie=least_load.TIE,
            sticky_limit=STICKY_LIMIT,
        )

    @property
    def name(self) -> str:
        return self.spec.name

    # -- changes ----------------------------------------------------------------------------

    def keep_from(self, previous: Farm) -> None:
        """A zone reload replaced ``previous``: keep what was learned (in-flight loads, resolver
        estimates, the warm-up's start) unless the policy or the cache time changed."""
        self.first_report = previous.first_report
        self._last = previous._last
        if (
            self.accounting is not None
            and previous.accounting is not None
            and self.accounting.window == previous.accounting.window
        ):
            self.accounting = previous.accounting
            self._sticky = previous._sticky

    def changed(self) -> None:
        """Something about the hosts changed: the next query builds a new view."""
        self._view = None

    def host_state(self, host: Host, now: float) -> str:
        return self.state_and_reason(host, now)[0]

    def state_and_reason(self, host: Host, now: float) -> tuple[str, str | None]:
        """A host's state and why: "admin", "agent" (its reports), "check" (the servers'
        probes), or None when it is up on its agent's word."""
        if host.admin == "disabled":
            return DISABLED, "admin"
        if host.admin == "draining":
            # drained once the drain is complete (either way the host gets no answers)
            status = drain_status(self, host, now)
            return (DRAINED if status is not None and status.done else DRAINING), "admin"
        report = host.report
        if report is None:
            agent = NEW
        elif now - report.received > self.spec.stale_after * report.interval:
            agent = STALE
        elif not report.healthy:
            agent = DOWN
        else:
            agent = UP
        check = self.spec.check_of(host.spec)
        if check is None or host.probe is None:
            return agent, None if agent == UP else "agent"
        state, reason = combine(self.spec.require, agent, host.probe.verdict(check.quorum, now))
        return state, reason

    # -- the query path ---------------------------------------------------------------------

    def view(self) -> FarmView:
        now = self.clock()
        view = self._view
        if view is None or now >= view.valid_until:
            view = self._view = self._build_view(now)
        return view

    def choose(self, qtype: int, client: str = "") -> tuple[str, ...] | str:
        """Host names to answer a query of ``qtype`` (A or AAAA) from ``client`` (the resolver's
        address or its ECS subnet), or NODATA/SERVFAIL/SORRY."""
        return self.answer(qtype, client)[0]

    def answer(self, qtype: int, client: str = "") -> tuple[tuple[str, ...] | str, int]:
        """``choose`` and the TTL of the answer: the farm's ``ttl``, or shorter (down to
        ``min_ttl``) for a client whose learned herd is bigger than the herd budget."""
        return self.answer_at(qtype, client, self.clock())

    def answer_at(self, qtype: int, client: str, now: float) -> tuple[tuple[str, ...] | str, int]:
        """``answer`` at ``now`` (the compiled ``query_answer`` has read the clock)."""
        # The query path: a third of the queries of a busy farm come here, so it avoids what a
        # plain rendering would cost per call (named tuples, generators, helper calls).
        view = self._view
        if view is None or now >= view.valid_until:
            view = self._view = self._build_view(now)
        live = self._live.get(qtype)
        if not live:
            return self._unanswerable(qtype), self.spec.ttl
        self.seq += 1
        accounting = self.accounting
        if accounting is not None:
            sticky = self._sticky.get(client)
            if (
                sticky is not None
                and sticky[2] != qtype
                and now - sticky[0] < accounting.window / 4
            ):
                # The same resolver asked for the other address family a moment ago: the AAAA
                # after the A (or the reverse) for the same clients. Same host and TTL, no
                # second charge. (The sticky path is half of a farm's queries: _answerable is
                # inlined here.)
                names = sticky[1]
                positions = self._positions[qtype]
                for name in names:
                    if name not in positions:
                        break
                else:
                    self._answered(names, now)
                    self._last = (now, client, qtype, 0.0, (), names, "sticky", None, sticky[3])
                    return names, sticky[3]
        how = "fail-open" if self._failing_open.get(qtype) else "policy"
        candidates: Sequence[Candidate] = live
        watermark = self.spec.watermark
        if watermark is not None:
            below = [c for c in live if c[2] < watermark]
            if below and len(below) < len(live):
                candidates, how = below, "watermark"
        spec = self.spec
        if accounting is None:
            chosen = self.policy(candidates, Ask(spec.answers, self.seq, self.rng))
            names = _names(chosen)
            self._answered(names, now)
            self._last = (now, client, qtype, 0.0, tuple(candidates), names, how, None, spec.ttl)
            return names, spec.ttl
        stat = accounting.observe(client, now)
        ttl = spec.ttl
        cache_time = accounting.window
        if stat is not None and stat.direct:
            herd, asker = accounting.direct_herd(stat), "direct"
        elif stat is None or stat.gap == 0.0:
            herd, asker = accounting.mean_herd, "new"
            if self._budget != INFINITE and ttl > LEARN_TTL:
                # Its herd is unknown: a short first TTL, so that the next query comes soon and
                # tells its rate, instead of a full TTL of a possibly big herd on one host.
                ttl = max(LEARN_TTL, spec.min_ttl)
                cache_time = ttl * self._cache_per_ttl
                accounting.gave(client, stat or accounting.clients[client], cache_time)
        else:
            rate = accounting.rate_of(stat)
            asker = "caching"
            if 1.0 + rate * cache_time > self._budget and ttl > spec.min_ttl:
                # A big herd: a shorter TTL makes it smaller (the resolver asks again sooner).
                ttl = int((self._budget - 1.0) / rate / self._cache_per_ttl)
                ttl = spec.min_ttl if ttl < spec.min_ttl else ttl if ttl < spec.ttl else spec.ttl
                cache_time = ttl * self._cache_per_ttl
            # TTL 0: not cached, one client per answer, which comes at once (charged direct).
            herd = 1.0 + rate * cache_time
            accounting.gave(client, stat, cache_time)
        chosen = self.policy(
            candidates,
            _new_ask(
                (
                    spec.answers,
                    self.seq,
                    self.rng,
                    herd * self._herd_unit,
                    spec.split,
                    -1,
                    None,
                    _UNKEYED_BALANCE,
                    None,
                )
            ),
        )
        if len(chosen) > 1:
            # First-record order: many clients (and resolvers that keep the order) use the
            # first record only, so it is the host that takes this whole herd best.
            chosen = _by_projected_load(chosen, herd * self._herd_unit)
            names = tuple(c[0] for c in chosen)
        else:
            names = (chosen[0][0],)  # _names, inline, as the sticky check and the lift are
        before = tuple(candidates)  # the loads before this answer's charge, for explain
        direct = asker == "direct"
        if len(chosen) == 1:
            self._charge_one(accounting, chosen[0], herd, now, 0.0 if direct else cache_time)
        else:
            self._charge(accounting, chosen, herd, now, 0.0 if direct else cache_time)
        self._answered(names, now)
        if not direct:
            accounting.answered()
        if sticky is None and len(self._sticky) >= STICKY_LIMIT:  # a new client only
            self._sticky.clear()
        self._sticky[client] = (now, names, qtype, ttl)
        self._last = (now, client, qtype, herd, before, names, how, None, ttl, asker)
        return names, ttl

    @property
    def last(self) -> LastAnswer | None:
        """What the last answer was chosen from (built when asked: the query path keeps a plain
        tuple)."""
        if self._last is None:
            return None
        last = LastAnswer(*self._last)
        # live entries are plain tuples once charged (see ``_live``): named again here
        return last._replace(candidates=tuple(Candidate._make(c) for c in last.candidates))

    def choose_key(self, qtype: int, key: str, client: str = "") -> tuple[str, ...] | str:
        """Host names to answer ``key`` (a label under the farm, or a client subnet) for a
        query of ``qtype`` from ``client``: the key's host on the ring unless it is over its
        bound (``consistent_hash``), charged the resolver's herd like a least-load answer."""
        return self.choose_key_at(qtype, key, client, self.clock())

    def choose_key_at(self, qtype: int, key: str, client: str, now: float) -> tuple[str, ...] | str:
        """``choose_key`` at ``now`` (the compiled ``key_answer`` has read the clock)."""
        view = self._view
        if view is None or now >= view.valid_until:
            view = self._view = self._build_view(now)
        live = self._live.get(qtype)
        if not live:
            return self._unanswerable(qtype)
        self.seq += 1
        accounting = self.accounting
        if accounting is None:  # pragma: no cover - keyed farms are always accounted
            raise RuntimeError(f"farm {self.name} is keyed but has no accounting")
        key_sticky = self._key_sticky
        sticky = key_sticky.get(key)
        if sticky is not None and sticky[2] != qtype and now - sticky[0] < accounting.window / 4:
            # The other address family of the same key a moment ago: the same host, not charged
            # again (its charge may have lifted it over the bound).
            names = sticky[1]
            if self._answerable(names, qtype):
                self._answered(names, now)
                self._last = (now, client, qtype, 0.0, (), names, "sticky", key, self.spec.ttl)
                return names
        position = self._key_positions.get(key)
        if position is None:
            position = self.key_position(key)
        herd, direct = accounting.arrival(client, now)
        spec = self.spec
        chosen = self.policy(
            live,
            _new_ask(
                (
                    spec.answers,
                    self.seq,
                    self.rng,
                    herd * self._herd_unit,
                    1,
                    position,
                    self.ring,
                    spec.balance_factor,
                    self._positions[qtype],
                )
            ),
        )
        before = tuple(live)  # the loads before this answer's charge, for explain
        # A direct asker's connections come at once, as least-load charges them; a caching
        # resolver's over the cache time of the answer.
        cache_time = 0.0 if direct else accounting.window
        if len(chosen) == 1:
            self._charge_one(accounting, chosen[0], herd, now, cache_time)
            names = (chosen[0][0],)
        else:
            self._charge(accounting, chosen, herd, now, cache_time)
            names = _names(chosen)
        self._answered(names, now)
        if not direct:
            accounting.answered()
        if len(key_sticky) >= STICKY_LIMIT:
            key_sticky.clear()
        key_sticky[key] = (now, names, qtype)
        how = "fail-open" if self._failing_open.get(qtype) else "key"
        # (a keyed answer's TTL is the farm's whatever the herd: only a direct asker is named)
        asker = "direct" if direct else ""
        self._last = (now, client, qtype, herd, before, names, how, key, spec.ttl, asker)
        return names

    def key_position(self, key: str) -> int:
        """``key``'s position on the ring (remembered: a key is hashed once)."""
        position = self._key_positions.get(key)
        if position is None:
            if len(self._key_positions) >= KEY_LIMIT:
                self._key_positions.clear()
            position = self._key_positions[key] = key_hash(key)
        return position

    def assign(self, key: str | None, client: str = "") -> Assignment | str:
        """One host for one new connection (the assignment API), charged exactly one
        connection: the key's host for a keyed farm given a key, else the farm's policy.
        Returns SERVFAIL (no host can be named) or NODATA (none of either address family)."""
        now = self.clock()
        view = self._view
        if view is None or now >= view.valid_until:
            view = self._view = self._build_view(now)
        live = list(self._live.get(QTYPE.A, ()))
        listed = {c[0] for c in live}
        live.extend(c for c in self._live.get(QTYPE.AAAA, ()) if c[0] not in listed)
        if not live:
            return SERVFAIL if self.spec.all_unhealthy == "servfail" else NODATA
        self.seq += 1
        unit = self._herd_unit if self.accounting is not None else 1.0
        position = self.key_position(key) if key and self.spec.keyed else -1
        ask = Ask(1, self.seq, self.rng, unit, 1, position, self.ring, self.spec.balance_factor)
        chosen = tuple(self.policy(live, ask))[:1]
        names = _names(chosen)
        if self.accounting is not None:
            self._charge(self.accounting, chosen, 1.0, now, self.accounting.window)  # one client
            self.accounting.answered()
        self._answered(names, now)
        self._last = (now, client, 0, 1.0, tuple(live), names, "assign", key)
        last = self.last
        return Assignment(names[0], "key" if position >= 0 else "policy", last)

    def _charge(
        self,
        accounting: Accounting,
        chosen: Sequence[Candidate],
        herd: float,
        now: float,
        cache_time: float,
    ) -> None:
        """Charge ``herd`` over the chosen hosts: arriving over ``cache_time``, or at once when
        it is 0 (a direct asker).

        A herd split over several records is charged in full to the first record and by its
        share to each other one: resolvers that shuffle the records spread it, but clients that
        use the first record behind resolvers that keep the order bring all of it to the
        first. Which of the two a resolver does is not seen, and the next report corrects the
        charge that was too high; one too low would send the next answers after it."""
        share = herd / len(chosen)
        for i, candidate in enumerate(chosen):
            self._charge_one(accounting, candidate, share if i else herd, now, cache_time)

    def _charge_one(
        self,
        accounting: Accounting,
        candidate: Candidate,
        herd: float,
        now: float,
        cache_time: float,
    ) -> None:
        """Charge ``herd`` to one host (``_charge`` of one record: most answers)."""
        name = candidate[0]
        ledger = accounting.ledgers.get(name) or accounting.ledger(name)
        if cache_time:
            accounting.charge(ledger, herd, now, name, cache_time)
        else:
            accounting.charge_direct(ledger, herd, now)
        step = herd * ledger.unit / candidate[1]
        for live, j in self._slots.get(name, ()):  # _lift, inline: once per answer
            old = live[j]
            live[j] = (name, old[1], old[2] + step)

    def _lift(self, name: str, step: float) -> None:
        """Add ``step`` to the live load of host ``name`` wherever it is a candidate."""
        for live, i in self._slots.get(name, ()):
            old = live[i]
            live[i] = (old[0], old[1], old[2] + step)

    # -- other servers' answers (the shared store's exchange) -------------------------------

    def take_accounting(self) -> dict[str, Any] | None:
        """This server's charges, answer count and resolver query times since the last call,
        for the other servers (None when there is nothing to tell or nothing is accounted).
        The first call starts the collection."""
        if self.accounting is None:
            return None
        outbox = self.accounting.take_outbox()
        return outbox.to_json() if outbox is not None else None

    def add_peer_accounting(self, data: Mapping[str, Any]) -> None:
        """What another server's ``take_accounting`` returned: its answers' herds are charged
        to the hosts they named (each herd counted once, by the server that answered), and the
        query times it saw refine the resolvers' herd estimates here."""
        accounting = self.accounting
        if accounting is None:
            return
        accounting.answers += int(data.get("answers", 0))
        accounting.peer_queries(data.get("queries", ()))
        for name, charge in data.get("charges", {}).items():
            host = self.hosts.get(name)
            herd, at = charge[0], charge[1]
            if host is None or herd <= 0.0:
                continue
            cache_time = float(charge[2]) if len(charge) > 2 else 0.0  # older servers: none
            ledger = accounting.ledger(name)
            pending = accounting.charge_peer(ledger, float(herd), float(at), cache_time)
            self._lift(name, pending * ledger.unit / host.spec.capacity)

    def _answerable(self, names: tuple[str, ...], qtype: int) -> bool:
        """Whether every host of a sticky answer can still be answered for ``qtype``."""
        positions = self._positions[qtype]
        for name in names:  # noqa: SIM110 - not all() over a generator: a query path
            if name not in positions:
                return False
        return True

    def _answered(self, names: tuple[str, ...], now: float) -> None:
        # Plain counters the metrics, the status page and the drain read.
        hosts = self.hosts
        for name in names:
            host = hosts.get(name)
            if host is not None:
                host.answers += 1
                host.last_answered = now

    def _unanswerable(self, qtype: int) -> str:
        mode = self.spec.all_unhealthy
        if mode == "sorry":
            sorry = self.spec.sorry_a if qtype == QTYPE.A else self.spec.sorry_aaaa
            return SORRY if sorry else NODATA
        if mode == "servfail":
            return SERVFAIL
        return NODATA  # nodata, or fail-open with no host of this address family left

    # -- the view (rebuilt on change, not per query) ----------------------------------------

    def _build_view(self, now: float) -> FarmView:
        spec = self.spec
        if spec.keyed:
            ring_hosts = tuple(sorted((h.name, h.spec.capacity) for h in self.hosts.values()))
            if ring_hosts != self._ring_hosts:
                self.ring = Ring.build(ring_hosts)
                self._ring_hosts = ring_hosts
        states: dict[str, str] = {}
        reasons: dict[str, str | None] = {}
        scores: dict[str, float] = {}
        candidates: dict[int, list[Candidate]] = {q: [] for q in _QTYPES}
        tiers: dict[int, dict[str, list[Candidate]]] = {
            q: {STALE: [], NEW: [], DOWN: []} for q in _QTYPES
        }
        valid_until = now + 3600.0
        reported = [h.report.received for h in self.hosts.values() if h.report is not None]
        if reported and self.first_report is None:
            self.first_report = min(reported)
        warm_until = None
        if self.first_report is not None:
            intervals = [h.report.interval for h in self.hosts.values() if h.report is not None]
            warm_until = self.first_report + spec.stale_after * max(intervals or [1.0])
        warming = warm_until is not None and now < warm_until
        if warming:
            valid_until = min(valid_until, warm_until)
        accounting = self.accounting
        fresh: list[Ledger] = []
        up_scores = []
        up_capacity = up_load = 0.0
        for host in self.hosts.values():
            state, reasons[host.name] = self.state_and_reason(host, now)
            states[host.name] = state
            value = score(host.report, spec.score, host.spec.capacity)
            scores[host.name] = value
            report = host.report
            reported_fresh = False
            if report is not None:
                deadline = report.received + spec.stale_after * report.interval
                if deadline > now:
                    valid_until = min(valid_until, deadline)
                    reported_fresh = True
            if state == UP and report is not None:
                up_scores.append(value)
                up_capacity += host.spec.capacity
                up_load += value * host.spec.capacity
            if accounting is not None:
                ledger = accounting.ledger(host.name)
                if state in (UP, DOWN) and reported_fresh:
                    fresh.append(ledger)
        if accounting is not None:
            self._take_reports(accounting, fresh, now)
            self._settle(accounting, now)
        new_load = sum(up_scores) / len(up_scores) if up_scores else 0.0
        units = []
        for host in self.hosts.values():
            state = states[host.name]
            if state in (DRAINING, DISABLED):
                continue
            value = scores[host.name]
            if state == NEW and warming:
                value, state = new_load, UP
            elif state == UP and host.report is None:
                # Up on its probes alone (no agent): at the mean load of the hosts that report,
                # or 0 when none does (then the accounting spreads answers by capacity).
                value = new_load
            if accounting is not None:
                ledger = accounting.ledgers[host.name]
                value += ledger.pending * ledger.unit / host.spec.capacity
                units.append(ledger.unit)
            candidate = Candidate(host.name, host.spec.capacity, value)
            for qtype in _QTYPES:
                if not host.spec.addresses(qtype):
                    continue
                if state == UP:
                    candidates[qtype].append(candidate)
                elif state in tiers[qtype]:
                    tiers[qtype][state].append(candidate)
        if accounting is not None:
            for name in [n for n in accounting.ledgers if n not in self.hosts]:
                del accounting.ledgers[name]
            self._herd_unit = sum(units) / len(units) if units else 1.0
            self._budget = self._herd_budget(up_load, up_capacity)
        any_reported = bool(reported)
        fallback: dict[int, tuple[Candidate, ...]] = {}
        for qtype, tier in tiers.items():
            # No host has ever reported (a fresh start or no agents): the never-reported hosts
            # rather than nothing. Otherwise the least-bad tier: stale hosts (last known load)
            # before never-reported ones before hosts reported down.
            order = (NEW, STALE, DOWN) if not any_reported else (STALE, NEW, DOWN)
            for state in order:
                if tier[state]:
                    fallback[qtype] = tuple(sorted(tier[state], key=lambda c: c.load))
                    break
        self._live = {}
        self._positions = {}
        self._slots = {}
        self._failing_open = {}
        for qtype in _QTYPES:
            live = candidates[qtype]
            if not live and spec.all_unhealthy == "fail-open" and qtype in fallback:
                live = list(fallback[qtype])
                self._failing_open[qtype] = True
            self._live[qtype] = live = list(live)
            self._positions[qtype] = {c.name: i for i, c in enumerate(live)}
            for i, c in enumerate(live):
                self._slots.setdefault(c.name, []).append((live, i))
        return FarmView(
            states=states,
            scores=scores,
            candidates={q: tuple(c) for q, c in candidates.items()},
            fallback=fallback,
            valid_until=valid_until,
            built=now,
            warming=warming,
            reasons=reasons,
        )

    def _herd_budget(self, up_load: float, up_capacity: float) -> float:
        """Connections one answer may bring before its TTL is cut (see ``answer``):
        ``herd_budget`` x the reported connections per capacity unit, at least ``MIN_BUDGET``."""
        spec = self.spec
        if spec.herd_budget is None or spec.ttl <= spec.min_ttl or not up_capacity:
            return float("inf")  # no host has reported load: nothing to size herds against
        fair = up_load / up_capacity / (self._herd_unit or 1.0)
        # Per answer, not per record: a resolver that keeps the order, and clients that use the
        # first record, land a split herd on one host all the same.
        return max(spec.herd_budget * fair, MIN_BUDGET)

    def _settle(self, accounting: Accounting, now: float) -> None:
        """Let time pass on every ledger: what should have arrived longer ago than the host's
        staleness horizon no longer counts as in flight, report or not."""
        for host in self.hosts.values():
            ledger = accounting.ledgers.get(host.name)
            if ledger is None:
                continue
            report = host.report
            interval = report.interval if report is not None else 1.0
            accounting.settle(ledger, now, max(accounting.window, self.spec.stale_after * interval))

    def _take_reports(self, accounting: Accounting, fresh: list[Ledger], now: float) -> None:
        """Let each report the ledgers have not seen yet supersede what it counted."""
        weights = self.spec.score
        per_connection = weights.get("connections", 0.0)
        for host in self.hosts.values():
            report = host.report
            ledger = accounting.ledgers[host.name]
            if report is None or report is ledger.report:
                continue
            connections = report.metrics.get("connections")
            unit = raw_score(report, weights) / connections if connections else per_connection
            accounting.reported(ledger, report, unit, now, fresh)

    # -- answers ----------------------------------------------------------------------------

    def addresses(self, names: Sequence[str] | str, qtype: int) -> list[str]:
        """The addresses to put in an answer for the chosen host names (or SORRY)."""
        if names == SORRY:
            return list(self.spec.sorry_a if qtype == QTYPE.A else self.spec.sorry_aaaa)
        out: list[str] = []
        for host_name in names:
            out.extend(self.hosts[host_name].spec.addresses(qtype))
        return out

    def host_owner(self, host_name: str) -> str:
        """The per-host name of a host: ``<host>.<farm>``, answered with its addresses."""
        return f"{host_name.lower()}.{self.name}"

    # -- what the explanations read (lbdns.balance.explain) ---------------------------------

    @property
    def herd_unit(self) -> float:
        """Score units one connection brings (the hosts' mean; 1 without accounting)."""
        return self._herd_unit

    @property
    def budget(self) -> float:
        """Connections one answer may bring before its TTL is cut (infinite: never cut)."""
        return self._budget

    def live_loads(self) -> dict[str, float]:
        """The load each answerable host is chosen by now, its in-flight charges included."""
        loads = {}
        for qtype in _QTYPES:
            for name, _, load in self._live.get(qtype, ()):
                loads[name] = load
        return loads

    def settle(self, now: float) -> None:
        """Let time pass on the ledgers between queries: a host that stopped reporting has its
        old charges expire too. The next query rebuilds the view when any did."""
        accounting = self.accounting
        if accounting is None:
            return
        before = [ledger.pending for ledger in accounting.ledgers.values()]
        self._settle(accounting, now)
        if before != [ledger.pending for ledger in accounting.ledgers.values()]:
            self.changed()  # the live loads follow at the next query
