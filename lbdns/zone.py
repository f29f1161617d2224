"""Zone files: YAML in, frozen ``Zone`` objects out.

A zone file holds one zone. Its shape (documented in docs/zones.md)::

    zone: example.test.
    ttl: 300
    soa: {mname: ns1, rname: hostmaster, refresh: 3600, retry: 600, expire: 1209600, minimum: 30}
    ns: [ns1, ns2]
    records:
      ns1: {A: 192.0.2.53}
      "@": {MX: "10 mail", TXT: "v=spf1 -all"}
    farms:
      chat:
        ttl: 5
        hosts:
          web1: {a: 192.0.2.10, capacity: 1}

Parsing never stops at the first problem: every error is collected with its file, path and line
so that ``lbdns check`` can print them all. Zone objects are frozen; a reload builds new ones.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from dnslib import AAAA, CAA, CNAME, MX, NS, PTR, QTYPE, RR, SOA, SRV, TXT, A

from . import name as dname
from . import yamlfile
from .errors import LbdnsError, ZoneError, ZoneErrors

STATIC_TYPES = ("A", "AAAA", "CNAME", "TXT", "MX", "SRV", "CAA", "NS", "PTR")
ALL_UNHEALTHY = ("fail-open", "nodata", "servfail", "sorry")
MAX_TTL = 2**31 - 1


@dataclass(frozen=True)
class HostSpec:
    """A host of a farm: where it is and how much it can take."""

    name: str
    a: tuple[str, ...] = ()
    aaaa: tuple[str, ...] = ()
    capacity: float = 1.0
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    source: str = "zone"  # "zone", "api" or "registered"

    def addresses(self, qtype: int) -> tuple[str, ...]:
        return self.a if qtype == QTYPE.A else self.aaaa if qtype == QTYPE.AAAA else ()

    def to_json(self) -> dict[str, Any]:
        return {
            "a": list(self.a),
            "aaaa": list(self.aaaa),
            "capacity": self.capacity,
            "labels": dict(self.labels),
            "source": self.source,
        }


@dataclass(frozen=True)
class FarmSpec:
    """A name answered from a set of hosts, as the zone file declares it."""

    name: str
    ttl: int = 5
    policy: str = "least-load"
    answers: int = 1  # records per answer (the load-aware policy may give more to split a herd)
    score: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType({"connections": 1.0})
    )
    watermark: float | None = None
    stale_after: float = 2.0  # a host is stale after this many of its report intervals
    all_unhealthy: str = "fail-open"
    cache_time: float | None = None  # how long resolvers keep an answer (None: the TTL)
    split: int = 4  # at most this many records when least-load splits a resolver's herd
    sorry_a: tuple[str, ...] = ()
    sorry_aaaa: tuple[str, ...] = ()
    hosts: tuple[HostSpec, ...] = ()


@dataclass(frozen=True)
class Zone:
    """One served zone. ``rrsets`` maps owner -> qtype -> records, all frozen."""

    origin: str
    source: str
    ttl: int
    serial: int
    soa: RR
    negative_ttl: int
    rrsets: Mapping[str, Mapping[int, tuple[RR, ...]]]
    farms: Mapping[str, FarmSpec]
    names: frozenset[str]  # every name that exists: owners, farms and empty non-terminals
    digest: str  # of the parsed content; a reload with another digest bumps the serial
    where: str = "zone"  # the 'zone' key and its line, for errors that involve several files

    @functools.cached_property
    def negative_soa(self) -> RR:
        """The SOA as negative answers carry it: TTL min(SOA TTL, MINIMUM) (RFC 2308 5)."""
        return RR(self.origin, QTYPE.SOA, ttl=self.negative_ttl, rdata=self.soa.rdata)

    @functools.cached_property
    def negative_soa_wire(self) -> bytes:
        """``negative_soa`` in wire form without its owner: type, class, TTL, RDATA."""
        rdata = self.soa.rdata
        fixed = (
            dname.to_wire(str(rdata.mname).lower())
            + dname.to_wire(str(rdata.rname).lower())
            + struct.pack("!5I", *rdata.times)
        )
        return struct.pack("!HHIH", QTYPE.SOA, 1, self.negative_ttl, len(fixed)) + fixed

    @functools.cached_property
    def origin_wire(self) -> bytes:
        return dname.to_wire(self.origin)

    @property
    def ns_names(self) -> tuple[str, ...]:
        return tuple(str(rr.rdata.label).lower() for rr in self.rrsets[self.origin][QTYPE.NS])


def load_folder(folder: Path, previous: Mapping[str, Zone] | None = None) -> dict[str, Zone]:
    """Parse every ``*.yaml``/``*.yml`` zone file in ``folder``.

    Raises ``ZoneErrors`` listing every problem in every file; nothing is returned unless all
    files are valid, so a reload swaps in all of them or none. ``previous`` (the zones serving
    now) keeps serials stable for unchanged files and increasing for changed ones.
    """
    previous_by_source = {z.source: z for z in (previous or {}).values()}
    zones: dict[str, Zone] = {}
    errors: list[LbdnsError] = []
    if not folder.is_dir():
        raise ZoneErrors([ZoneError("zones folder does not exist", source=str(folder))])
    files = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    for path in files:
        try:
            zone = load_file(path, previous=previous_by_source.get(str(path)))
        except ZoneErrors as exc:
            errors.extend(exc.errors)
            continue
        except ZoneError as exc:
            errors.append(exc)
            continue
        if zone.origin in zones:
            errors.append(
                ZoneError(
                    f"zone {zone.origin} is already defined in {zones[zone.origin].source}",
                    source=str(path),
                    path=zone.where,
                )
            )
            continue
        zones[zone.origin] = zone
    _check_overlaps(zones, errors)
    if errors:
        raise ZoneErrors(errors)
    return zones


def _check_overlaps(zones: dict[str, Zone], errors: list[LbdnsError]) -> None:
    # A zone inside another served zone would be a delegation, which lbdns does not do.
    for origin, zone in zones.items():
        for other in zones:
            if other != origin and dname.is_subdomain(origin, other):
                errors.append(
                    ZoneError(
                        f"zone {origin} lies inside zone {other} served from "
                        f"{zones[other].source}; delegations are not supported",
                        source=zone.source,
                        path=zone.where,
                    )
                )


def load_file(path: Path, previous: Zone | None = None) -> Zone:
    """Parse one zone file. Raises ``ZoneErrors`` listing every problem found."""
    doc = yamlfile.load(path, ZoneError)
    return ZoneParser(doc, mtime=int(path.stat().st_mtime), previous=previous).parse()


def parse_text(text: str, source: str = "<text>", mtime: int = 1) -> Zone:
    """Parse zone YAML from a string (used by tests and by the API)."""
    return ZoneParser(yamlfile.parse(text, source, ZoneError), mtime=mtime).parse()


class ZoneParser:
    """Turns a located YAML document into a ``Zone``, collecting every error on the way."""

    def __init__(self, doc: yamlfile.LocatedYaml, mtime: int, previous: Zone | None = None):
        self.doc = doc
        self.mtime = mtime
        self.previous = previous
        self.errors: list[LbdnsError] = []
        self.origin = "."

    def fail(self, where: yamlfile.Where, reason: str) -> None:
        self.errors.append(self.doc.error(ZoneError, where, reason))

    def parse(self) -> Zone:
        data = self.doc.data
        if not isinstance(data, dict):
            what = "the file is empty" if data is None else "a zone file must be a mapping"
            raise ZoneErrors(
                [self.doc.error(ZoneError, (), f"{what}: expected zone, soa, ns, records, farms")]
            )
        known = {"zone", "ttl", "soa", "ns", "records", "farms"}
        for key in data:
            if key not in known:
                self.fail((key,), f"unknown key (expected one of {', '.join(sorted(known))})")
        origin = data.get("zone")
        if origin is None:
            self.fail(("zone",), "zone is required: the zone's absolute name, like example.test.")
            raise ZoneErrors(self.errors)
        if not isinstance(origin, str) or not origin.endswith("."):
            self.fail(("zone",), "zone must be an absolute name ending with '.'")
            raise ZoneErrors(self.errors)
        try:
            self.origin = dname.absolute(origin, ".")
        except dname.NameError_ as exc:
            self.fail(("zone",), str(exc))
            raise ZoneErrors(self.errors) from None
        ttl = self.ttl(data.get("ttl", 300), ("ttl",))
        rrsets: dict[str, dict[int, list[RR]]] = {}
        soa_rr, negative_ttl = self.soa(data.get("soa"), ttl)
        self.nameservers(data.get("ns"), ttl, rrsets)
        self.records(data.get("records", {}), ttl, rrsets)
        farms = self.farms(data.get("farms", {}), rrsets)
        self.check_ns_addresses(rrsets)
        if self.errors:
            raise ZoneErrors(self.errors)
        digest = self.digest()
        serial = self.serial(data.get("soa") or {}, digest)
        soa_rr.rdata.times = (serial, *soa_rr.rdata.times[1:])
        frozen = {
            owner: MappingProxyType({t: tuple(rrs) for t, rrs in types.items()})
            for owner, types in rrsets.items()
        }
        frozen.setdefault(self.origin, MappingProxyType({}))
        frozen[self.origin] = MappingProxyType({**frozen[self.origin], QTYPE.SOA: (soa_rr,)})
        names = set()
        for owner in (*frozen, *farms):
            n: str | None = owner
            while n is not None and dname.is_subdomain(n, self.origin):
                names.add(n)
                n = dname.parent(n)
        return Zone(
            origin=self.origin,
            source=self.doc.source,
            ttl=ttl,
            serial=serial,
            soa=soa_rr,
            negative_ttl=negative_ttl,
            rrsets=MappingProxyType(frozen),
            farms=MappingProxyType(farms),
            names=frozenset(names),
            digest=digest,
            where=yamlfile.describe(("zone",), self.doc.line_of(("zone",))),
        )

    def digest(self) -> str:
        canonical = json.dumps(self.doc.data, sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def serial(self, soa: Any, digest: str) -> int:
        if isinstance(soa, dict) and "serial" in soa:
            return int(soa["serial"])
        # No explicit serial: the file's modification time, and never backwards on a reload
        # whose content changed, so secondaries and caches see every change.
        serial = self.mtime % 2**32
        if self.previous is not None:
            if self.previous.digest == digest:
                return self.previous.serial
            serial = max(serial, (self.previous.serial + 1) % 2**32)
        return serial

    # -- pieces -----------------------------------------------------------------------------

    def ttl(self, value: Any, where: yamlfile.Where) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TTL:
            self.fail(where, f"TTL must be an integer from 0 to {MAX_TTL}, got {value!r}")
            return 0
        return value

    def name(self, value: Any, where: yamlfile.Where) -> str | None:
        value = self.doc.text_of(where, value)  # ns: [no] is the name "no", not False
        if not isinstance(value, str):
            self.fail(where, f"expected a domain name, got {value!r}")
            return None
        try:
            full = dname.absolute(value, self.origin)
        except dname.NameError_ as exc:
            self.fail(where, str(exc))
            return None
        return full

    def soa(self, soa: Any, ttl: int) -> tuple[RR, int]:
        where = ("soa",)
        fields = ("mname", "rname", "serial", "refresh", "retry", "expire", "minimum")
        if not isinstance(soa, dict):
            self.fail(where, "soa is required: a mapping with mname, rname and timers")
            soa = {}
        for key in soa:
            if key not in fields:
                self.fail((*where, key), f"unknown SOA field (expected {', '.join(fields)})")
        mname = self.name(soa.get("mname", f"ns1.{self.origin}"), (*where, "mname"))
        rname = self.name(soa.get("rname", f"hostmaster.{self.origin}"), (*where, "rname"))
        defaults = {"refresh": 3600, "retry": 600, "expire": 1209600, "minimum": 30}
        timers = []
        for key, default in defaults.items():
            value = soa.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
                self.fail((*where, key), f"must be an integer from 0 to 4294967295, got {value!r}")
                value = default
            timers.append(value)
        serial = soa.get("serial", 0)
        if isinstance(serial, bool) or not isinstance(serial, int) or not 0 <= serial < 2**32:
            self.fail(
                (*where, "serial"), f"must be an integer from 0 to 4294967295, got {serial!r}"
            )
        rr = RR(
            self.origin,
            QTYPE.SOA,
            ttl=ttl,
            rdata=SOA(mname or self.origin, rname or self.origin, (0, *timers)),
        )
        # RFC 2308 section 5: negative answers live for min(SOA TTL, SOA MINIMUM).
        return rr, min(ttl, timers[3])

    def nameservers(self, ns: Any, ttl: int, rrsets: dict[str, dict[int, list[RR]]]) -> None:
        if isinstance(ns, str):
            ns = [ns]
        if not isinstance(ns, list) or not ns:
            self.fail(("ns",), "ns is required: a list of the zone's nameserver names")
            return
        for i, value in enumerate(ns):
            target = self.name(value, ("ns", i))
            if target:
                rr = RR(self.origin, QTYPE.NS, ttl=ttl, rdata=NS(target))
                rrsets.setdefault(self.origin, {}).setdefault(QTYPE.NS, []).append(rr)

    def records(self, records: Any, ttl: int, rrsets: dict[str, dict[int, list[RR]]]) -> None:
        if not isinstance(records, dict):
            self.fail(("records",), "records must be a mapping of owner name to types")
            return
        for owner_text, types in records.items():
            where = ("records", owner_text)
            owner = self.name(str(owner_text), where)
            if owner is None:
                continue
            if not dname.is_subdomain(owner, self.origin):
                self.fail(where, f"{owner} is outside the zone {self.origin}")
                continue
            if not isinstance(types, dict):
                self.fail(where, "expected a mapping of record type to value(s)")
                continue
            if not set(types) - {"ttl"}:
                self.fail(where, "no records: give at least one type, like {A: 192.0.2.1}")
                continue
            record_ttl = ttl
            for rtype, values in types.items():
                if rtype == "ttl":
                    record_ttl = self.ttl(values, (*where, "ttl"))
            for rtype, values in types.items():
                if rtype == "ttl":
                    continue
                self.rrset(owner, rtype, values, record_ttl, (*where, rtype), rrsets)
            owner_types = rrsets.get(owner, {})
            if QTYPE.CNAME not in owner_types:
                continue
            if owner == self.origin:
                self.fail((*where, "CNAME"), "the zone apex cannot be a CNAME")
            elif len(owner_types) > 1:
                self.fail(where, "a CNAME cannot stand beside other records at the same name")
            elif len(owner_types[QTYPE.CNAME]) > 1:
                self.fail((*where, "CNAME"), "a name can have only one CNAME")

    def rrset(self, owner: str, rtype: Any, values: Any, ttl: int, where, rrsets) -> None:
        if not isinstance(rtype, str) or rtype.upper() not in STATIC_TYPES:
            self.fail(where, f"unsupported record type (supported: {', '.join(STATIC_TYPES)})")
            return
        rtype = rtype.upper()
        if rtype == "NS":
            if owner == self.origin:
                self.fail(where, "put the apex NS records in the top-level 'ns' list")
            else:
                self.fail(where, "NS below the apex is a delegation; lbdns does not delegate")
            return
        items = values if isinstance(values, list) else [values]
        if not items:
            self.fail(where, "empty list of values")
            return
        for i, value in enumerate(items):
            item_where = (*where, i) if isinstance(values, list) else where
            # Record values are text: TXT "yes" or "1.10" must not come back as True or 1.1.
            value = self.doc.text_of(item_where, value)
            try:
                rdata = self.rdata(rtype, value)
            except ValueError as exc:
                self.fail(item_where, f"bad {rtype} value {value!r}: {exc}")
                continue
            rrset = rrsets.setdefault(owner, {}).setdefault(getattr(QTYPE, rtype), [])
            # Compared in presentation form: dnslib's CAA equality ignores its fields.
            if any(str(rr.rdata) == str(rdata) for rr in rrset):
                # An RRset is a set (RFC 2181 5): a repeated value is most likely a typo.
                self.fail(item_where, f"duplicate {rtype} value {value!r}")
                continue
            rrset.append(RR(owner, getattr(QTYPE, rtype), ttl=ttl, rdata=rdata))

    def rdata(self, rtype: str, value: Any):
        if rtype == "TXT":
            if not isinstance(value, (str, int, float)):
                raise ValueError("expected a string")
            raw = str(value).encode("utf-8")
            # A TXT character-string holds at most 255 octets: split long values (RFC 1035 3.3).
            return TXT([raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""])
        if not isinstance(value, str):
            raise ValueError("expected a string in presentation format")
        if rtype == "A":
            return A(str(ipaddress.IPv4Address(value)))
        if rtype == "AAAA":
            return AAAA(str(ipaddress.IPv6Address(value)))
        if rtype in ("CNAME", "PTR"):
            target = self.target(value)
            return CNAME(target) if rtype == "CNAME" else PTR(target)
        parts = value.split()
        if rtype == "MX":
            if len(parts) != 2:
                raise ValueError("expected 'preference exchange'")
            return MX(self.target(parts[1]), _u16(parts[0], "preference"))
        if rtype == "SRV":
            if len(parts) != 4:
                raise ValueError("expected 'priority weight port target'")
            prio, weight, port = (
                _u16(p, n) for p, n in zip(parts, ("priority", "weight", "port"), strict=False)
            )
            return SRV(prio, weight, port, self.target(parts[3]))
        if rtype == "CAA":
            if len(parts) < 3:
                raise ValueError("expected 'flags tag value'")
            flags = _u16(parts[0], "flags")
            if flags > 255:
                raise ValueError("flags must be 0-255")
            tag = parts[1]
            if not tag.isalnum() or len(tag) > 255:
                raise ValueError("tag must be letters and digits")
            caa_value = value.split(None, 2)[2].strip()
            if len(caa_value) >= 2 and caa_value[0] == caa_value[-1] == '"':
                caa_value = caa_value[1:-1]
            return CAA(flags, tag, caa_value)
        raise ValueError("unsupported type")  # pragma: no cover - guarded by STATIC_TYPES

    def target(self, value: str) -> str:
        try:
            return dname.absolute(value, self.origin)
        except dname.NameError_ as exc:
            raise ValueError(str(exc)) from None

    def farms(self, farms: Any, rrsets: dict[str, dict[int, list[RR]]]) -> dict[str, FarmSpec]:
        result: dict[str, FarmSpec] = {}
        if not isinstance(farms, dict):
            self.fail(("farms",), "farms must be a mapping of farm name to its settings")
            return result
        for farm_text, body in farms.items():
            where = ("farms", farm_text)
            farm_name = self.name(str(farm_text), where)
            if farm_name is None:
                continue
            if not dname.is_subdomain(farm_name, self.origin):
                self.fail(where, f"{farm_name} is outside the zone {self.origin}")
                continue
            if farm_name.startswith("*."):
                self.fail(where, "a farm name cannot be a wildcard")
                continue
            owner_types = rrsets.get(farm_name, {})
            clash = {QTYPE.A, QTYPE.AAAA, QTYPE.CNAME} & set(owner_types)
            if clash:
                names = ", ".join(QTYPE[t] for t in sorted(clash))
                self.fail(where, f"{farm_name} is a farm and also has static {names} records")
                continue
            spec = parse_farm(farm_name, body, where, self.fail)
            if spec is not None:
                result[farm_name] = spec
        return result

    def check_ns_addresses(self, rrsets: dict[str, dict[int, list[RR]]]) -> None:
        # An in-zone nameserver needs an address in the zone, or resolvers cannot reach it.
        for rr in rrsets.get(self.origin, {}).get(QTYPE.NS, []):
            target = str(rr.rdata.label).lower()
            if dname.is_subdomain(target, self.origin):
                types = rrsets.get(target, {})
                if QTYPE.A not in types and QTYPE.AAAA not in types:
                    self.fail(("ns",), f"in-zone nameserver {target} has no A or AAAA record")


def _u16(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{what} must be an integer") from None
    if not 0 <= value <= 65535:
        raise ValueError(f"{what} must be 0-65535")
    return value


Fail = Callable[[yamlfile.Where, str], None]

FARM_KEYS = {
    "ttl",
    "policy",
    "answers",
    "score",
    "watermark",
    "stale_after",
    "all_unhealthy",
    "sorry",
    "hosts",
    "cache_time",
    "split",
}


def parse_farm(farm_name: str, body: Any, where: yamlfile.Where, fail: Fail) -> FarmSpec | None:
    """Validate a farm's settings; report problems through ``fail``."""
    from .policy import POLICIES, score_weights

    if body is None:
        body = {}
    if not isinstance(body, dict):
        fail(where, "a farm must be a mapping of settings")
        return None
    for key in body:
        if key not in FARM_KEYS:
            fail(
                (*where, key),
                f"unknown farm setting (expected one of {', '.join(sorted(FARM_KEYS))})",
            )
    kwargs: dict[str, Any] = {"name": farm_name}
    ttl = body.get("ttl", 5)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= 86400:
        fail((*where, "ttl"), f"must be an integer from 0 to 86400, got {ttl!r}")
    else:
        kwargs["ttl"] = ttl
    policy = body.get("policy", FarmSpec.policy)
    if policy not in POLICIES:
        fail(
            (*where, "policy"), f"unknown policy {policy!r} (one of {', '.join(sorted(POLICIES))})"
        )
    else:
        kwargs["policy"] = policy
    answers = body.get("answers", 1)
    if isinstance(answers, bool) or not isinstance(answers, int) or not 1 <= answers <= 16:
        fail((*where, "answers"), f"must be an integer from 1 to 16, got {answers!r}")
    else:
        kwargs["answers"] = answers
    if "score" in body:
        try:
            kwargs["score"] = MappingProxyType(score_weights(body["score"]))
        except ValueError as exc:
            fail((*where, "score"), str(exc))
    watermark = body.get("watermark")
    if watermark is not None:
        if isinstance(watermark, bool) or not isinstance(watermark, (int, float)) or watermark <= 0:
            fail((*where, "watermark"), f"must be a positive number, got {watermark!r}")
        else:
            kwargs["watermark"] = float(watermark)
    stale_after = body.get("stale_after", 2.0)
    if isinstance(stale_after, bool) or not isinstance(stale_after, (int, float)):
        fail((*where, "stale_after"), f"must be a number of report intervals, got {stale_after!r}")
    elif not 1.0 <= stale_after <= 100:
        fail((*where, "stale_after"), "must be between 1 and 100 report intervals")
    else:
        kwargs["stale_after"] = float(stale_after)
    cache_time = body.get("cache_time")
    if cache_time is not None:
        if (
            isinstance(cache_time, bool)
            or not isinstance(cache_time, (int, float))
            or not 0 < cache_time <= 86400
        ):
            fail((*where, "cache_time"), f"must be seconds from 0 to 86400, got {cache_time!r}")
        else:
            kwargs["cache_time"] = float(cache_time)
    split = body.get("split", 4)
    if isinstance(split, bool) or not isinstance(split, int) or not 1 <= split <= 16:
        fail((*where, "split"), f"must be an integer from 1 to 16, got {split!r}")
    else:
        kwargs["split"] = split
    mode = body.get("all_unhealthy", "fail-open")
    if mode not in ALL_UNHEALTHY:
        fail((*where, "all_unhealthy"), f"must be one of {', '.join(ALL_UNHEALTHY)}, got {mode!r}")
    else:
        kwargs["all_unhealthy"] = mode
    sorry = body.get("sorry")
    if mode == "sorry" and not sorry:
        fail((*where, "sorry"), "all_unhealthy: sorry needs a sorry: {a: ..., aaaa: ...} address")
    if sorry is not None:
        if not isinstance(sorry, dict) or set(sorry) - {"a", "aaaa"}:
            fail((*where, "sorry"), "must be a mapping with keys a and/or aaaa")
        else:
            try:
                kwargs["sorry_a"] = _addresses(sorry.get("a"), ipaddress.IPv4Address, "a")
                kwargs["sorry_aaaa"] = _addresses(sorry.get("aaaa"), ipaddress.IPv6Address, "aaaa")
            except ValueError as exc:
                fail((*where, "sorry"), str(exc))
    hosts = body.get("hosts", {})
    if hosts is None:
        hosts = {}
    if not isinstance(hosts, dict):
        fail((*where, "hosts"), "hosts must be a mapping of host name to its settings")
        hosts = {}
    parsed = []
    for host_name, host_body in hosts.items():
        host = parse_host(str(host_name), host_body, (*where, "hosts", host_name), fail, "zone")
        if host is not None:
            parsed.append(host)
    kwargs["hosts"] = tuple(parsed)
    return FarmSpec(**kwargs)


