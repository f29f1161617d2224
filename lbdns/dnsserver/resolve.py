"""Authoritative resolution: from a question to the sections of an answer (RFC 1034 4.3.2).

This knows zones and farms but nothing of the wire: it returns records as dnslib objects, and
for a farm name it returns the farm itself so that the wire path can ask it for hosts on every
query. The result depends only on zone data, so the wire path caches it until the registry
changes.

Names below a farm (``_below_farm``), when the zone has no name of its own there:

1. ``<host>.<farm>``, for every host of the farm: that host's addresses with the farm's TTL,
   whatever its state, while the host exists (a static answer; removing the host changes the
   registry's version, and the name is NXDOMAIN from then on).
   A name above a dotted host name (``eu.<farm>`` of host ``web1.eu``) exists, empty: NODATA.
2. ``<key>.<farm>``, one label, for a farm keyed by label (policy consistent-hash): the farm,
   with the label as the key. A host name wins over a key of the same text.
3. Anything else: the zone's wildcard, if any, or NXDOMAIN.
"""

from __future__ import annotations

from dataclasses import dataclass

from dnslib import AAAA as AAAA_RDATA
from dnslib import QTYPE, RCODE, RR, DNSLabel
from dnslib import A as A_RDATA

from lbdns import name as dname
from lbdns.balance.farm import Farm
from lbdns.registry import Registry
from lbdns.zone.model import Zone

MAX_CNAME_CHAIN = 8
ADDRESS_TYPES = (QTYPE.A, QTYPE.AAAA)


@dataclass(frozen=True)
class Resolution:
    """The sections of an answer. ``farm`` is set when the last name is a farm to ask."""

    rcode: int
    aa: bool
    answer: tuple[RR, ...] = ()
    authority: tuple[RR, ...] = ()
    additional: tuple[RR, ...] = ()
    farm: Farm | None = None
    farm_owner: str = ""  # the owner name of the farm's records (after any CNAME)
    zone: Zone | None = None
    # A keyed farm: the key of this name ("" for the client's subnet), None for other farms.
    key: str | None = None


REFUSED = Resolution(RCODE.REFUSED, aa=False)


def resolve(registry: Registry, qname: str, qtype: int) -> Resolution:
    """Answer ``qname``/``qtype`` (class IN) from the registry's zones."""
    zone = registry.zone_of(qname)
    if zone is None:
        return REFUSED  # not ours: never recurse
    answer: list[RR] = []
    seen: set[str] = set()
    current = qname
    while True:
        rrsets = zone.rrsets.get(current)
        farm_spec = zone.farms.get(current)
        if rrsets is None and farm_spec is None and current not in zone.names:
            below = _below_farm(registry, zone, current, qtype, answer)
            if below is not None:
                return below
            rrsets = _wildcard(zone, current)
            if rrsets is None:
                # Also after a CNAME: the chain ends in a missing name, rcode NXDOMAIN.
                return _negative(zone, RCODE.NXDOMAIN, answer)
            rrsets = {t: tuple(_rename(rr, current) for rr in rrs) for t, rrs in rrsets.items()}
        rrsets = rrsets or {}
        if qtype == QTYPE.ANY:
            return _any(zone, current, rrsets, farm_spec, registry, answer)
        if farm_spec is not None and qtype in ADDRESS_TYPES:
            farm = registry.farms.get(current)
            return Resolution(
                RCODE.NOERROR,
                aa=True,
                answer=tuple(answer),
                farm=farm,
                farm_owner=current,
                zone=zone,
                key="" if farm_spec.keyed else None,
            )
        if qtype in rrsets:
            answer.extend(rrsets[qtype])
            authority, additional = _extras(zone, current, qtype)
            return Resolution(
                RCODE.NOERROR,
                aa=True,
                answer=tuple(answer),
                authority=authority,
                additional=additional,
                zone=zone,
            )
        cname = rrsets.get(QTYPE.CNAME)
        if cname and qtype != QTYPE.CNAME:
            answer.append(cname[0])
            seen.add(current)
            target = str(cname[0].rdata.label).lower()
            if target in seen or len(seen) > MAX_CNAME_CHAIN:
                return Resolution(RCODE.NOERROR, aa=True, answer=tuple(answer), zone=zone)
            target_zone = registry.zone_of(target)
            if target_zone is None:
                # Out of our zones: the resolver follows it (RFC 1034 4.3.2 step 3a).
                return Resolution(RCODE.NOERROR, aa=True, answer=tuple(answer), zone=zone)
            zone = target_zone
            current = target
            continue
        return _negative(zone, RCODE.NOERROR, answer)


