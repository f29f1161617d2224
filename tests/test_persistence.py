"""Host changes made through the API survive a restart (the embedded store's data dir)."""

from __future__ import annotations

import json

from admin_support import FARM, addresses, client, error_of, start, write_zone


def membership(api) -> dict[str, tuple]:
    return {
        h["name"]: (tuple(h["a"]), h["capacity"], h["admin"], h["source"], h["labels"].get("role"))
        for h in api.get(f"/v1/farms/{FARM}")["hosts"]
    }


def test_changes_survive_a_restart(tmp_path):
    server = start(tmp_path)  # no --data-dir: ./data in the working directory
    api = client(server)
    api.put(f"/v1/farms/{FARM}/hosts/h4", {"a": "192.0.2.4", "labels": {"role": "web"}})
    api.put(f"/v1/farms/{FARM}/hosts/h2", {"a": "192.0.2.22", "capacity": 5})
    api.post(f"/v1/farms/{FARM}/hosts/h3/drain", {"grace": 30, "threshold": 2})
    api.delete(f"/v1/farms/{FARM}/hosts/h1", force="true")
    before = membership(api)
    drain_before = api.get(f"/v1/farms/{FARM}/hosts/h3")["drain"]
    server.stop()

    saved = json.loads((tmp_path / "data" / "hosts.json").read_text())
    assert set(saved["farms"][FARM]) == {"h1", "h2", "h3", "h4"}
    assert not (tmp_path / "data" / "hosts.tmp").exists()

    server = start(tmp_path)
    api = client(server)
    assert membership(api) == before
    assert set(before) == {"h2", "h3", "h4"} and before["h2"][:2] == (("192.0.2.22",), 5)
    drain_after = api.get(f"/v1/farms/{FARM}/hosts/h3")["drain"]
    assert drain_after["started"] == drain_before["started"]
    assert (drain_after["grace"], drain_after["threshold"]) == (30, 2)
    assert addresses(server) <= {"192.0.2.22", "192.0.2.4"}
    server.stop()


def test_removed_zone_host_returns_when_its_entry_changes(tmp_path):
    zones = tmp_path / "zones"
    write_zone(zones)
    server = start(tmp_path, extra=("--data-dir", str(tmp_path / "state")))
    api = client(server)
    api.delete(f"/v1/farms/{FARM}/hosts/h1", force="true")
    # An unrelated edit of the zone file keeps the removal...
    write_zone(zones, extra="www: {A: 192.0.2.81}")
    api.post("/v1/reload")
    assert "h1" not in membership(api)
    server.stop()
    assert (tmp_path / "state" / "hosts.json").exists()
    assert not (tmp_path / "data").exists()
    # ...also across a restart; a change of h1's own entry brings it back.
    server = start(tmp_path, extra=("--data-dir", str(tmp_path / "state")))
    api = client(server)
    assert "h1" not in membership(api)
    text = (zones / "admin.test.yaml").read_text().replace("192.0.2.1,", "192.0.2.101,")
    (zones / "admin.test.yaml").write_text(text)
    api.post("/v1/reload")
    assert membership(api)["h1"][0] == ("192.0.2.101",)
    server.stop()


def test_unreadable_saved_state_stops_the_start(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "hosts.json").write_text("{broken")
    try:
        start(tmp_path)
    except RuntimeError as exc:
        assert "hosts.json" in str(exc) and "cannot read saved hosts" in str(exc)
    else:
        raise AssertionError("lbdns started with a broken hosts.json")


def test_api_host_keeps_its_state_across_a_reload(tmp_path):
    server = start(tmp_path)
    api = client(server)
    api.put(f"/v1/farms/{FARM}/hosts/h4", {"a": "192.0.2.4"})
    api.post(f"/v1/farms/{FARM}/hosts/h4/disable")
    api.post("/v1/reload")
    host = api.get(f"/v1/farms/{FARM}/hosts/h4")
    assert host["state"] == "disabled" and host["source"] == "api"
    assert error_of(api.get, f"/v1/farms/{FARM}/hosts/h5").status == 404
    server.stop()


def test_a_change_that_cannot_be_saved_is_refused_and_not_applied(tmp_path):
    server = start(tmp_path)
    try:
        api = client(server)
        # A directory where the temporary file goes makes the write fail (even for root).
        (tmp_path / "data" / "hosts.tmp").mkdir(parents=True)
        error = error_of(api.put, f"/v1/farms/{FARM}/hosts/h4", {"a": "192.0.2.4"})
        assert error.status == 503 and "cannot save host changes" in str(error)
        assert error_of(api.get, f"/v1/farms/{FARM}/hosts/h4").status == 404
        (tmp_path / "data" / "hosts.tmp").rmdir()
        api.put(f"/v1/farms/{FARM}/hosts/h5", {"a": "192.0.2.5"})
        saved = json.loads((tmp_path / "data" / "hosts.json").read_text())
        assert set(saved["farms"][FARM]) == {"h5"}
    finally:
        server.stop()


def _soa_serial(server) -> int:
    response = server.query("admin.test.", "SOA")
    return response.answer[0][0].serial


def test_unchanged_zone_file_keeps_its_serial_across_restarts(tmp_path):
    import os

    path = write_zone(tmp_path / "zones")
    os.utime(path, (1_700_000_000, 1_700_000_000))
    server = start(tmp_path)
    assert _soa_serial(server) == 1_700_000_000
    server.stop()
    saved = json.loads((tmp_path / "data" / "zone-serials.json").read_text())
    assert [e["serial"] for e in saved.values()] == [1_700_000_000]

    # The same bytes rewritten (a checkout, a copy): a new mtime, the same serial.
    path.write_text(path.read_text())
    os.utime(path, (1_750_000_000, 1_750_000_000))
    server = start(tmp_path)
    assert _soa_serial(server) == 1_700_000_000
    server.stop()

    # Changed content with an older mtime: the serial still goes up, across the restart too.
    write_zone(tmp_path / "zones", extra="www: {A: 192.0.2.81}")
    os.utime(path, (1_600_000_000, 1_600_000_000))
    server = start(tmp_path)
    assert _soa_serial(server) == 1_700_000_001
    server.stop()

    # Without the file (a new data dir), the mtime again.
    (tmp_path / "data" / "zone-serials.json").unlink()
    server = start(tmp_path)
    assert _soa_serial(server) == 1_600_000_000
    server.stop()


def test_check_prints_the_serial_the_server_serves(tmp_path):
    import os
    import subprocess
    import sys

    path = write_zone(tmp_path / "zones")
    os.utime(path, (1_700_000_000, 1_700_000_000))
    start(tmp_path).stop()  # remembers 1700000000 in ./data
    os.utime(path, (1_750_000_000, 1_750_000_000))  # same bytes, another mtime
    done = subprocess.run(
        [sys.executable, "-m", "lbdns", "check", "--zones", "zones"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "serial 1700000000" in done.stdout
    assert json.loads((tmp_path / "data" / "zone-serials.json").read_text())  # unchanged
