"""What a farm's state and its last answer mean, as JSON and sentences.

Read by ``GET /v1/farms/{farm}/explain`` (``farm_explanation``), its short form in CH TXT
(``lbdns.dnsserver.explain``), the status page, the admin API and ``/metrics`` (``check_brief``,
``check_detail``) and the assignment API (``answer_reason``). Nothing here is on the query path
and nothing here chooses: it reads a ``Farm`` (its view, its ledgers, its last answer) and says
what it finds. The farm does not import this module.
"""

from __future__ import annotations

from typing import Any

from dnslib import QTYPE

from lbdns.balance.farm import Farm, LastAnswer
from lbdns.balance.host import Host


def farm_explanation(farm: Farm) -> dict[str, Any]:
    """Every host's state, report age, metrics, score, in-flight load and answer share, and
    why the last answer was chosen (``GET /v1/farms/{farm}/explain``)."""
    view = farm.view()
    now = farm.clock()
    accounting = farm.accounting
    window_total = 0
    if accounting is not None:
        farm.settle(now)  # time passes for a host that stopped reporting too
        window_total = sum(ledger.window_answers for ledger in accounting.ledgers.values())
    total_answers = sum(h.answers for h in farm.hosts.values())
    hosts = []
    loads = farm.live_loads()
    for host in farm.hosts.values():
        report = host.report
        ledger = accounting.ledgers.get(host.name) if accounting is not None else None
        item: dict[str, Any] = {
            "host": host.name,
            "name": farm.host_owner(host.name),
            "state": farm.host_state(host, now),
            "capacity": host.spec.capacity,
            "report_age": round(now - report.received, 3) if report else None,
            "seq": report.seq if report else None,
            "interval": report.interval if report else None,
            "metrics": dict(report.metrics) if report else None,
            "score": round(view.scores.get(host.name, 0.0), 6),
            "in_flight": round(ledger.pending, 3) if ledger else 0.0,
            "load": round(loads[host.name], 6) if host.name in loads else None,
            "answers": host.answers,
            "share_total": round(host.answers / total_answers, 4) if total_answers else 0.0,
            "reason": view.reasons.get(host.name),
        }
        brief = check_brief(farm, host, now)
        if brief is not None:
            item["check"] = brief
        if ledger is not None:
            item["answers_recent"] = ledger.window_answers
            item["share_recent"] = (
                round(ledger.window_answers / window_total, 4) if window_total else 0.0
            )
            item["arrival_rate"] = round(ledger.rate, 3) if ledger.rate is not None else None
        hosts.append(item)
    spec = farm.spec
    out: dict[str, Any] = {
        "farm": farm.name,
        "policy": spec.policy,
        "score": dict(spec.score),
        "watermark": spec.watermark,
        "all_unhealthy": spec.all_unhealthy,
        **({"key": spec.key, "balance_factor": spec.balance_factor} if spec.keyed else {}),
        "warming_up": view.warming,
        "hosts": hosts,
        "last_answer": _last_answer(farm, now),
    }
    if accounting is not None:
        out["accounting"] = {
            "cache_time": accounting.window,
            "arrival_rate": (
                round(accounting.arrival_rate, 3) if accounting.arrival_rate is not None else None
            ),
            "mean_herd": round(accounting.mean_herd, 3),
            "resolvers": len(accounting.clients),
            "saturated_resolvers": accounting.saturated,
            "direct_askers": accounting.direct,
            "herd_budget": round(farm.budget, 3) if farm.budget != float("inf") else None,
        }
    return out


def check_brief(farm: Farm, host: Host, now: float) -> dict[str, Any] | None:
    """The servers' check verdict on a host in short (None when it is not checked)."""
    check = farm.spec.check_of(host.spec)
    if check is None:
        return None
    probe = host.probe
    votes = []
    here = None
    if probe is not None:
        here = probe.local_verdict() if probe.trackers else None
        if probe.trackers:
            votes.append(here)
        votes.extend(p.verdict for p in probe.peers.values() if p.expires > now)
    known = [v for v in votes if v is not None]
    verdict = probe.verdict(check.quorum, now) if probe is not None else None
    return {
        "type": check.type,
        "verdict": verdict or "unknown",
        "here": here or "unknown",
        "servers": len(known),
        "down": sum(1 for v in known if v == "down"),
        "quorum": check.quorum or "majority",
        "require": farm.spec.require,
    }


def check_detail(farm: Farm, host: Host, now: float) -> dict[str, Any] | None:
    """Everything about a host's checks: the settings, the verdict, this server's last
    result, latency, error and streaks per address, and every other server's."""
    brief = check_brief(farm, host, now)
    if brief is None:
        return None
    check = farm.spec.check_of(host.spec)
    assert check is not None
    probe = host.probe
    servers = {}
    if probe is not None:
        for server, peer in sorted(probe.peers.items()):
            if peer.expires > now:
                servers[server] = dict(peer.detail)
    return {
        **brief,
        "settings": check.to_json(),
        "here": probe.summary() if probe is not None else None,
        "verdict_here": brief["here"],
        "peers": servers,
    }


