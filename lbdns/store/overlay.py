"""Host changes made through the API, kept apart from the zone files and applied on top of them.

How zone-file hosts and API hosts combine (docs/api.md says the same):

* a host added through the API joins its farm, whatever the zone file says;
* a host changed through the API (addresses, capacity, labels) keeps the API's values, also when
  the zone file changes, until it is removed through the API;
* a zone-file host removed through the API stays removed until its entry in the zone file
  changes (the removal remembers a digest of that entry; other edits of the file do not bring it
  back), or until it is added again through the API;
* drain, disable and enable states apply to any host and are kept until changed again; a drain
  keeps its start time, threshold and grace;
* changes for a farm that is gone from the zone files are kept for its return.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from lbdns.balance.drain import DrainOptions
from lbdns.registry import Registry
from lbdns.zone.model import HostSpec

FORMAT_VERSION = 2


def spec_digest(spec: HostSpec) -> str:
    """A digest of a zone-file host entry, to notice when the file changes it."""
    return hashlib.sha256(json.dumps(spec.to_json(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class HostChange:
    spec: HostSpec | None = None  # None: not added or changed through the API
    removed: bool = False
    removed_entry: str | None = None  # digest of the zone-file entry removed, None if none
    admin: str | None = None  # None: enabled (or as the zone file says)
    admin_since: float | None = None
    drain: DrainOptions | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_json() if self.spec else None,
            "removed": self.removed,
            "removed_entry": self.removed_entry,
            "admin": self.admin,
            "admin_since": self.admin_since,
            "drain": self.drain.to_json() if self.drain else None,
        }

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> HostChange:
        spec = data.get("spec")
        drain = data.get("drain")
        removed = bool(data.get("removed", data.get("removed_at_digest") is not None))
        return cls(
            spec=HostSpec(
                name=name,
                a=tuple(spec.get("a", ())),
                aaaa=tuple(spec.get("aaaa", ())),
                capacity=float(spec.get("capacity", 1.0)),
                labels=MappingProxyType(dict(spec.get("labels", {}))),
                source=spec.get("source", "api"),
            )
            if spec
            else None,
            removed=removed,
            removed_entry=data.get("removed_entry"),
            admin=data.get("admin"),
            admin_since=data.get("admin_since"),
            drain=DrainOptions(float(drain["threshold"]), float(drain["grace"])) if drain else None,
        )


class Overlay:
    def __init__(self) -> None:
        self.farms: dict[str, dict[str, HostChange]] = {}

    def __len__(self) -> int:
        return sum(len(hosts) for hosts in self.farms.values())

    def _change(self, farm: str, host: str) -> HostChange:
        return self.farms.setdefault(farm, {}).setdefault(host, HostChange())

    def put(self, farm: str, spec: HostSpec) -> None:
        change = self._change(farm, spec.name)
        change.spec = spec
        change.removed = False
        change.removed_entry = None

    def remove(self, farm: str, host: str, registry: Registry | None = None) -> None:
        """Forget the host; a zone-file host stays away until its entry in the file changes."""
        entry = _zone_entry(registry, farm, host) if registry is not None else None
        if entry is None:
            # Not a zone-file host: nothing would bring it back, so nothing to remember.
            self.farms.get(farm, {}).pop(host, None)
            return
        change = self._change(farm, host)
        change.spec = None
        change.admin = None
        change.admin_since = None
        change.drain = None
        change.removed = True
        change.removed_entry = spec_digest(entry)

    def set_admin(
        self, farm: str, host: str, admin: str, when: float, drain: DrainOptions | None = None
    ) -> None:
        change = self._change(farm, host)
        change.admin = None if admin == "enabled" else admin
        change.admin_since = when
        change.drain = drain if admin == "draining" else None

    def apply(self, registry: Registry) -> None:
        """Apply every change to the registry's farms (after a start or a zone reload)."""
        for farm_name, hosts in self.farms.items():
            farm = registry.farms.get(farm_name)
            if farm is None:
                continue  # the farm is gone from the zone files; keep the changes for its return
            for host_name, change in list(hosts.items()):
                if change.removed:
                    entry = _zone_entry(registry, farm_name, host_name)
                    if entry is None or spec_digest(entry) != change.removed_entry:
                        del hosts[host_name]  # the zone file changed this host: it counts again
                        continue
                    farm.hosts.pop(host_name, None)
                    continue
                if change.spec is not None:
                    registry.put_host(farm, change.spec)
                host = farm.hosts.get(host_name)
                if host is None:
                    continue
                if change.admin is not None:
                    host.admin = change.admin
                    host.drain_started = change.admin_since if change.admin == "draining" else None
                    host.drain = (
                        (change.drain or DrainOptions()) if change.admin == "draining" else None
                    )
            farm.changed()
        registry.settled()
        registry.bump()

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "farms": {
                farm: {host: change.to_json() for host, change in hosts.items()}
                for farm, hosts in self.farms.items()
                if hosts
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Overlay:
        if not isinstance(data, dict) or not isinstance(data.get("farms", {}), dict):
            raise ValueError("expected an object with a 'farms' object")
        overlay = cls()
        for farm, hosts in data.get("farms", {}).items():
            overlay.farms[farm] = {
                host: HostChange.from_json(host, change) for host, change in hosts.items()
            }
        return overlay


def _zone_entry(registry: Registry, farm: str, host: str) -> HostSpec | None:
    """The host's entry in the zone file now serving, if it has one."""
    for zone in registry.zones.values():
        spec = zone.farms.get(farm)
        if spec is not None:
            for host_spec in spec.hosts:
                if host_spec.name == host:
                    return host_spec
    return None
