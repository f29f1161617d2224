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
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from dnslib import QTYPE, RR

from lbdns import name as dname

STATIC_TYPES = ("A", "AAAA", "CNAME", "TXT", "MX", "SRV", "CAA", "NS", "PTR")
ALL_UNHEALTHY = ("fail-open", "nodata", "servfail", "sorry")
MAX_TTL = 2**31 - 1
CHECK_TYPES = ("tcp", "http", "https", "tls", "none")
REQUIRES = ("both", "agent", "check")


@dataclass(frozen=True)
class CheckSpec:
    """How the servers probe a host (docs/zones.md, "check"). Type ``none``: not probed."""

    type: str = "tcp"
    port: int = 0  # 0 with http/https: 80/443
    path: str = "/"
    expect_status: tuple[int, ...] = ()  # empty: any 2xx or 3xx
    expect_body: str | None = None
    host_header: str | None = None
    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 3
    quorum: int = 0  # servers that must see a failure; 0: a majority of those that probe

    @property
    def probed(self) -> bool:
        return self.type != "none"

    @property
    def target_port(self) -> int:
        if self.port:
            return self.port
        return 443 if self.type in ("https", "tls") else 80

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "port": self.target_port if self.probed else None,
            "path": self.path if self.type in ("http", "https") else None,
            "expect_status": list(self.expect_status) or None,
            "expect_body": self.expect_body,
            "host_header": self.host_header,
            "interval": self.interval,
            "timeout": self.timeout,
            "rise": self.rise,
            "fall": self.fall,
            "quorum": self.quorum or "majority",
        }


@dataclass(frozen=True)
class HostSpec:
    """A host of a farm: where it is and how much it can take."""

    name: str
    a: tuple[str, ...] = ()
    aaaa: tuple[str, ...] = ()
    capacity: float = 1.0
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    source: str = "zone"  # "zone", "api" or "registered"
    check: CheckSpec | None = None  # the zone file's per-host check (None: the farm's)

    def addresses(self, qtype: int) -> tuple[str, ...]:
        return self.a if qtype == QTYPE.A else self.aaaa if qtype == QTYPE.AAAA else ()

    def to_json(self) -> dict[str, Any]:
        out = {
            "a": list(self.a),
            "aaaa": list(self.aaaa),
            "capacity": self.capacity,
            "labels": dict(self.labels),
            "source": self.source,
        }
        if self.check is not None:
            # Only when set, so that the digests of entries without a check stay as they were.
            out["check"] = self.check.to_json()
        return out


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
    min_ttl: int = 1  # least-load: the shortest TTL a big herd's answer gets
    herd_budget: float | None = 0.03  # share of a capacity unit's load one answer may bring
    ecs_scope_v4: int | None = 24  # SCOPE PREFIX-LENGTH of ECS answers (None: ECS off, scope 0)
    ecs_scope_v6: int | None = 56
    sorry_a: tuple[str, ...] = ()
    sorry_aaaa: tuple[str, ...] = ()
    hosts: tuple[HostSpec, ...] = ()
    # Keyed farms (policy consistent-hash): what the key is, and the bound c of the ring.
    key: str = "label"  # "label" (<key>.<farm>) or "client-subnet"
    balance_factor: float = 1.25
    # The redirect form of the assignment API (GET /r/<farm>/<path>): a URL template with
    # {host}, {farm} and {path}; public: no token needed (browsers follow it).
    redirect: str | None = None
    redirect_public: bool = False
    check: CheckSpec | None = None  # probes from the servers (None: agent reports only)
    require: str = "both"  # how a probe verdict combines with the agent's report

    @property
    def keyed(self) -> bool:
        return self.policy == "consistent-hash"

    def check_of(self, host: HostSpec) -> CheckSpec | None:
        """The check that applies to ``host``: its own, else the farm's; None if not probed."""
        check = host.check if host.check is not None else self.check
        return check if check is not None and check.probed else None


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
