"""Zone reloads without a restart: POST /v1/reload and SIGHUP; bad files leave the old zones."""

from __future__ import annotations

import signal

import dns.rcode
import pytest
from admin_support import addresses, client, error_of, start, write_zone
from support import wait_for


def serial(server) -> int:
    response = server.query("admin.test.", "SOA")
    return response.answer[0][0].serial


@pytest.fixture
def server(tmp_path):
    write_zone(tmp_path / "zones")
    process = start(tmp_path)
    yield process
    process.stop()


def zone_path(server):
    return server.tmp / "zones" / "admin.test.yaml"


def test_reload_over_http_good_then_bad(server):
    api = client(server)
    first = serial(server)
    unchanged = api.post("/v1/reload")
    assert unchanged["changed"] == [] and serial(server) == first
    write_zone(server.tmp / "zones", extra="www: {A: 192.0.2.99}\n  new: {A: 192.0.2.98}")
    result = api.post("/v1/reload")
    assert result["changed"] == ["admin.test."]
    assert addresses(server, "new.admin.test.") == {"192.0.2.98"}
    assert addresses(server, "www.admin.test.") == {"192.0.2.99"}
    second = serial(server)
    assert second > first and result["zones"]["admin.test."]["serial"] == second

    path = zone_path(server)
    text = path.read_text()
    path.write_text(text.replace("capacity: 2", "capacity: -2"))
    error = error_of(api.post, "/v1/reload")
    assert error.status == 422
    assert "the old zones keep serving" in str(error)
    [item] = error.body["errors"]
    assert item["file"] == str(path)
    h3_line = 1 + next(i for i, line in enumerate(text.splitlines()) if "h3:" in line)
    assert item["where"] == f"line {h3_line}: farms.app.hosts.h3.capacity"
    assert "positive number" in item["reason"]
    # The old zone still answers, with the old serial.
    assert addresses(server, "new.admin.test.") == {"192.0.2.98"}
    assert serial(server) == second
    assert "reload by loopback failed" in server.log()
    # A file that is not YAML at all.
    path.write_text("zone: [unclosed\n")
    error = error_of(api.post, "/v1/reload")
    assert error.status == 422 and "invalid YAML" in error.body["errors"][0]["reason"]
    assert server.query("www.admin.test.", "A").rcode() == dns.rcode.NOERROR


def test_reload_on_sighup(server):
    path = zone_path(server)
    first = serial(server)
    path.write_text(path.read_text().replace("192.0.2.80", "192.0.2.70"))
    server.send_signal(signal.SIGHUP)
    wait_for(lambda: addresses(server, "www.admin.test.") == {"192.0.2.70"})
    assert serial(server) > first
    path.write_text(path.read_text().replace("ns: [ns1.admin.test.]", "ns: 7"))
    server.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload failed, the old zones keep serving" in server.log())
    assert "admin.test.yaml" in server.log()
    assert addresses(server, "www.admin.test.") == {"192.0.2.70"}


def test_reload_needs_an_admin(tmp_path):
    write_zone(tmp_path / "zones")
    config = tmp_path / "lbdns.yaml"
    config.write_text(
        "tokens:\n"
        "  - {name: ops, secret: ops-secret-1, role: admin}\n"
        "  - {name: viewer, secret: viewer-secret-1, role: read}\n"
    )
    server = start(tmp_path, config=config)
    try:
        assert error_of(client(server, "viewer-secret-1").post, "/v1/reload").status == 403
        assert error_of(client(server).post, "/v1/reload").status == 401
        assert client(server, "ops-secret-1").post("/v1/reload")["changed"] == []
        assert "change by ops" in server.log()
    finally:
        server.stop()
