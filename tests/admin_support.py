"""Shared pieces of the admin API tests: a small zone with a short TTL, and an API client."""

from __future__ import annotations

from pathlib import Path

from support import LbdnsProcess

from lbdns.cli.client import Client, ClientError

FARM = "app.admin.test."

ZONE = """\
zone: admin.test.
ttl: 60
soa: {{mname: ns1.admin.test., rname: hostmaster.admin.test.}}
ns: [ns1.admin.test.]
records:
  ns1: {{A: 192.0.2.53}}
  {extra}
farms:
  app:
    ttl: 1
    hosts:
      h1: {{a: 192.0.2.1, capacity: 1, labels: {{role: web, zone: a}}}}
      h2: {{a: 192.0.2.2, capacity: 1, labels: {{role: web, zone: b}}}}
      h3: {{a: 192.0.2.3, capacity: 2, labels: {{role: batch, zone: a}}}}
"""


def write_zone(folder: Path, extra: str = "www: {A: 192.0.2.80}") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "admin.test.yaml"
    path.write_text(ZONE.format(extra=extra))
    return path


def start(tmp: Path, **kw) -> LbdnsProcess:
    zones = tmp / "zones"
    if not zones.exists():
        write_zone(zones)
    return LbdnsProcess(tmp, zones=zones, **kw).start()


def client(server: LbdnsProcess, token: str | None = None) -> Client:
    assert server.http_url
    return Client(server.http_url, token, timeout=5)


def error_of(call, *args, **kw) -> ClientError:
    """The ClientError a call raises (the test fails if it succeeds)."""
    try:
        call(*args, **kw)
    except ClientError as exc:
        return exc
    raise AssertionError(f"{call.__name__}{args} succeeded")


def addresses(server: LbdnsProcess, name: str = FARM, rdtype: str = "A") -> set[str]:
    response = server.query(name, rdtype)
    return {rr.address for rrset in response.answer for rr in rrset}
