"""Helpers of the health-check tests: a zone folder with a checked farm, and API readers."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from support import http_json

FARM = "web.probe.test."

HEAD = """\
zone: probe.test.
soa: {mname: ns1, rname: hostmaster}
ns: [ns1]
records:
  ns1: {A: 127.0.0.1}
farms:
"""


def zone_folder(tmp: Path, farm_body: str, name: str = "zones") -> Path:
    """A zone folder whose one zone has the farm ``web`` with ``farm_body`` (YAML, unindented)."""
    folder = tmp / name
    folder.mkdir(exist_ok=True)
    body = HEAD + "  web:\n" + textwrap.indent(textwrap.dedent(farm_body), "    ")
    (folder / "probe.test.yaml").write_text(body)
    return folder


def host(server: Any, name: str) -> dict[str, Any]:
    status, body = http_json(f"{server.http_url}/v1/farms/{FARM}/hosts/{name}")
    assert status == 200, body
    return body


def state(server: Any, name: str) -> tuple[str, str | None]:
    body = host(server, name)
    return body["state"], body["reason"]
