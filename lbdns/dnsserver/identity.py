"""Identity queries in class CH (as NSD's ``identity`` and ``hide-version``): TXT answers to
``id.server`` and ``hostname.bind`` (RFC 4892) naming this server, and to ``version.bind`` and
``version.server`` naming its software. Off unless the config says ``identity: {enabled:
true}``; then ``hide_version: true`` refuses the version names. Anything else in class CH is
REFUSED, as when off.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from importlib import metadata

ID_NAMES = ("id.server", "hostname.bind")
VERSION_NAMES = ("version.server", "version.bind")


@dataclass(frozen=True)
class IdentitySettings:
    """The ``identity:`` section of the config (docs/config.md)."""

    enabled: bool = False
    id: str | None = None  # what id.server and hostname.bind say; None: the host name
    hide_version: bool = False


def answers(settings: IdentitySettings) -> dict[bytes, bytes]:
    """Lowercased question name (wire form) -> the TXT RDATA that answers it."""
    if not settings.enabled:
        return {}
    server_id = settings.id or socket.gethostname()
    table = {_wire(name): _txt(server_id) for name in ID_NAMES}
    if not settings.hide_version:
        try:
            version = metadata.version("lbdns")
        except metadata.PackageNotFoundError:
            version = "unknown"
        table.update({_wire(name): _txt(f"lbdns {version}") for name in VERSION_NAMES})
    return table


def _wire(name: str) -> bytes:
    return b"".join(bytes((len(label),)) + label.encode() for label in name.split(".")) + b"\x00"


def _txt(text: str) -> bytes:
    raw = text.encode()[:255]
    return bytes((len(raw),)) + raw
