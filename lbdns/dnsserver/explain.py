"""The short form of a farm's explanation, as TXT records of class CH for ``_lbdns.<farm>``.

Off unless the config says ``explain_queries: true`` (otherwise class CH is REFUSED like any
other class). One record per host, then one for the last answer::

    dig @ns1 -c CH -t TXT _lbdns.chat.example.test.
    "web1 up load=0.91 score=0.87 inflight=4 age=0.4 share=0.25"
    "last A web2 herd=1 from 192.0.2.7 age=0.0 ttl=5"
    "worker 1 of 2 pid 4242"        (only with several workers: which process answered)

This is the slow path: the query is parsed and the reply packed with dnslib, once per query.
"""

from __future__ import annotations

from dnslib import CLASS, QTYPE, RCODE, RR, TXT, DNSError, DNSRecord

from lbdns.balance.explain import farm_explanation
from lbdns.registry import Registry

PREFIX = "_lbdns."
MAX_UDP = 1232


def explain_lines(registry: Registry, farm_name: str) -> list[str] | None:
    farm = registry.farm(farm_name)
    if farm is None:
        return None
    info = farm_explanation(farm)
    lines = []
    for host in info["hosts"]:
        load = host["load"]
        age = host["report_age"]
        lines.append(
            f"{host['host']} {host['state']}"
            f" load={'-' if load is None else f'{load:.3g}'}"
            f" score={host['score']:.3g} inflight={host['in_flight']:.3g}"
            f" age={'-' if age is None else f'{age:.1f}'}"
            f" share={host.get('share_recent', host['share_total']):.2f}" + _check_words(host)
        )
    last = info["last_answer"]
    if last is not None:
        lines.append(
            f"last {last['qtype']} {','.join(last['chosen'])} herd={last['herd']:.3g}"
            f" from {last['client']} age={last['age']:.1f} ttl={last['ttl']}"
        )
    return lines


def _check_words(host: dict) -> str:
    check = host.get("check")
    words = ""
    if host.get("reason") and host["state"] != "up":
        words += f" reason={host['reason']}"
    if check is not None:
        words += f" check={check['verdict']} down={check['down']}/{check['servers']}"
    return words


def respond(registry: Registry, data: bytes, tcp: bool, worker: str | None = None) -> bytes | None:
    """The CH TXT reply to ``data`` (asked for ``_lbdns.<farm>``), REFUSED for other names.
    ``worker`` (with several workers) names the process that answered, in a last record."""
    try:
        query = DNSRecord.parse(data)
    except (DNSError, ValueError, IndexError):
        return None
    reply = query.reply(ra=0, aa=1)
    reply.header.rd = query.header.rd
    qname = str(query.q.qname).lower()
    lines = None
    if qname.startswith(PREFIX):
        lines = explain_lines(registry, qname[len(PREFIX) :])
        if lines is not None and worker is not None:
            lines.append(worker)
    if lines is None:
        reply.header.aa = 0
        reply.header.rcode = RCODE.REFUSED
        return reply.pack()
    for line in lines:
        reply.add_answer(RR(query.q.qname, QTYPE.TXT, CLASS.CH, 0, TXT(line[:255])))
    packed = reply.pack()
    limit = 65535 if tcp else MAX_UDP
    if len(packed) > limit:
        reply.rr = []
        reply.header.tc = 1
        packed = reply.pack()
    return packed