def _below_farm(
    registry: Registry, zone: Zone, qname: str, qtype: int, answer: list[RR]
) -> Resolution | None:
    """The answer for a per-host name or a key label under a farm (see the module's order),
    or None when ``qname`` is neither."""
    ancestor = dname.parent(qname)
    while ancestor is not None and dname.is_subdomain(ancestor, zone.origin):
        if ancestor in zone.names:
            break  # the closest encloser
        ancestor = dname.parent(ancestor)
    else:
        return None
    farm = registry.farms.get(ancestor) if ancestor in zone.farms else None
    if farm is None:
        return None
    relative = qname[: -len(ancestor) - 1]
    suffix = "." + relative
    for host in farm.hosts.values():
        if host.name.lower() == relative:
            return _host_answer(zone, farm, host.spec, qname, qtype, answer)
    for host in farm.hosts.values():
        if host.name.lower().endswith(suffix):
            # An empty non-terminal of a dotted host name (``eu`` of ``web1.eu``): it exists.
            return _negative(zone, RCODE.NOERROR, answer)
    spec = farm.spec
    if spec.keyed and spec.key == "label" and "." not in relative:
        if qtype in ADDRESS_TYPES or qtype == QTYPE.ANY:
            return Resolution(
                RCODE.NOERROR,
                aa=True,
                answer=tuple(answer),
                farm=farm,
                farm_owner=qname,
                zone=zone,
                key=relative,
            )
        return _negative(zone, RCODE.NOERROR, answer)  # the name exists, not with this type
    return None


def _host_answer(zone: Zone, farm: Farm, host, owner: str, qtype: int, answer: list[RR]):
    if qtype == QTYPE.ANY:
        qtype = QTYPE.A if host.a else QTYPE.AAAA
    rdata = A_RDATA if qtype == QTYPE.A else AAAA_RDATA
    label = DNSLabel(dname.text_labels(owner))
    records = [
        RR(label, qtype, ttl=farm.spec.ttl, rdata=rdata(address))
        for address in host.addresses(qtype)
    ]
    if not records:
        return _negative(zone, RCODE.NOERROR, answer)
    return Resolution(RCODE.NOERROR, aa=True, answer=(*answer, *records), zone=zone)


def closest_encloser(zone: Zone, qname: str) -> str | None:
    """The longest existing ancestor of ``qname``, a name that does not exist (RFC 4592)."""
    ancestor = dname.parent(qname)
    while ancestor is not None and dname.is_subdomain(ancestor, zone.origin):
        if ancestor in zone.names:
            return ancestor
        ancestor = dname.parent(ancestor)
    return None


def wildcard_source(zone: Zone, qname: str) -> str | None:
    """The wildcard (``*.<closest encloser>``) whose records answer ``qname``, a name that does
    not exist in ``zone``; None when there is none and the answer is NXDOMAIN (RFC 4592)."""
    # Only '*.<closest encloser>' can synthesise an answer.
    encloser = closest_encloser(zone, qname)
    if encloser is None:
        return None
    source = f"*.{encloser}"
    return source if source in zone.rrsets else None


def _wildcard(zone: Zone, qname: str):
    source = wildcard_source(zone, qname)
    return None if source is None else zone.rrsets[source]


def _rename(rr: RR, owner: str) -> RR:
    # The owner comes from the question and may hold escaped octets: give dnslib exact labels.
    return RR(DNSLabel(dname.text_labels(owner)), rr.rtype, rr.rclass, rr.ttl, rr.rdata)


def _negative(zone: Zone, rcode: int, answer: list[RR]) -> Resolution:
    # RFC 2308: the SOA in the authority section, with TTL min(SOA TTL, SOA MINIMUM).
    return Resolution(
        rcode, aa=True, answer=tuple(answer), authority=(zone.negative_soa,), zone=zone
    )


def _extras(zone: Zone, owner: str, qtype: int) -> tuple[tuple[RR, ...], tuple[RR, ...]]:
    """Authority and additional sections of a positive answer: NS glue at the apex."""
    if owner != zone.origin or qtype not in (QTYPE.NS, QTYPE.SOA):
        return (), ()
    ns_rrs = zone.rrsets[zone.origin].get(QTYPE.NS, ())
    authority = ns_rrs if qtype == QTYPE.SOA else ()
    additional: list[RR] = []
    for ns in ns_rrs:
        target = str(ns.rdata.label).lower()
        if not dname.is_subdomain(target, zone.origin):
            continue
        for t in ADDRESS_TYPES:
            additional.extend(zone.rrsets.get(target, {}).get(t, ()))
    return tuple(authority), tuple(additional)


def _any(zone, owner, rrsets, farm_spec, registry, answer) -> Resolution:
    # RFC 8482: answer ANY with one RRset rather than all of them. A farm name answers its
    # addresses as for an A query; other names their first RRset in a fixed type order.
    if farm_spec is not None:
        return Resolution(
            RCODE.NOERROR,
            aa=True,
            answer=tuple(answer),
            farm=registry.farms.get(owner),
            farm_owner=owner,
            zone=zone,
            key="" if farm_spec.keyed else None,
        )
    for t in (QTYPE.A, QTYPE.AAAA, QTYPE.CNAME, QTYPE.MX, QTYPE.TXT, QTYPE.SOA, QTYPE.NS):
        if t in rrsets:
            return Resolution(RCODE.NOERROR, aa=True, answer=(*answer, *rrsets[t]), zone=zone)
    for rrs in rrsets.values():
        return Resolution(RCODE.NOERROR, aa=True, answer=(*answer, *rrs), zone=zone)
    return _negative(zone, RCODE.NOERROR, answer)
