"""Bad zone files: each is rejected with its file, line, path inside the file and reason."""

from __future__ import annotations

import textwrap

import pytest

from lbdns.errors import ZoneErrors
from lbdns.zone.parse import load_folder

HEAD = """\
zone: bad.test.
soa: {mname: ns1, rname: hostmaster}
ns: [ns1]
records:
  ns1: {A: 192.0.2.53}
"""

# (what, file body, substring the error must contain). "line N" counts from the file's top.
CASES = [
    ("empty file", "", "the file is empty"),
    ("not a mapping", "- a\n- b\n", "line 1: (top): a zone file must be a mapping"),
    ("YAML syntax", "zone: [x\n", "invalid YAML"),
    ("duplicate key", "zone: a.test.\nzone: b.test.\n", "line 2: zone: duplicate key 'zone'"),
    ("zone missing", "ttl: 5\n", "zone is required"),
    ("zone relative", "zone: rel.test\n", "line 1: zone: zone must be an absolute name"),
    ("zone bad label", "zone: a..test.\n", "has an empty label"),
    ("unknown top key", HEAD + "colour: blue\n", "line 6: colour: unknown key"),
    ("ttl negative", HEAD + "ttl: -1\n", "line 6: ttl: TTL must be an integer"),
    ("ttl text", HEAD + "ttl: five\n", "line 6: ttl: TTL must be an integer"),
    ("soa missing", "zone: bad.test.\nns: [ns.x.test.]\n", "soa is required"),
    ("soa unknown field", HEAD.replace("hostmaster}", "hostmaster, colour: 1}"), "soa.colour"),
    ("soa timer", HEAD.replace("hostmaster}", "hostmaster, retry: -3}"), "line 2: soa.retry"),
    ("soa serial", HEAD.replace("hostmaster}", "hostmaster, serial: x}"), "soa.serial"),
    ("soa mname", HEAD.replace("mname: ns1", "mname: 'a b'"), "soa.mname"),
    ("ns missing", "zone: bad.test.\nsoa: {}\n", "ns is required"),
    ("ns empty", "zone: bad.test.\nsoa: {}\nns: []\n", "ns is required"),
    (
        "in-zone ns without address",
        "zone: bad.test.\nsoa: {}\nns: [ns1, ns.other.test.]\n",
        "line 3: ns: in-zone nameserver ns1.bad.test. has no A or AAAA record",
    ),
    (
        "records not a mapping",
        HEAD.replace("records:\n  ns1: {A: 192.0.2.53}\n", "records: [1]\n"),
        "records must be a mapping",
    ),
    ("owner not a mapping", HEAD + "  www: 192.0.2.1\n", "line 6: records.www: expected a mapping"),
    ("owner outside the zone", HEAD + "  www.other.test.: {A: 192.0.2.1}\n", "is outside the zone"),
    ("owner bad wildcard", HEAD + "  a.*: {A: 192.0.2.1}\n", "'*' is only allowed"),
    ("owner too long label", HEAD + f"  {'a' * 64}: {{A: 192.0.2.1}}\n", "longer than 63"),
    ("owner non-ascii", HEAD + "  héllo: {A: 192.0.2.1}\n", "IDNA"),
    (
        "unknown type",
        HEAD + "  www: {HINFO: x}\n",
        "line 6: records.www.HINFO: unsupported record type",
    ),
    ("bad A", HEAD + "  www: {A: 192.0.2.300}\n", "line 6: records.www.A: bad A value"),
    ("A is IPv6", HEAD + "  www: {A: '2001:db8::1'}\n", "bad A value"),
    ("bad AAAA", HEAD + "  www: {AAAA: 192.0.2.1}\n", "records.www.AAAA: bad AAAA value"),
    (
        "bad item in a list",
        HEAD + "  www:\n    A:\n      - 192.0.2.1\n      - nope\n",
        "line 9: records.www.A.1: bad A value 'nope'",
    ),
    (
        "duplicate value",
        HEAD + "  www: {A: [192.0.2.1, 192.0.2.1]}\n",
        "records.www.A.1: duplicate A value",
    ),
    ("empty list", HEAD + "  www: {A: []}\n", "empty list of values"),
    ("owner without records", HEAD + "  www: {}\n", "line 6: records.www: no records"),
    ("owner with only a ttl", HEAD + "  www: {ttl: 5}\n", "records.www: no records"),
    ("record ttl", HEAD + "  www: {A: 192.0.2.1, ttl: x}\n", "records.www.ttl: TTL must be"),
    ("MX one field", HEAD + "  '@': {MX: mail}\n", "expected 'preference exchange'"),
    ("MX preference", HEAD + "  '@': {MX: 'high mail'}\n", "preference must be an integer"),
    ("MX preference range", HEAD + "  '@': {MX: '70000 mail'}\n", "preference must be 0-65535"),
    ("SRV fields", HEAD + "  _s._tcp: {SRV: '1 2 3'}\n", "expected 'priority weight port target'"),
    ("SRV port", HEAD + "  _s._tcp: {SRV: '1 2 70000 t'}\n", "port must be 0-65535"),
    ("CAA fields", HEAD + "  '@': {CAA: '0 issue'}\n", "expected 'flags tag value'"),
    ("CAA flags", HEAD + "  '@': {CAA: '256 issue x'}\n", "flags must be 0-255"),
    ("CAA tag", HEAD + "  '@': {CAA: '0 is-sue x'}\n", "tag must be letters and digits"),
    ("PTR target", HEAD + "  p: {PTR: 'a..b'}\n", "bad PTR value"),
    ("CNAME target", HEAD + "  c: {CNAME: 'x y'}\n", "bad CNAME value"),
    ("TXT mapping", HEAD + "  t: {TXT: {a: b}}\n", "bad TXT value"),
    (
        "CNAME and other data",
        HEAD + "  c: {CNAME: ns1, TXT: x}\n",
        "line 6: records.c: a CNAME cannot stand beside",
    ),
    ("two CNAMEs", HEAD + "  c: {CNAME: [ns1, ns2]}\n", "a name can have only one CNAME"),
    ("apex CNAME", HEAD + "  '@': {CNAME: ns1}\n", "the zone apex cannot be a CNAME"),
    (
        "NS below the apex",
        HEAD + "  sub: {NS: ns.other.test.}\n",
        "line 6: records.sub.NS: NS below the apex is a delegation",
    ),
    (
        "NS at the apex in records",
        HEAD + "  '@': {NS: ns2}\n",
        "put the apex NS records in the top-level 'ns' list",
    ),
    ("farms not a mapping", HEAD + "farms: [a]\n", "farms must be a mapping"),
    (
        "farm wildcard",
        HEAD + "farms:\n  '*.f': {}\n",
        "line 7: farms.*.f: a farm name cannot be a wildcard",
    ),
    (
        "farm and static A",
        HEAD + "  f: {A: 192.0.2.1}\nfarms:\n  f: {}\n",
        "is a farm and also has static A",
    ),
    (
        "farm and CNAME",
        HEAD + "  f: {CNAME: ns1}\nfarms:\n  f: {}\n",
        "is a farm and also has static CNAME",
    ),
    ("farm outside", HEAD + "farms:\n  f.other.test.: {}\n", "is outside the zone"),
    (
        "farm unknown key",
        HEAD + "farms:\n  f:\n    colour: 1\n",
        "line 8: farms.f.colour: unknown farm setting",
    ),
    (
        "farm ttl",
        HEAD + "farms:\n  f: {ttl: 99999}\n",
        "farms.f.ttl: must be an integer from 0 to 86400",
    ),
    (
        "farm policy",
        HEAD + "farms:\n  f: {policy: best}\n",
        "farms.f.policy: unknown policy 'best'",
    ),
    ("farm answers", HEAD + "farms:\n  f: {answers: 0}\n", "farms.f.answers"),
    (
        "farm min_ttl above ttl",
        HEAD + "farms:\n  f: {ttl: 5, min_ttl: 6}\n",
        "farms.f.min_ttl: must not be above the farm's ttl (5), got 6",
    ),
    ("farm min_ttl", HEAD + "farms:\n  f: {min_ttl: -1}\n", "farms.f.min_ttl: must be an integer"),
    (
        "farm herd_budget",
        HEAD + "farms:\n  f: {herd_budget: 0}\n",
        "farms.f.herd_budget: must be a number above 0",
    ),
    ("farm ecs", HEAD + "farms:\n  f: {ecs: 24}\n", "farms.f.ecs: must be off or a mapping"),
    (
        "farm ecs scope",
        HEAD + "farms:\n  f: {ecs: {ipv4: 33}}\n",
        "farms.f.ecs.ipv4: must be a prefix length from 0 to 32, got 33",
    ),
    ("farm all_unhealthy", HEAD + "farms:\n  f: {all_unhealthy: panic}\n", "farms.f.all_unhealthy"),
    ("farm sorry missing", HEAD + "farms:\n  f: {all_unhealthy: sorry}\n", "needs a sorry"),
    (
        "host without address",
        HEAD + "farms:\n  f:\n    hosts:\n      h1: {capacity: 1}\n",
        "line 9: farms.f.hosts.h1: a host needs an a or aaaa address",
    ),
    (
        "host bad a",
        HEAD + "farms:\n  f:\n    hosts:\n      h1: {a: '::1'}\n",
        "farms.f.hosts.h1.a: '::1' is not an IPv4 address",
    ),
    (
        "host bad aaaa",
        HEAD + "farms:\n  f:\n    hosts:\n      h1: {aaaa: 1.2.3.4}\n",
        "is not an IPv6 address",
    ),
    (
        "host capacity",
        HEAD + "farms:\n  f:\n    hosts:\n      h1: {a: 192.0.2.1, capacity: 0}\n",
        "farms.f.hosts.h1.capacity: must be a positive number",
    ),
    (
        "host unknown key",
        HEAD + "farms:\n  f:\n    hosts:\n      h1: {a: 192.0.2.1, weight: 3}\n",
        "farms.f.hosts.h1.weight: unknown host setting",
    ),
    (
        "host name",
        HEAD + "farms:\n  f:\n    hosts:\n      'bad name': {a: 192.0.2.1}\n",
        "host names are 1-63",
    ),
    # Health checks: farm ``check`` and ``require``, and a host's own ``check``.
    ("check not a mapping", HEAD + "farms:\n  f: {check: 80}\n", "farms.f.check: check must be"),
    (
        "check unknown key",
        HEAD + "farms:\n  f:\n    check: {port: 80, every: 2}\n",
        "line 8: farms.f.check.every: unknown check setting",
    ),
    (
        "check type",
        HEAD + "farms:\n  f:\n    check: {type: icmp, port: 80}\n",
        "farms.f.check.type: must be one of tcp, http, https, tls, none, got 'icmp'",
    ),
    ("check tcp needs a port", HEAD + "farms:\n  f: {check: {type: tcp}}\n", "needs a port"),
    (
        "check port",
        HEAD + "farms:\n  f: {check: {port: 70000}}\n",
        "farms.f.check.port: must be an integer from 1 to 65535",
    ),
    (
        "check path on tcp",
        HEAD + "farms:\n  f: {check: {port: 80, path: /health}}\n",
        "farms.f.check.path: applies to http and https checks only",
    ),
    (
        "check path relative",
        HEAD + "farms:\n  f: {check: {type: http, path: health}}\n",
        "farms.f.check.path: must be a path starting with '/'",
    ),
    (
        "check path with a space",
        HEAD + "farms:\n  f: {check: {type: http, path: '/a b'}}\n",
        "without spaces",
    ),
    (
        "check expect_status",
        HEAD + "farms:\n  f: {check: {type: http, expect_status: 700}}\n",
        "farms.f.check.expect_status: must be an HTTP status",
    ),
    (
        "check expect_body",
        HEAD + "farms:\n  f: {check: {type: https, expect_body: ''}}\n",
        "farms.f.check.expect_body: must be text",
    ),
    (
        "check host_header injection",
        HEAD + 'farms:\n  f: {check: {type: http, host_header: "a\\r\\nX: y"}}\n',
        "farms.f.check.host_header: must be a host name",
    ),
    (
        "check interval",
        HEAD + "farms:\n  f: {check: {port: 80, interval: 0}}\n",
        "farms.f.check.interval: must be seconds from 0.05 to 3600",
    ),
    (
        "check timeout over the interval",
        HEAD + "farms:\n  f: {check: {port: 80, interval: 1, timeout: 2}}\n",
        "farms.f.check.timeout: must not exceed the interval",
    ),
    ("check rise", HEAD + "farms:\n  f: {check: {port: 80, rise: 0}}\n", "farms.f.check.rise"),
    (
        "check fall",
        HEAD + "farms:\n  f: {check: {port: 80, fall: 2.5}}\n",
        "farms.f.check.fall: must be an integer from 1 to 100",
    ),
    (
        "check quorum",
        HEAD + "farms:\n  f: {check: {port: 80, quorum: most}}\n",
        "farms.f.check.quorum: must be majority or a number of servers",
    ),
    (
        "require unknown",
        HEAD + "farms:\n  f: {require: either}\n",
        "farms.f.require: must be one of both, agent, check",
    ),
    (
        "require check without a check",
        HEAD + "farms:\n  f: {require: check}\n",
        "farms.f.require: require: check needs a check",
    ),
    (
        "host check over the farm's",
        HEAD
        + "farms:\n  f:\n    check: {type: http}\n    hosts:\n"
        + "      h1: {a: 192.0.2.1, check: {port: 0}}\n",
        "line 10: farms.f.hosts.h1.check.port: must be an integer from 1 to 65535",
    ),
    (
        "host check unknown key",
        HEAD + "farms:\n  f:\n    hosts:\n      h1: {a: 192.0.2.1, check: {prot: 1}}\n",
        "farms.f.hosts.h1.check.prot: unknown check setting",
    ),
]


