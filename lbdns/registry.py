"""The registry: the zones being served and the farms inside them, as one swappable whole.

``version`` changes whenever anything that answers are built from changes (a zone reload, a host
added, removed or re-addressed). The wire path keeps its precomputed answers only while
``version`` stays the same. Reports do not change ``version``: they change which host is chosen,
not the bytes of an answer that names a given host.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping

from lbdns import name as dname
from lbdns.balance.farm import Clock, Farm
from lbdns.balance.host import Host
from lbdns.zone.model import HostSpec, Zone


class Registry:
    def __init__(self, clock: Clock = time.time, rng: random.Random | None = None):
        self.clock = clock
        self.rng = rng or random.Random()
        self.compiled = True  # farms answer direct askers in C where built (``udp_compiled``)
        self.zones: Mapping[str, Zone] = {}
        self.farms: dict[str, Farm] = {}
        self.version = 0
        # (farm, host) -> the threshold and grace of a running drain, kept across reloads.
        # Hosts of the farms before the last reload, so that a host the store puts back (one
        # added through the API) keeps its report and state instead of starting as new.
        self._departed: dict[tuple[str, str], Host] = {}
        # Zone origins, longest first, for finding the zone of a name.
        self._origins: tuple[str, ...] = ()

    def load_zones(self, zones: Mapping[str, Zone]) -> None:
        """Serve ``zones`` from now on. Farms that stay keep their hosts' reports and states."""
        old_farms = self.farms
        self._departed = {
            (farm_name, host_name): host
            for farm_name, farm in old_farms.items()
            for host_name, host in farm.hosts.items()
        }
        farms: dict[str, Farm] = {}
        for zone in zones.values():
            for farm_name, spec in zone.farms.items():
                farm = Farm(spec, clock=self.clock, rng=self.rng, compiled=self.compiled)
                previous = old_farms.get(farm_name)
                if previous is not None:
                    for host_name, host in farm.hosts.items():
                        kept = previous.hosts.get(host_name)
                        if kept is not None:
                            host.keep_state_of(kept)
                    farm.seq = previous.seq
                    farm.keep_from(previous)
                farms[farm_name] = farm
        self.zones = dict(zones)
        self.farms = farms
        self._origins = tuple(sorted(self.zones, key=len, reverse=True))
        self.bump()

    def bump(self) -> None:
        self.version += 1

    def zone_of(self, qname: str) -> Zone | None:
        for origin in self._origins:
            if dname.is_subdomain(qname, origin):
                return self.zones[origin]
        return None

    def farm(self, farm_name: str) -> Farm | None:
        """The farm named ``farm_name``, with or without the trailing dot, in any case."""
        full = farm_name if farm_name.endswith(".") else farm_name + "."
        return self.farms.get(full.lower())

    def put_host(self, farm: Farm, spec: HostSpec) -> Host:
        """Add a host to a farm or replace its spec (addresses, capacity, labels)."""
        host = farm.hosts.get(spec.name)
        if host is None:
            departed = self._departed.pop((farm.name, spec.name), None)
            host = farm.hosts[spec.name] = Host(spec)
            if departed is not None:
                host.keep_state_of(departed)
        else:
            host.spec = spec
        farm.changed()
        self.bump()
        return host

    def remove_host(self, farm: Farm, host_name: str) -> None:
        farm.hosts.pop(host_name, None)
        farm.changed()
        self.bump()

    def settled(self) -> None:
        """The store has put back its hosts after a reload: forget the hosts that stayed away."""
        self._departed = {}
