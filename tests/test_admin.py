"""The admin API over real HTTP against a real ``lbdns serve``, checked over real DNS."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from admin_support import FARM, addresses, client, error_of, start
from support import wait_for


@pytest.fixture
def server(tmp_path):
    process = start(tmp_path)
    yield process
    process.stop()


def test_reads_zones_and_farms(server):
    api = client(server)
    zones = api.get("/v1/zones")["zones"]
    assert [z["origin"] for z in zones] == ["admin.test."]
    assert zones[0]["farms"] == [FARM] and zones[0]["serial"] > 0
    farms = api.get("/v1/farms")["farms"]
    assert [f["name"] for f in farms] == [FARM]
    assert set(farms[0]["scale"]) >= {"utilisation", "hosts_needed", "target", "change"}
    farm = api.get("/v1/farms/app.admin.test")  # the trailing dot may be left out
    hosts = {h["name"]: h for h in farm["hosts"]}
    assert set(hosts) == {"h1", "h2", "h3"}
    assert hosts["h3"]["capacity"] == 2 and hosts["h3"]["labels"] == {"role": "batch", "zone": "a"}
    assert hosts["h1"]["a"] == ["192.0.2.1"] and hosts["h1"]["state"] == "new"
    assert hosts["h1"]["report_age"] is None and hosts["h1"]["source"] == "zone"
    missing = error_of(api.get, "/v1/farms/nope.admin.test.")
    assert missing.status == 404 and missing.field == "farm"


def test_added_host_is_answered_on_the_next_query(server):
    api = client(server)
    for name in ("h1", "h2", "h3"):
        api.post(f"/v1/farms/{FARM}/hosts/{name}/disable")
    assert addresses(server) == set()
    created = api.put(f"/v1/farms/{FARM}/hosts/h4", {"a": "192.0.2.4", "capacity": 3})
    assert created["source"] == "api" and created["capacity"] == 3
    assert addresses(server) == {"192.0.2.4"}
    # A change of address is answered at once too.
    api.put(f"/v1/farms/{FARM}/hosts/h4", {"a": "192.0.2.44", "aaaa": "2001:db8::44"})
    assert addresses(server) == {"192.0.2.44"}
    assert addresses(server, rdtype="AAAA") == {"2001:db8::44"}
    api.post(f"/v1/farms/{FARM}/hosts/h1/enable")
    assert api.get(f"/v1/farms/{FARM}/hosts/h1")["state"] == "new"
    api.post(f"/v1/farms/{FARM}/hosts/h4/disable")
    assert addresses(server) == {"192.0.2.1"}


def test_bad_host_bodies_name_the_field(server):
    api = client(server)
    path = f"/v1/farms/{FARM}/hosts/h9"
    cases = [
        ({"a": "300.1.1.1"}, "a"),
        ({"aaaa": "192.0.2.1"}, "aaaa"),
        ({"a": "192.0.2.9", "capacity": 0}, "capacity"),
        ({"a": "192.0.2.9", "capacity": "big"}, "capacity"),
        ({"a": "192.0.2.9", "labels": ["x"]}, "labels"),
        ({"a": "192.0.2.9", "colour": "red"}, "colour"),
        ({}, "a"),
        ([1, 2], "body"),
    ]
    for body, field in cases:
        error = error_of(api.put, path, body)
        assert (error.status, error.field) == (400, field), (body, error)
        assert field in str(error)
    bad_name = error_of(api.put, f"/v1/farms/{FARM}/hosts/bad%20name", {"a": "192.0.2.9"})
    assert bad_name.status == 400 and bad_name.field == "host"
    request = urllib.request.Request(server.http_url + path, data=b"{not json", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert info.value.code == 400
    assert "not valid JSON" in json.loads(info.value.read())["error"]
    # Nothing was added by the refused requests.
    assert {h["name"] for h in api.get(f"/v1/farms/{FARM}")["hosts"]} == {"h1", "h2", "h3"}


def test_drain_reaches_drained_then_remove(server):
    api = client(server)
    host = api.post(f"/v1/farms/{FARM}/hosts/h1/drain", grace=0)
    assert host["state"] == "draining"
    drain = host["drain"]
    assert drain["grace"] == 0 and drain["threshold"] == 0 and not drain["done"]
    assert any(w.startswith("answers:") for w in drain["waiting_for"])
    # No new answer names a draining host.
    for _ in range(10):
        assert "192.0.2.1" not in addresses(server)
    refused = error_of(api.delete, f"/v1/farms/{FARM}/hosts/h1")
    assert refused.status == 409 and "still draining" in str(refused)
    started = time.monotonic()
    drained = wait_for(
        lambda: (h := api.get(f"/v1/farms/{FARM}/hosts/h1"))["state"] == "drained" and h
    )
    # TTL 1 s + grace 0 s after the last answer (at the latest, the drain's start).
    assert time.monotonic() - started <= 1.5
    assert drained["drain"]["done"] and drained["drain"]["waiting_for"] == []
    assert drained["drain"]["running_for"] >= 0.9
    wait_for(lambda: "host h1 of app.admin.test. is drained after" in server.log(), timeout=3)
    assert api.delete(f"/v1/farms/{FARM}/hosts/h1") == {"removed": ["h1"], "farm": FARM}
    assert error_of(api.get, f"/v1/farms/{FARM}/hosts/h1").status == 404
    # A host that is not draining at all: 409 unless forced.
    refused = error_of(api.delete, f"/v1/farms/{FARM}/hosts/h2")
    assert refused.status == 409 and "force=true" in str(refused)
    api.delete(f"/v1/farms/{FARM}/hosts/h2", force="true")
    assert addresses(server) == {"192.0.2.3"}
    assert "change by loopback" in server.log() and "removed host h2" in server.log()


def test_selector_changes_every_matching_host(server):
    api = client(server)
    result = api.post(f"/v1/farms/{FARM}/hosts:disable", selector="role=web")
    assert sorted(h["name"] for h in result["hosts"]) == ["h1", "h2"]
    assert addresses(server) == {"192.0.2.3"}
    result = api.post(f"/v1/farms/{FARM}/hosts:enable", {"selector": {"role": "web", "zone": "b"}})
    assert [h["name"] for h in result["hosts"]] == ["h2"]
    result = api.post(f"/v1/farms/{FARM}/hosts:drain", {"selector": {"zone": "a"}, "grace": 0})
    assert {h["name"]: h["state"] for h in result["hosts"]} == {"h1": "draining", "h3": "draining"}
    states = {h["name"]: h["state"] for h in api.get(f"/v1/farms/{FARM}")["hosts"]}
    assert states == {"h1": "draining", "h2": "new", "h3": "draining"}
    refused = error_of(api.post, f"/v1/farms/{FARM}/hosts:remove", selector="zone=a")
    assert refused.status == 409
    removed = api.post(f"/v1/farms/{FARM}/hosts:remove", selector="zone=a", force="true")
    assert sorted(removed["removed"]) == ["h1", "h3"]
    assert addresses(server) == {"192.0.2.2"}
    for selector, status in (("", 400), ("role", 400), ("role=none", 404)):
        error = error_of(api.post, f"/v1/farms/{FARM}/hosts:drain", selector=selector)
        assert (error.status, error.field) == (status, "selector")
    error = error_of(api.post, f"/v1/farms/{FARM}/hosts:explode", selector="role=web")
    assert error.status == 404 and error.field == "action"
    error = error_of(api.post, f"/v1/farms/{FARM}/hosts/h2/drain", {"grace": -1})
    assert error.status == 400 and error.field == "grace"