@pytest.mark.parametrize("what,body,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_zone_file(tmp_path, what, body, expected):
    path = tmp_path / "bad.test.yaml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ZoneErrors) as info:
        load_folder(tmp_path)
    messages = [str(e) for e in info.value.errors]
    assert any(expected in m for m in messages), f"{what}: {expected!r} not in {messages}"
    for message in messages:
        assert message.startswith(f"{path}: "), message


def test_every_error_of_a_file_is_reported(tmp_path):
    body = HEAD + "  a: {A: nope}\n  b: {MX: x}\n  c: {FOO: 1}\nfarms:\n  f: {ttl: -1}\n"
    (tmp_path / "z.yaml").write_text(body)
    with pytest.raises(ZoneErrors) as info:
        load_folder(tmp_path)
    paths = [e.path for e in info.value.errors]
    assert paths == [
        "line 6: records.a.A",
        "line 7: records.b.MX",
        "line 8: records.c.FOO",
        "line 10: farms.f.ttl",
    ]


def test_errors_of_every_file_are_reported(tmp_path):
    (tmp_path / "one.yaml").write_text(HEAD + "  a: {A: nope}\n")
    (tmp_path / "two.yaml").write_text(HEAD.replace("bad.test.", "two.test.") + "x: 1\n")
    (tmp_path / "notes.txt").write_text("not a zone file: ignored")
    with pytest.raises(ZoneErrors) as info:
        load_folder(tmp_path)
    sources = sorted(e.source for e in info.value.errors)
    assert sources == [str(tmp_path / "one.yaml"), str(tmp_path / "two.yaml")]


def test_same_zone_in_two_files(tmp_path):
    (tmp_path / "a.yaml").write_text(HEAD)
    (tmp_path / "b.yaml").write_text(
        "# the same zone again\n" + HEAD.replace("bad.test.", "BAD.test.")
    )
    with pytest.raises(ZoneErrors) as info:
        load_folder(tmp_path)
    (error,) = info.value.errors
    assert str(error) == (
        f"{tmp_path / 'b.yaml'}: line 2: zone: zone bad.test. is already defined in "
        f"{tmp_path / 'a.yaml'}"
    )


def test_zone_inside_another_zone_is_refused(tmp_path):
    (tmp_path / "a.yaml").write_text(HEAD)
    (tmp_path / "b.yaml").write_text(HEAD.replace("zone: bad.test.", "zone: sub.bad.test."))
    with pytest.raises(ZoneErrors) as info:
        load_folder(tmp_path)
    (error,) = info.value.errors
    assert "line 1: zone: zone sub.bad.test. lies inside zone bad.test." in str(error)
    assert "delegations are not supported" in str(error)


def test_missing_folder(tmp_path):
    with pytest.raises(ZoneErrors, match="zones folder does not exist"):
        load_folder(tmp_path / "nope")


def test_good_zone_with_every_feature_loads(tmp_path):
    body = textwrap.dedent(
        """\
        zone: Good.Test.
        ttl: 60
        soa: {mname: ns1, rname: hostmaster.good.test., serial: 42, minimum: 10}
        ns: ns1
        records:
          ns1: {a: 192.0.2.1}
          "*.w": {A: 192.0.2.2}
          w: {TXT: 12}
          dup: {A: [192.0.2.1, 192.0.2.2]}
        farms:
          f:
        """
    )
    (tmp_path / "good.yml").write_text(body)
    zones = load_folder(tmp_path)
    zone = zones["good.test."]
    assert zone.serial == 42
    assert zone.negative_ttl == 10
    assert zone.ns_names == ("ns1.good.test.",)
    assert "f.good.test." in zone.farms
    assert {"*.w.good.test.", "w.good.test.", "good.test."} <= zone.names


def test_yaml_typed_words_stay_names_and_text(tmp_path):
    # YAML 1.1 reads no/on/off/yes as booleans and 1.10 as a number; in a zone they are names.
    body = textwrap.dedent(
        """\
        zone: y.test.
        soa: {}
        ns: [no]
        records:
          no: {A: 192.0.2.1, TXT: [yes, 1.10, 0x10, 12]}
          1.10: {A: 192.0.2.2}
        farms:
          on:
            hosts:
              off: {a: 192.0.2.3}
        """
    )
    (tmp_path / "y.yaml").write_text(body)
    zone = load_folder(tmp_path)["y.test."]
    assert zone.ns_names == ("no.y.test.",)
    assert "1.10.y.test." in zone.rrsets
    txt = [str(rr.rdata) for rr in zone.rrsets["no.y.test."][16]]
    assert txt == ['"yes"', '"1.10"', '"0x10"', '"12"']
    assert [h.name for h in zone.farms["on.y.test."].hosts] == ["off"]


def test_serial_from_mtime_never_goes_back(tmp_path):
    import os

    from lbdns.zone.parse import load_file

    path = tmp_path / "z.yaml"
    path.write_text(HEAD)
    os.utime(path, (1_700_000_000, 1_700_000_000))
    first = load_file(path)
    assert first.serial == 1_700_000_000
    # Unchanged content: the same serial even if the file was touched.
    os.utime(path, (1_700_000_500, 1_700_000_500))
    assert load_file(path, previous=first).serial == 1_700_000_000
    # Changed content with an older modification time: the serial still goes up.
    path.write_text(HEAD + "  www: {A: 192.0.2.9}\n")
    os.utime(path, (1_600_000_000, 1_600_000_000))
    assert load_file(path, previous=first).serial == 1_700_000_001
    # An explicit serial wins.
    path.write_text(HEAD.replace("hostmaster}", "hostmaster, serial: 7}"))
    assert load_file(path, previous=first).serial == 7


def test_check_defaults_and_host_overrides(tmp_path):
    body = HEAD + textwrap.dedent(
        """\
        farms:
          f:
            check: {type: http, path: /health, expect_status: [200, 204], interval: 0.5}
            require: check
            hosts:
              h1: {a: 192.0.2.1}
              h2: {a: 192.0.2.2, check: {port: 8080, fall: 5}}
              h3: {a: 192.0.2.3, check: false}
              h4: {a: 192.0.2.4, check: {type: tcp, port: 22}}
          g:
            check: {type: tls, port: 443}
            hosts:
              h1: {a: 192.0.2.1}
        """
    )
    (tmp_path / "bad.test.yaml").write_text(body)
    farms = load_folder(tmp_path)["bad.test."].farms
    farm = farms["f.bad.test."]
    hosts = {h.name: h for h in farm.hosts}
    h1 = farm.check_of(hosts["h1"])
    assert (h1.type, h1.target_port, h1.path, h1.expect_status) == (
        "http",
        80,
        "/health",
        (200, 204),
    )
    # HAProxy-like defaults; the timeout is at most the interval.
    assert (h1.interval, h1.timeout, h1.rise, h1.fall, h1.quorum) == (0.5, 0.5, 2, 3, 0)
    h2 = farm.check_of(hosts["h2"])
    assert (h2.type, h2.port, h2.path, h2.fall, h2.interval) == ("http", 8080, "/health", 5, 0.5)
    assert farm.check_of(hosts["h3"]) is None
    assert farm.check_of(hosts["h4"]).type == "tcp"
    assert farm.require == "check"
    tls = farms["g.bad.test."].check
    assert (tls.type, tls.port, tls.interval, tls.timeout, tls.rise, tls.fall) == (
        "tls",
        443,
        2.0,
        1.0,
        2,
        3,
    )
    assert farms["g.bad.test."].require == "both"
