"""The admin API with reporting hosts: drain thresholds, utilisation and shed advice."""

from __future__ import annotations

from admin_support import FARM, client, start, write_zone
from support import wait_for


def test_drain_waits_for_reported_connections_and_advice_in_replies(tmp_path):
    write_zone(tmp_path / "zones")
    config = tmp_path / "lbdns.yaml"
    config.write_text("advice: true\nscale_target: 0.5\n")
    server = start(tmp_path, config=config)
    api = client(server)
    seq = iter(range(1, 1000))

    def report(host: str, connections: float) -> dict:
        body = {"farm": FARM, "host": host, "seq": next(seq), "interval": 5.0,
                "metrics": {"connections": connections}}  # fmt: skip
        return api.post("/v1/report", body)

    try:
        assert report("h2", 40)["advice"] is None
        assert report("h3", 60)["advice"] is None  # capacity 2: score 30
        reply = report("h1", 300)
        # Mean score (40 + 30 + 300) / 3 = 123.3; h1 is far above it and others have room.
        assert reply["advice"]["shed"] == int(300 * (1 - (370 / 3) / 300))
        farm = api.get(f"/v1/farms/{FARM}")
        scale = farm["scale"]
        assert scale["load"] == 400 and scale["capacity"] == 4 and scale["utilisation"] == 100
        # 400 connections at 50% of a mean capacity of 4/3: 600 hosts.
        assert scale["hosts_needed"] == 600 and scale["change"] == 597
        assert {h["name"]: h["report_age"] is not None for h in farm["hosts"]} == {
            "h1": True, "h2": True, "h3": True
        }  # fmt: skip

        host = api.post(f"/v1/farms/{FARM}/hosts/h1/drain", threshold=10, grace=0)
        assert host["drain"]["connections"] == 300
        wait_for(lambda: api.get(f"/v1/farms/{FARM}/hosts/h1")["drain"]["answers_expire_in"] == 0)
        host = api.get(f"/v1/farms/{FARM}/hosts/h1")
        assert host["state"] == "draining"
        assert host["drain"]["waiting_for"] == ["connections: 300 reported, waiting for <= 10"]
        report("h1", 10)
        assert api.get(f"/v1/farms/{FARM}/hosts/h1")["state"] == "drained"
        assert api.delete(f"/v1/farms/{FARM}/hosts/h1")["removed"] == ["h1"]
    finally:
        server.stop()
