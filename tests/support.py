"""Helpers for black-box tests: the process harness (``lbdns.testing.process``) and tools."""

from __future__ import annotations

import os
import shutil


def which(tool: str) -> str | None:
    return shutil.which(tool) or (
        f"/usr/sbin/{tool}" if os.path.exists(f"/usr/sbin/{tool}") else None
    )


from lbdns.testing.process import (  # noqa: E402  (the test helpers' one import point)
    EXAMPLE_ZONES,
    READY,
    ROOT,
    LbdnsProcess,
    http_json,
    http_request,
    stop_process,
    wait_for,
)

# The zone of the wire tests (auth, dig, EDNS, malformed, TCP, NSD comparison).
AUTH_ZONES = ROOT / "tests" / "zones" / "auth"

__all__ = [
    "AUTH_ZONES",
    "EXAMPLE_ZONES",
    "READY",
    "ROOT",
    "LbdnsProcess",
    "http_json",
    "http_request",
    "stop_process",
    "wait_for",
    "which",
]
