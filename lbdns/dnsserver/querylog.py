"""The query log: one line per sampled query, saying who asked what and which host(s) we named.

Off by default. When on (config ``query_log``: the fraction of queries to log), the wire path
calls ``QueryLog`` after answering; everything here runs only for queries that are sampled, and a
token bucket (``query_log_rate`` lines per second) bounds the cost under a flood. Lines that the
bucket refuses are counted and the next line written says how many were left out.

The reason says why the answer is what it is: the farm's policy and the chosen hosts' states and
scores, or the farm's all-unhealthy mode when no host could be answered normally.

With several workers each one logs the queries it answers (with a ``worker`` field), at its
share of ``query_log_rate``, through the log handler every process writes with
(``lbdns.logs``: the main process's standard error, one write per line).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from dnslib import QTYPE, RCODE, DNSRecord

from lbdns import name as dname
from lbdns.balance.host import UP
from lbdns.dnsserver.wire import Answerer, FarmEntry

log = logging.getLogger("lbdns.query")


class QueryLog:
    """Samples and rate-limits query-log lines. Call it as ``(query, client, tcp, response)``."""

    def __init__(
        self,
        answerer: Answerer,
        fraction: float,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        worker: int | None = None,
    ):
        self.answerer = answerer
        self.worker = worker  # which process answered, with several workers
        self.fraction = fraction
        self.rate = rate
        self.burst = max(rate, 1.0)  # a second's worth of lines may go out at once
        self.tokens = self.burst
        self.clock = clock
        self.rng = rng or random.Random()
        self.last = clock()
        self.written = 0
        self.suppressed = 0  # left out by the rate limit, in total
        self._pending = 0  # left out since the last line written

    def __call__(self, query: bytes, client: str, tcp: bool, response: bytes | None) -> None:
        if self.fraction < 1.0 and self.rng.random() >= self.fraction:
            return
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1.0:
            self.suppressed += 1
            self._pending += 1
            return
        self.tokens -= 1.0
        fields = self.describe(query, client, tcp, response)
        if self._pending:
            fields["suppressed"] = self._pending
            self._pending = 0
        if self.worker is not None:
            fields["worker"] = self.worker
        self.written += 1
        log.info("query", extra={"fields": fields})

    def describe(
        self, query: bytes, client: str, tcp: bool, response: bytes | None
    ) -> dict[str, object]:
        """The fields of one line. Runs off the fast path (sampled and rate-limited)."""
        fields: dict[str, object] = {"client": client, "transport": "tcp" if tcp else "udp"}
        if response is None:
            fields["rcode"] = "DROPPED"
            return fields
        rcode = response[3] & 0xF
        fields["rcode"] = RCODE.get(rcode, str(rcode))
        try:
            record = DNSRecord.parse(response)
        except Exception:  # a response we made ourselves; should not happen, must not raise
            return fields
        if not record.questions:
            return fields
        question = record.questions[0]
        qname = str(question.qname)
        fields["qname"] = qname
        fields["qtype"] = QTYPE.get(question.qtype, str(question.qtype))
        key = dname.to_wire(qname.lower()) + question.qtype.to_bytes(2, "big")
        entry = self.answerer.cache.get(key)
        if not isinstance(entry, FarmEntry):
            fields["reason"] = "static" if rcode == RCODE.NOERROR else fields["rcode"].lower()
            return fields
        farm = entry.farm
        fields["farm"] = farm.name
        addresses = {str(rr.rdata) for rr in record.rr if rr.rtype == entry.farm_qtype}
        chosen = [
            host.name
            for host in farm.hosts.values()
            if addresses & set(host.spec.addresses(entry.farm_qtype))
        ]
        fields["hosts"] = ",".join(chosen) if chosen else "-"
        fields["reason"] = self.reason(entry, chosen, rcode, client)
        return fields

    @staticmethod
    def reason(entry: FarmEntry, chosen: list[str], rcode: int, client: str = "") -> str:
        farm = entry.farm
        view = farm.view()
        if not chosen:
            if rcode == RCODE.NOERROR and farm.spec.all_unhealthy == "sorry":
                return "no host can be answered: sorry addresses"
            return f"no host can be answered: all-unhealthy {farm.spec.all_unhealthy}"
        parts = [
            f"{n} {view.states.get(n, '?')} score {view.scores.get(n, 0.0):.3g}" for n in chosen
        ]
        # The farm remembers how it chose its last answer; it is this query's when the client
        # and the hosts match (the log runs right after the answer, on the same thread).
        last = getattr(farm, "last", None)
        if last is not None and last.client == client and set(last.chosen) == set(chosen):
            how = f"{farm.spec.policy} ({last.how})"
            if last.candidates:
                how += f" among {len(last.candidates)}"
            if last.herd:
                how += f", herd {last.herd:.3g}"
            return f"{how}: " + "; ".join(parts)
        if all(view.states.get(n) == UP for n in chosen):
            up = sum(1 for s in view.states.values() if s == UP)
            return f"{farm.spec.policy} among {up} up: " + "; ".join(parts)
        return f"no host up, {farm.spec.all_unhealthy}: " + "; ".join(parts)
