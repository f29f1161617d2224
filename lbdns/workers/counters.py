"""The DNS counters of one process as a plain mapping, and their sum over the workers."""

from __future__ import annotations

from itertools import compress
from typing import Any

from lbdns.dnsserver.rrl import CLASSES

STATS = (
    "udp_queries",
    "udp_send_errors",
    "tcp_queries",
    "tcp_connections",
    "tcp_refused",
    "tcp_refused_address",
    "tcp_refused_prefix",
    "tcp_evicted",
    "tcp_timeouts",
)


def snapshot(stats: Any, answerer: Any) -> dict[str, Any]:
    """``TransportStats`` (its latency histogram too) and the ``Answerer``'s counters now
    (JSON-ready)."""
    out: dict[str, Any] = {name: getattr(stats, name) for name in STATS}
    out["latency"] = stats.latency.counts()
    out["latency_seconds"] = stats.latency.total
    query_log = answerer.query_log
    if query_log is not None:
        out["query_log"] = {"written": query_log.written, "suppressed": query_log.suppressed}
    rrl = answerer.rrl
    if rrl is not None:
        out["rrl"] = {
            **{f"{name} dropped": rrl.dropped[i] for i, name in enumerate(CLASSES)},
            **{f"{name} slipped": rrl.slipped[i] for i, name in enumerate(CLASSES)},
            "networks": len(rrl.networks),
            "resets": rrl.resets,
        }
    if answerer.cookies is not None:
        out["cookies"] = dict(answerer.cookies.results)
    out["dropped"] = answerer.dropped
    out["errors"] = answerer.errors
    out["rcodes"] = {str(code): count for code, count in answerer.rcodes.items()}
    qtypes = answerer.qtypes
    # compress() finds the few non-zero slots at C speed (a Python loop over every slot costs
    # milliseconds); the slot numbers are the Answerer's (UDP qtype, TCP_QTYPES + TCP qtype).
    out["qtypes"] = {str(slot): qtypes[slot] for slot in compress(range(len(qtypes)), qtypes)}
    return out


def add(total: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    """``total`` with ``more`` added to it (in place; returned for chaining)."""
    for name, value in more.items():
        if isinstance(value, dict):
            into = total.setdefault(name, {})
            for key, count in value.items():
                into[key] = into.get(key, 0) + count
        else:
            total[name] = total.get(name, 0) + value
    return total


def without_gauges(counts: dict[str, Any]) -> dict[str, Any]:
    """``counts`` less what is a level now rather than a count (an exited worker's rate-limit
    table is gone; its counters stay in the totals)."""
    out = dict(counts)
    if "rrl" in out:
        out["rrl"] = {k: v for k, v in out["rrl"].items() if k != "networks"}
    return out


def queries(counts: dict[str, Any]) -> int:
    return counts.get("udp_queries", 0) + counts.get("tcp_queries", 0)