HOST_KEYS = {"a", "aaaa", "capacity", "labels"}


def parse_host(
    host_name: str, body: Any, where: yamlfile.Where, fail: Fail, source: str
) -> HostSpec | None:
    """Validate one host's settings (zone file or API body); report problems through ``fail``."""
    ok = True
    if not check_host_name(host_name):
        fail(where, "host names are 1-63 letters, digits, '-', '_' or '.'")
        ok = False
    if not isinstance(body, dict):
        fail(where, "a host must be a mapping with a and/or aaaa and capacity")
        return None
    for key in body:
        if key not in HOST_KEYS:
            fail(
                (*where, key),
                f"unknown host setting (expected one of {', '.join(sorted(HOST_KEYS))})",
            )
            ok = False
    addresses = {}
    for key, cls in (("a", ipaddress.IPv4Address), ("aaaa", ipaddress.IPv6Address)):
        try:
            addresses[key] = _addresses(body.get(key), cls, key)
        except ValueError as exc:
            fail((*where, key), str(exc))
            ok = False
    if ok and not addresses["a"] and not addresses["aaaa"]:
        fail(where, "a host needs an a or aaaa address")
        ok = False
    capacity = body.get("capacity", 1)
    if isinstance(capacity, bool) or not isinstance(capacity, (int, float)) or not capacity > 0:
        fail((*where, "capacity"), f"must be a positive number, got {capacity!r}")
        ok = False
    labels = body.get("labels", {}) or {}
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, (str, int, float)) for k, v in labels.items()
    ):
        fail((*where, "labels"), "labels must be a mapping of strings")
        ok = False
    if not ok:
        return None
    return HostSpec(
        name=host_name,
        a=addresses["a"],
        aaaa=addresses["aaaa"],
        capacity=float(capacity),
        labels=MappingProxyType({k: str(v) for k, v in labels.items()}),
        source=source,
    )


def check_host_name(host_name: str) -> bool:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
    return 0 < len(host_name) <= 63 and set(host_name) <= allowed


def _addresses(value: Any, cls, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        try:
            out.append(str(cls(str(item))))
        except ValueError:
            family = "IPv4" if key == "a" else "IPv6"
            raise ValueError(f"{key}: {item!r} is not an {family} address") from None
    return tuple(out)
