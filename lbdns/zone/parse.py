"""Zone files: YAML in, frozen ``Zone`` objects out, every error collected with file, path and line."""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from dnslib import AAAA, CAA, CNAME, MX, NS, PTR, QTYPE, RR, SOA, SRV, TXT, A

from lbdns import name as dname
from lbdns import yamlfile
from lbdns.errors import LbdnsError, ZoneError, ZoneErrors
from lbdns.zone.model import MAX_TTL, STATIC_TYPES, FarmSpec, Zone
from lbdns.zone.serials import SerialRecord
from lbdns.zone.settings import parse_farm

ZONE_SUFFIXES = (".yaml", ".yml")


def skipped_files(folder: Path) -> list[Path]:
    """Files in ``folder`` that are not read as zone files (``.YAML``, BIND ``.zone`` files,
    editor backups), hidden files aside: ``lbdns check`` and the server warn about them."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [
        p
        for p in entries
        if p.suffix not in ZONE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    ]


def load_folder(
    folder: Path,
    previous: Mapping[str, Zone] | None = None,
    remembered: Mapping[str, SerialRecord] | None = None,
) -> dict[str, Zone]:
    """Parse every ``*.yaml``/``*.yml`` zone file in ``folder``.

    Raises ``ZoneErrors`` listing every problem in every file; nothing is returned unless all
    files are valid, so a reload swaps in all of them or none. ``previous`` (the zones serving
    now) keeps serials stable for unchanged files and increasing for changed ones; at start,
    ``remembered`` (``lbdns.zone.serials``: digest and serial per file from the last run) does.
    """
    previous_by_source = {z.source: z for z in (previous or {}).values()}
    zones: dict[str, Zone] = {}
    errors: list[LbdnsError] = []
    if not folder.is_dir():
        raise ZoneErrors([ZoneError("zones folder does not exist", source=str(folder))])
    files = sorted(p for p in folder.iterdir() if p.suffix in ZONE_SUFFIXES and p.is_file())
    if not files:
        # Serving nothing would REFUSE every query: that is never what was meant.
        skipped = ", ".join(p.name for p in skipped_files(folder))
        raise ZoneErrors(
            [
                ZoneError(
                    "no zone file in the zones folder (zone files end in .yaml or .yml"
                    + (f"; skipped: {skipped})" if skipped else ")"),
                    source=str(folder),
                )
            ]
        )
    for path in files:
        try:
            earlier = previous_by_source.get(str(path)) or (remembered or {}).get(
                str(path.resolve())  # remembered by absolute path: any working directory
            )
            zone = load_file(path, previous=earlier)
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


def load_file(path: Path, previous: Zone | SerialRecord | None = None) -> Zone:
    """Parse one zone file. Raises ``ZoneErrors`` listing every problem found."""
    doc = yamlfile.load(path, ZoneError)
    return ZoneParser(doc, mtime=int(path.stat().st_mtime), previous=previous).parse()


def parse_text(text: str, source: str = "<text>", mtime: int = 1) -> Zone:
    """Parse zone YAML from a string (used by tests and by the API)."""
    return ZoneParser(yamlfile.parse(text, source, ZoneError), mtime=mtime).parse()


class ZoneParser:
    """Turns a located YAML document into a ``Zone``, collecting every error on the way."""

    def __init__(
        self,
        doc: yamlfile.LocatedYaml,
        mtime: int,
        previous: Zone | SerialRecord | None = None,
    ):
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
        if rtype in ("A", "AAAA"):
            family = ipaddress.IPv4Address if rtype == "A" else ipaddress.IPv6Address
            try:
                address = str(family(value))
            except ValueError:
                # ipaddress repeats the value ("Octet 300 (> 255) not permitted in '...'"); the
                # caller already shows it.
                raise ValueError(f"not an IPv{4 if rtype == 'A' else 6} address") from None
            return A(address) if rtype == "A" else AAAA(address)
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
            if (
                spec is not None
                and spec.keyed
                and spec.key == "label"
                and f"*.{farm_name}" in rrsets
            ):
                # Every label under a farm keyed by label is a key: the wildcard would never
                # answer.
                self.fail(where, f"*.{farm_name} cannot stand beside a farm keyed by label")
                continue
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
