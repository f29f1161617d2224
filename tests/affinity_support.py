"""A zone with keyed farms, and helpers to map keys to hosts over real DNS and HTTP."""

from __future__ import annotations

import json
from pathlib import Path

from support import LbdnsProcess, http_json

ZONE = "aff.test."
CHAT = "chat.aff.test."  # keyed by label: <key>.chat.aff.test.
SUBNET = "subnet.aff.test."  # keyed by the client's subnet
PLAIN = "plain.aff.test."  # least-load, for per-host names and keyless assignments
HOSTS = [f"web{i}" for i in range(1, 9)]
ADDRESS = {f"web{i}": f"192.0.2.{i}" for i in range(1, 10)}
LOAD = 1000  # connections every host reports: one answer's charge is small beside it


def zone_text(redirect: str = "http://127.0.0.1:9/{host}/{path}", public: bool = False) -> str:
    hosts = "\n".join(f"      {h}: {{a: {ADDRESS[h]}, aaaa: '2001:db8::{h[3:]}'}}" for h in HOSTS)
    return f"""\
zone: {ZONE}
ttl: 300
soa: {{mname: ns1.{ZONE}, rname: hostmaster.{ZONE}}}
ns: [ns1.{ZONE}]
records:
  ns1: {{A: 192.0.2.53}}
  static.chat: {{TXT: "a static name under the farm"}}
farms:
  chat:
    ttl: 7
    policy: consistent-hash
    redirect: {{url: "{redirect}", public: {str(public).lower()}}}
    hosts:
{hosts}
  subnet:
    policy: consistent-hash
    key: client-subnet
    hosts:
{hosts}
  plain:
    hosts:
      p1: {{a: 192.0.2.101}}
      p2: {{a: 192.0.2.102, aaaa: '2001:db8::102'}}
"""


def zones(tmp: Path, **kw) -> Path:
    folder = tmp / "zones"
    folder.mkdir(exist_ok=True)
    (folder / "aff.test.yaml").write_text(zone_text(**kw))
    return folder


def config(tmp: Path, **values) -> Path:
    path = tmp / "lbdns.yaml"
    path.write_text(json.dumps(values))
    return path


def report(server: LbdnsProcess, farm: str, host: str, seq: int, load: float = LOAD) -> None:
    body = {
        "farm": farm,
        "host": host,
        "seq": seq,
        "interval": 60.0,  # stays fresh for the whole test
        "metrics": {"connections": load},
    }
    status, reply = http_json(server.http_url + "/v1/report", body)
    assert status == 200, reply


def report_all(server: LbdnsProcess, seq: int = 1) -> None:
    for farm in (CHAT, SUBNET):
        for host in HOSTS:
            report(server, farm, host, seq)
    for host in ("p1", "p2"):
        report(server, PLAIN, host, seq, load=0)


def addresses(response) -> list[str]:
    return sorted(rr.to_text() for rrset in response.answer for rr in rrset)


def host_of(server: LbdnsProcess, key: str, rdtype: str = "A") -> str:
    """The host a resolver is sent to for ``<key>.chat.aff.test.``."""
    response = server.query(f"{key}.{CHAT}", rdtype)
    assert response.rcode() == 0, response
    found = addresses(response)
    assert len(found) == 1, found
    if rdtype == "AAAA":
        return f"web{found[0].rsplit(':', 1)[1]}"
    return next(h for h, a in ADDRESS.items() if a == found[0])


def key_map(server: LbdnsProcess, keys: list[str]) -> dict[str, str]:
    return {key: host_of(server, key) for key in keys}
