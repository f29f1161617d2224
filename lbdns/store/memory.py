"""The embedded store: state in this process, host changes persisted to the data dir.

Reports are not persisted (they go stale within seconds anyway). Host changes made through the
API (added, changed, removed hosts and their admin states) are written to
``<data_dir>/hosts.json`` with an atomic replace and fsync before the API call returns, and
applied on top of the zone files at every start and reload.

The data dir is ``--data-dir`` (config ``data_dir``), else ``$LBDNS_DATA_DIR``, else ``data``
in the working directory: changes are kept unless the operator points the store elsewhere. The
server refuses to start when the data dir cannot be written, rather than accept changes it would
lose.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

from lbdns.balance.drain import DrainOptions
from lbdns.balance.farm import Farm
from lbdns.balance.host import Host, Report
from lbdns.errors import LbdnsError, Unavailable
from lbdns.registry import Registry
from lbdns.store import default_data_dir
from lbdns.store.base import Store, apply_report
from lbdns.store.overlay import Overlay
from lbdns.zone.model import HostSpec

log = logging.getLogger("lbdns.store")


class MemoryStore(Store):
    name = "memory"

    def __init__(self, registry: Registry, data_dir: Path | None):
        super().__init__(registry)
        self.data_dir = data_dir if data_dir is not None else default_data_dir()
        self.path = self.data_dir / "hosts.json"
        self.overlay = Overlay()
        self._lock = asyncio.Lock()
        self._saved: Any = self.overlay.to_json()  # what hosts.json holds

    def status(self) -> dict[str, Any]:
        return {**super().status(), "path": str(self.path), "changes": len(self.overlay)}

    async def start(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            writable = os.access(self.data_dir, os.W_OK)
        except OSError as exc:
            raise LbdnsError(
                f"cannot create the data dir: {exc.strerror} (set --data-dir)",
                source=str(self.data_dir),
            ) from None
        if not writable:
            raise LbdnsError(
                "the data dir is not writable, so host changes would be lost (set --data-dir)",
                source=str(self.data_dir),
            )
        if self.path.exists():
            try:
                self.overlay = Overlay.from_json(json.loads(self.path.read_text()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                # Refuse to start rather than silently forget hosts an operator added.
                raise LbdnsError(f"cannot read saved hosts: {exc}", source=str(self.path)) from None
            log.info("loaded %d saved host changes from %s", len(self.overlay), self.path)
        self._saved = self.overlay.to_json()
        self.zones_loaded()

    def zones_loaded(self) -> None:
        self.overlay.apply(self.registry)

    async def _save(self) -> None:
        # The snapshot is taken before any await, and the lock writes snapshots in the order of
        # the changes; the write and fsync run in a thread so DNS answers do not wait for disk.
        data: Any = self.overlay.to_json()
        async with self._lock:
            try:
                await asyncio.to_thread(self._write, data)
            except OSError as exc:
                # Not kept, so not applied: the caller gets 503 and the registry stays as it was.
                self.overlay = Overlay.from_json(self._saved)
                raise Unavailable(
                    f"cannot save host changes to {self.path}: {exc.strerror or exc}"
                ) from None
            self._saved = data

    def _write(self, data: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    async def report(self, farm: Farm, host: Host, report: Report) -> bool:
        if not apply_report(host, report):
            return False
        farm.changed()
        return True

    async def put_host(self, farm: Farm, spec: HostSpec) -> Host:
        self.overlay.put(farm.name, spec)
        await self._save()
        return self.registry.put_host(farm, spec)

    async def remove_host(self, farm: Farm, host_name: str) -> None:
        self.overlay.remove(farm.name, host_name, self.registry)
        await self._save()
        self.registry.remove_host(farm, host_name)

    async def set_admin(
        self, farm: Farm, host: Host, admin: str, when: float, drain: DrainOptions | None = None
    ) -> None:
        drain = (drain or DrainOptions()) if admin == "draining" else None
        self.overlay.set_admin(farm.name, host.name, admin, when, drain)
        await self._save()  # raises before anything below when the change cannot be kept
        host.admin = admin
        host.drain_started = when if admin == "draining" else None
        host.drain = drain
        farm.changed()
        farm.changed()
