"""Token scopes of the admin API: admin, read, register (farms and networks), none at all."""

from __future__ import annotations

import pytest
from admin_support import FARM, addresses, client, error_of, start, write_zone

CONFIG = """\
tokens:
  - {name: ops, secret: ops-secret-1, role: admin}
  - {name: viewer, secret: viewer-secret-1, role: read}
  - {name: scaler, secret: scaler-secret-1, role: register, farms: [app.admin.test.],
     networks: [192.0.2.128/25, "2001:db8:1::/48"]}
  - {name: other-scaler, secret: other-secret-1, role: register, farms: [other.admin.test.],
     networks: [192.0.2.0/24]}
  - {name: reporter, secret: reporter-secret-1, role: report}
"""

OTHER_FARM = """
  other:
    hosts:
      o1: {a: 192.0.2.200}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("auth")
    zone = write_zone(tmp / "zones")
    zone.write_text(zone.read_text() + OTHER_FARM)
    config = tmp / "lbdns.yaml"
    config.write_text(CONFIG)
    process = start(tmp, config=config)
    yield process
    process.stop()


def test_tokens_are_required_and_checked(server):
    for token, status in ((None, 401), ("not-a-token-at-all", 401)):
        error = error_of(client(server, token).get, "/v1/farms")
        assert error.status == status
    assert "bearer token" in str(error_of(client(server).get, "/v1/farms")).lower()
    # A report token cannot use the admin API at all.
    assert error_of(client(server, "reporter-secret-1").get, "/v1/farms").status == 403


def test_read_token_reads_only(server):
    viewer = client(server, "viewer-secret-1")
    assert [f["name"] for f in viewer.get("/v1/farms")["farms"]] == [
        FARM,
        "other.admin.test.",
    ]
    assert viewer.get(f"/v1/farms/{FARM}")["name"] == FARM
    for call, args in (
        (viewer.put, (f"/v1/farms/{FARM}/hosts/h9", {"a": "192.0.2.9"})),
        (viewer.post, (f"/v1/farms/{FARM}/hosts/h1/drain",)),
        (viewer.delete, (f"/v1/farms/{FARM}/hosts/h1",)),
        (viewer.post, (f"/v1/farms/{FARM}/hosts:disable", {"selector": {"role": "web"}})),
    ):
        error = error_of(call, *args)
        assert error.status == 403 and "viewer" in str(error)
    assert {h["state"] for h in viewer.get(f"/v1/farms/{FARM}")["hosts"]} == {"new"}


def test_register_token_adds_and_removes_its_own_hosts(server):
    scaler = client(server, "scaler-secret-1")
    path = f"/v1/farms/{FARM}/hosts/auto1"
    host = scaler.put(path, {"a": "192.0.2.130", "aaaa": "2001:db8:1::130", "labels": {"az": "1"}})
    assert host["source"] == "registered"
    assert host["labels"] == {"az": "1", "source": "registered"}
    # Only its farms are visible.
    assert [f["name"] for f in scaler.get("/v1/farms")["farms"]] == [FARM]
    assert scaler.get(path)["name"] == "auto1"
    # Addresses outside its networks are refused, naming the field.
    for body, field in (
        ({"a": "192.0.2.10"}, "a"),
        ({"a": "192.0.2.131", "aaaa": "2001:db8:2::1"}, "aaaa"),
    ):
        error = error_of(scaler.put, f"/v1/farms/{FARM}/hosts/auto2", body)
        assert (error.status, error.field) == (403, field) and "outside the networks" in str(error)
    # Zone-file hosts are not its to change, drain or remove, nor are other farms.
    for call, args in (
        (scaler.put, (f"/v1/farms/{FARM}/hosts/h1", {"a": "192.0.2.140"})),
        (scaler.post, (f"/v1/farms/{FARM}/hosts/h1/drain",)),
        (scaler.delete, (f"/v1/farms/{FARM}/hosts/h1",)),
        (scaler.post, (f"/v1/farms/{FARM}/hosts:drain", {"selector": {"role": "web"}})),
        (scaler.put, ("/v1/farms/other.admin.test./hosts/x", {"a": "192.0.2.140"})),
        (scaler.post, (f"{path}/disable",)),
        (scaler.post, ("/v1/reload",)),
    ):
        assert error_of(call, *args).status == 403, args
    # Another register token cannot touch a host registered inside a farm it does not have.
    assert error_of(client(server, "other-secret-1").delete, path, force="true").status == 403
    assert "192.0.2.130" in {a for h in scaler.get(f"/v1/farms/{FARM}")["hosts"] for a in h["a"]}
    # Shutdown: drain, then remove (forced, as an agent does after its bounded wait).
    assert scaler.post(f"{path}/drain", {"grace": 0})["state"] == "draining"
    assert scaler.delete(path, force="true") == {"removed": ["auto1"], "farm": FARM}
    assert "change by scaler" in server.log() and "removed host auto1" in server.log()


def test_admin_token_changes_anything(server):
    ops = client(server, "ops-secret-1")
    ops.put(f"/v1/farms/{FARM}/hosts/h9", {"a": "192.0.2.9"})
    assert ops.get(f"/v1/farms/{FARM}/hosts/h9")["source"] == "api"
    ops.delete(f"/v1/farms/{FARM}/hosts/h9", force="true")
    assert "192.0.2.9" not in addresses(server)
    assert "change by ops" in server.log()


def test_no_tokens_means_loopback_only(tmp_path):
    # With no token configured a loopback client is admin: the change is made and logged as
    # made by "loopback". (A remote client is refused: the tests send from loopback addresses
    # only, so that half is the is_loopback table below, the function the check calls.)
    write_zone(tmp_path / "zones")
    server = start(tmp_path)
    try:
        api = client(server)
        added = api.put(f"/v1/farms/{FARM}/hosts/h9", {"a": "192.0.2.9"})
        assert added["name"] == "h9" and added["a"] == ["192.0.2.9"]
        assert api.get(f"/v1/farms/{FARM}/hosts/h9")["source"] == "api"
        assert "change by loopback" in server.log()
    finally:
        server.stop()


@pytest.mark.parametrize(
    "address, loopback",
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # an IPv4 client of a dual-stack listener
        ("192.0.2.1", False),
        ("::ffff:192.0.2.1", False),
        ("2001:db8::1", False),
        ("", False),
        (None, False),
        ("not-an-address", False),
    ],
)
def test_is_loopback(address, loopback):
    from lbdns.validate import is_loopback

    assert is_loopback(address) is loopback


def test_register_tokens_need_networks(tmp_path):
    from lbdns import config as config_module
    from lbdns.errors import ConfigErrors

    path = tmp_path / "lbdns.yaml"
    path.write_text("tokens:\n  - {name: r, secret: register-secret, role: register}\n")
    with pytest.raises(ConfigErrors) as info:
        config_module.load(path)
    assert "line 2: tokens.0.networks: a register token needs networks" in str(info.value)
