"""One drain state for every reader: the API, /metrics, the status page and the CLI all say
``drained`` once a drain is complete, and a drain that cannot be saved changes nothing."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from admin_support import FARM, client, error_of, start
from support import http_request, wait_for


def metric_state(server, host: str) -> str | None:
    _, body, _ = http_request(f"{server.http_url}/metrics")
    for line in body.decode().splitlines():
        match = re.match(
            r'lbdns_host_state\{farm="([^"]+)",host="([^"]+)",state="(\w+)"\} 1\.0', line
        )
        if match and match.group(1) == FARM and match.group(2) == host:
            return match.group(3)
    return None


def page_state(server, host: str) -> str | None:
    _, body, _ = http_request(f"{server.http_url}/v1/status")
    for zone in json.loads(body)["zones"]:
        for farm in zone["farms"]:
            if farm["name"] == FARM:
                for item in farm["hosts"]:
                    if item["name"] == host:
                        return item["state"]
    return None


def test_a_complete_drain_reads_drained_everywhere(tmp_path):
    server = start(tmp_path)
    try:
        api = client(server)
        # No report and no answer since: complete once the farm TTL (1 s) + grace (0) have passed.
        api.post(f"/v1/farms/{FARM}/hosts/h1/drain", {"grace": 0})
        assert api.get(f"/v1/farms/{FARM}/hosts/h1")["state"] == "draining"
        wait_for(lambda: api.get(f"/v1/farms/{FARM}/hosts/h1")["state"] == "drained", 5)
        assert metric_state(server, "h1") == "drained"
        assert page_state(server, "h1") == "drained"
        cli = subprocess.run(
            [sys.executable, "-m", "lbdns", "hosts", "list", FARM, "--server", server.http_url],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert cli.returncode == 0, cli.stderr
        row = next(line for line in cli.stdout.splitlines() if line.split()[:1] == ["h1"])
        assert "drained" in row.split(), cli.stdout
        # The other hosts are untouched.
        assert metric_state(server, "h2") != "drained"
    finally:
        server.stop()


def test_a_drain_that_cannot_be_saved_changes_nothing(tmp_path):
    server = start(tmp_path)
    try:
        api = client(server)
        api.post(f"/v1/farms/{FARM}/hosts/h2/drain", {"grace": 30, "threshold": 4})
        before = api.get(f"/v1/farms/{FARM}/hosts/h2")["drain"]
        # A directory where the temporary file goes makes the write fail (even for root).
        (tmp_path / "data" / "hosts.tmp").mkdir(parents=True)
        error = error_of(api.post, f"/v1/farms/{FARM}/hosts/h2/drain", {"grace": 1, "threshold": 9})
        assert error.status == 503
        after = api.get(f"/v1/farms/{FARM}/hosts/h2")["drain"]
        assert (
            (after["grace"], after["threshold"])
            == (before["grace"], before["threshold"])
            == (30, 4)
        )
        error = error_of(api.post, f"/v1/farms/{FARM}/hosts/h3/drain", {"grace": 1})
        assert error.status == 503
        host = api.get(f"/v1/farms/{FARM}/hosts/h3")
        assert host["admin"] == "enabled" and host["drain"] is None and host["state"] != "draining"
    finally:
        server.stop()
