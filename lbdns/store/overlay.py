"""Host changes made through the API, kept apart from the zone files and applied on top of them.

How zone-file hosts and API hosts combine (docs/api.md says the same):

* a host added through the API joins its farm, whatever the zone file says;
* a host changed through the API (addresses, capacity, labels) uses the API's values;
* a zone-file host removed through the API stays removed until the zone file changes
  (the removal remembers the zone's digest);
* drain, disable and enable states apply to any host and are kept until changed again.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..registry import Registry
from ..zone import HostSpec


@dataclass
class HostChange:
    spec: HostSpec | None = None  # None: not added or changed through the API
    removed_at_digest: str | None = None  # set: removed while the zone had this digest
    admin: str | None = None
    admin_since: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_json() if self.spec else None,
            "removed_at_digest": self.removed_at_digest,
            "admin": self.admin,
            "admin_since": self.admin_since,
        }

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> HostChange:
        spec = data.get("spec")
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
            removed_at_digest=data.get("removed_at_digest"),
            admin=data.get("admin"),
            admin_since=data.get("admin_since"),
        )


class Overlay:
    def __init__(self) -> None:
        self.farms: dict[str, dict[str, HostChange]] = {}
        self.digests: dict[str, str] = {}  # farm -> digest of its zone, set by apply()

    def __len__(self) -> int:
        return sum(len(hosts) for hosts in self.farms.values())

    def _change(self, farm: str, host: str) -> HostChange:
        return self.farms.setdefault(farm, {}).setdefault(host, HostChange())

    def put(self, farm: str, spec: HostSpec) -> None:
        change = self._change(farm, spec.name)
        change.spec = spec
        change.removed_at_digest = None

    def remove(self, farm: str, host: str) -> None:
        change = self._change(farm, host)
        change.spec = None
        change.admin = None
        change.removed_at_digest = self.digests.get(farm, "")

    def set_admin(self, farm: str, host: str, admin: str, when: float) -> None:
        change = self._change(farm, host)
        change.admin = None if admin == "enabled" else admin
        change.admin_since = when

    def apply(self, registry: Registry) -> None:
        """Apply every change to the registry's farms (after a start or a zone reload)."""
        for zone in registry.zones.values():
            for farm_name in zone.farms:
                self.digests[farm_name] = zone.digest
        for farm_name, hosts in self.farms.items():
            farm = registry.farms.get(farm_name)
            if farm is None:
                continue  # the farm is gone from the zone files; keep the changes for its return
            for host_name, change in list(hosts.items()):
                if change.removed_at_digest is not None:
                    if change.removed_at_digest != self.digests.get(farm_name):
                        del hosts[host_name]  # the zone file changed: its hosts count again
                        continue
                    farm.hosts.pop(host_name, None)
                    continue
                if change.spec is not None:
                    registry.put_host(farm, change.spec)
                host = farm.hosts.get(host_name)
                if host is not None and change.admin is not None:
                    host.admin = change.admin
                    host.drain_started = change.admin_since if change.admin == "draining" else None
            farm.changed()
        registry.bump()

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "farms": {
                farm: {host: change.to_json() for host, change in hosts.items()}
                for farm, hosts in self.farms.items()
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Overlay:
        overlay = cls()
        for farm, hosts in data.get("farms", {}).items():
            overlay.farms[farm] = {
                host: HostChange.from_json(host, change) for host, change in hosts.items()
            }
        return overlay