def answer_reason(farm: Farm, last: LastAnswer) -> str:
    """Why ``last`` named its hosts, in a sentence (explain and the assignment API)."""
    spec = farm.spec
    if last.how == "sticky":
        return "same resolver asked a moment ago: same host(s), not charged again"
    if last.how == "assign" and last.key and spec.keyed:
        return _key_reason(farm, last)
    if last.how == "assign":
        charged = "" if farm.accounting is None else "; charged one connection"
        lowest = sorted(last.candidates, key=lambda c: c.load)[:8]  # a sentence, not a table
        loads = ", ".join(f"{c.name} {c.load:.4g}" for c in lowest)
        more = ", ..." if len(last.candidates) > len(lowest) else ""
        return f"{spec.policy} over {len(last.candidates)} candidates ({loads}{more}){charged}"
    if last.how in ("key", "fail-open") and last.key is not None:
        prefix = "no host up: fail-open among the least-bad hosts; " * (last.how == "fail-open")
        return prefix + _key_reason(farm, last)
    if last.how == "fail-open":
        return f"no host up: fail-open among the least-bad hosts by {spec.policy}"
    prefix = ""
    if last.how == "watermark":
        prefix = f"only hosts below the watermark {spec.watermark:g}; "
    if farm.accounting is not None:
        k = len(last.chosen)
        projected = ", ".join(
            f"{c.name} {c.load + last.herd * farm.herd_unit / k / c.capacity:.4g}"
            for c in last.candidates
        )
        split = f", split over {k} records" if k > spec.answers else ""
        return (
            f"{prefix}lowest projected load (in-flight included) after a herd of "
            f"{last.herd:.3g}{split}: {projected}"
        )
    return f"{prefix}{spec.policy} over {len(last.candidates)} candidates"


def _last_answer(farm: Farm, now: float) -> dict[str, Any] | None:
    last = farm.last
    if last is None:
        return None
    out: dict[str, Any] = {
        "age": round(now - last.when, 3),
        "client": last.client,
        "qtype": "assign" if last.how == "assign" else QTYPE.get(last.qtype, str(last.qtype)),
        "chosen": list(last.chosen),
        "herd": round(last.herd, 3),
        "ttl": last.ttl,
        "asker": last.asker or None,
        "candidates": [
            {"host": c.name, "load": round(c.load, 6), "capacity": c.capacity}
            for c in last.candidates
        ],
    }
    if last.key is not None:
        out["key"] = last.key
    out["reason"] = answer_reason(farm, last)
    if last.how != "assign":
        out["ttl_reason"] = _ttl_reason(farm, last)
    return out


def _key_reason(farm: Farm, last: LastAnswer) -> str:
    # Replays the walk along the ring from the loads the answer was chosen from.
    spec = farm.spec
    key = last.key or ""
    by_name = {c.name: c for c in last.candidates}
    herd = last.herd * farm.herd_unit
    total = sum(c.load * c.capacity for c in last.candidates)
    capacity = sum(c.capacity for c in last.candidates) or 1.0
    limit = spec.balance_factor * (total + herd) / capacity
    passed = []
    for name in farm.ring.order(farm.key_position(key)):
        if name in last.chosen:
            break
        c = by_name.get(name)
        if c is None:
            passed.append(f"{name} is not answerable")
        else:
            passed.append(f"{name} is over its bound ({c.load:.4g} > {limit:.4g})")
    chosen = ", ".join(last.chosen)
    if len(passed) > 8:
        passed = [*passed[:8], f"{len(passed) - 8} more"]
    if not passed:
        return f"key {key!r}: {chosen} holds its place on the ring"
    return (
        f"key {key!r}: {'; '.join(passed)} "
        f"(bound {spec.balance_factor:g} x mean load); next on the ring: {chosen}"
    )


def _ttl_reason(farm: Farm, last: LastAnswer) -> str:
    spec = farm.spec
    if last.how == "sticky":
        return "the TTL of the answer to the other address family"
    if last.asker == "direct":
        return (
            "the farm's ttl: this client re-asks within its TTL (it does not cache), so each "
            "answer brings its own share of the arrivals, not a herd"
        )
    if last.asker == "new":
        return (
            "a client seen for the first time (charged the mean herd): a short first TTL "
            "so that its next query tells its rate"
            if last.ttl < spec.ttl
            else "the farm's ttl: a client seen for the first time (charged the mean herd)"
        )
    if last.asker != "caching":
        return "the farm's ttl"
    if last.ttl < spec.ttl:
        floor = " (min_ttl)" if last.ttl == spec.min_ttl else ""
        return (
            f"shortened from {spec.ttl} to {last.ttl}{floor}: this resolver's herd at the "
            f"full ttl is over the herd budget of {farm.budget:.3g} connections per answer"
        )
    return f"the farm's ttl: the herd is within the budget of {farm.budget:.3g} connections"
