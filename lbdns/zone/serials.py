"""Zone serials kept across restarts: ``<data_dir>/zone-serials.json``.

A zone file without ``serial:`` is served with its modification time as the serial, bumped on a
reload whose content changed and kept on one whose content did not (``lbdns.zone.parse``). That
rule needs the zone serving before; at start there is none, so the server keeps the last digest
and serial of every zone file here and hands them to the parser as if they were that zone. An
unchanged file then keeps its serial across a restart even when its mtime changed (a checkout,
a copy, a config-management run that rewrote the same bytes), and a changed one never goes back.

Written after every start and successful reload, with an atomic replace. The file is advice: a
missing or unreadable one means "no previous zone", and one that cannot be written is logged
once and ignored. The format (one entry per file, by absolute path)::

    {"/etc/lbdns/zones/example.test.yaml": {"origin": "example.test.", "digest": "ab12...", "serial": 1795342609}}
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from lbdns.zone.model import Zone

log = logging.getLogger("lbdns")

FILE_NAME = "zone-serials.json"


class SerialRecord(NamedTuple):
    """What the parser needs of a previous zone to choose a serial."""

    digest: str
    serial: int


class SerialBook:
    """The file of remembered serials in one data dir."""

    def __init__(self, data_dir: Path):
        self.path = data_dir / FILE_NAME
        self._written: dict[str, dict] | None = None
        self._warned = False

    def load(self) -> dict[str, SerialRecord]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring %s: %s", self.path, exc)
            return {}
        records = {}
        if isinstance(data, dict):
            for source, entry in data.items():
                try:
                    records[source] = SerialRecord(str(entry["digest"]), int(entry["serial"]))
                except (TypeError, KeyError, ValueError):
                    continue
        return records

    def save(self, zones: Mapping[str, Zone]) -> None:
        data = {
            str(Path(z.source).resolve()): {
                "origin": z.origin,
                "digest": z.digest,
                "serial": z.serial,
            }
            for z in zones.values()
        }
        if data == self._written:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w") as out:
                json.dump(data, out, indent=1, sort_keys=True)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning(
                    "cannot keep zone serials in %s (%s): a zone file without serial: whose "
                    "modification time changes gets a new serial at the next start",
                    self.path,
                    exc.strerror or exc,
                )
            return
        self._written = data
