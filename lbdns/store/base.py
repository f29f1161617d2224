"""The store interface and the changes it carries.

A store applies each change to the local ``Registry`` and keeps it (memory store: on disk;
Redis store: in Redis, and tells the other servers). The registry never learns where a change
came from.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

from lbdns.balance.farm import Farm
from lbdns.balance.host import DrainOptions, Host, Report
from lbdns.registry import Registry
from lbdns.zone.model import HostSpec


class Store(abc.ABC):
    """What the HTTP API and the agents' reports write through."""

    name = "store"

    def __init__(self, registry: Registry):
        self.registry = registry

    async def start(self) -> None:
        """Load persisted state into the registry and start background work."""

    async def close(self) -> None:
        """Stop background work; flush what must be kept."""

    def healthy(self) -> bool:
        """Whether writes can be accepted now."""
        return True

    def status(self) -> dict[str, Any]:
        return {"kind": self.name, "healthy": self.healthy()}

    def zones_loaded(self) -> None:
        """The registry loaded new zones: re-apply persisted host changes on top of them."""

    def check_changed(self, farm_name: str, host_name: str) -> None:
        """This server's probes changed their verdict on a host. The memory store keeps it
        local; the Redis store tells the other servers (``lbdns.balance.check`` quorum)."""

    # -- changes ----------------------------------------------------------------------------

    @abc.abstractmethod
    async def report(self, farm: Farm, host: Host, report: Report) -> bool:
        """Apply a host's report. False if it is older than what is known (``seq``)."""

    async def reports(self, items: Sequence[tuple[Farm, Host, Report]]) -> list[bool]:
        """Apply a batch of reports (``POST /v1/reports``): one result per item, as ``report``
        would give one by one."""
        return [await self.report(farm, host, report) for farm, host, report in items]

    @abc.abstractmethod
    async def put_host(self, farm: Farm, spec: HostSpec) -> Host:
        """Add a host or change its addresses, capacity or labels."""

    @abc.abstractmethod
    async def remove_host(self, farm: Farm, host_name: str) -> None:
        """Remove a host from its farm."""

    @abc.abstractmethod
    async def set_admin(
        self, farm: Farm, host: Host, admin: str, when: float, drain: DrainOptions | None = None
    ) -> None:
        """Set a host's admin state (enabled, draining or disabled) and, for a drain, its options.

        Nothing changes anywhere (store, registry, host) unless the change was kept."""


def apply_report(host: Host, report: Report) -> bool:
    """Keep ``report`` unless an equal or newer ``seq`` is already known."""
    current = host.report
    # A restarted agent starts its sequence again from 0: accept a lower seq once the last report
    # is older than a few intervals, otherwise the host would stay stale forever.
    if (
        current is not None
        and report.seq <= current.seq
        and report.received - current.received <= 3 * max(current.interval, 0.1)
    ):
        return False
    host.report = report
    return True
