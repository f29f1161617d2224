"""``lbdns hosts|farms|reload`` as subprocesses against a running server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from admin_support import FARM, addresses, start, write_zone
from support import ROOT

from lbdns.testing.ports import refusing_port


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    write_zone(tmp / "zones")
    config = tmp / "lbdns.yaml"
    config.write_text("tokens:\n  - {name: ops, secret: ops-secret-1, role: admin}\n")
    process = start(tmp, config=config)
    (tmp / "token").write_text("ops-secret-1\n")
    yield process
    process.stop()


def lbdns(server, *args: str, token: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "LBDNS_SERVER": server.http_url, "PYTHONPATH": str(ROOT)}
    env.pop("LBDNS_TOKEN", None)
    if token:
        env["LBDNS_TOKEN"] = "ops-secret-1"
    return subprocess.run(
        [sys.executable, "-m", "lbdns", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


def test_hosts_add_list_update_and_json(server):
    done = lbdns(server, "hosts", "add", FARM, "c1", "--a", "192.0.2.41", "--label", "role=cli")
    assert done.returncode == 0, done.stderr
    assert "added c1" in done.stdout and "192.0.2.41" in done.stdout
    done = lbdns(server, "hosts", "update", "app.admin.test", "c1", "--capacity", "4")
    assert done.returncode == 0, done.stderr
    listed = lbdns(server, "hosts", "list", FARM)
    lines = listed.stdout.splitlines()
    assert lines[0].split() == [
        "HOST", "STATE", "ADDRESSES", "CAPACITY", "SCORE", "REPORT", "LABELS"
    ]  # fmt: skip
    c1 = next(line for line in lines if line.startswith("c1 "))
    assert c1.split()[:4] == ["c1", "new", "192.0.2.41", "4"] and "role=cli" in c1
    as_json = json.loads(lbdns(server, "hosts", "list", FARM, "--json").stdout)
    assert {h["name"] for h in as_json} == {"h1", "h2", "h3", "c1"}
    only = json.loads(
        lbdns(server, "hosts", "list", FARM, "--selector", "role=cli", "--json").stdout
    )
    assert [h["labels"] for h in only] == [{"role": "cli"}]


def test_errors_exit_non_zero_with_the_servers_message(server, tmp_path):
    done = lbdns(server, "hosts", "add", FARM, "c2", "--a", "not-an-ip")
    assert done.returncode == 1
    assert done.stderr.strip() == "error: a: 'not-an-ip' is not an IPv4 address"
    done = lbdns(server, "hosts", "remove", FARM, "h2")
    assert done.returncode == 1 and "not drained" in done.stderr
    done = lbdns(server, "farms", "show", "nope.test.")
    assert (
        done.returncode == 1
        and "no farm 'nope.test.' is served (farms: app.admin.test.)" in done.stderr
    )
    done = lbdns(server, "farms", "list", token=False)
    assert done.returncode == 1 and "bearer token" in done.stderr
    token_file = server.tmp / "token"
    done = lbdns(server, "farms", "list", "--token-file", str(token_file), token=False)
    assert done.returncode == 0 and FARM in done.stdout
    with refusing_port() as port:
        done = lbdns(server, "farms", "list", "--server", f"http://127.0.0.1:{port}")
    assert done.returncode == 1 and "cannot reach" in done.stderr
    assert lbdns(server, "hosts", "drain", FARM).returncode == 1  # neither HOST nor --selector
    assert lbdns(server, "hosts", "frobnicate", FARM).returncode == 2


def test_drain_wait_then_remove(server):
    done = lbdns(server, "hosts", "drain", FARM, "h3", "--grace", "0", "--wait", "--timeout", "5")
    assert done.returncode == 0, done.stderr
    assert "h3: draining" in done.stderr and "drained: h3" in done.stderr
    assert done.stdout.splitlines()[1].split()[:2] == ["h3", "drained"]
    assert "192.0.2.3" not in addresses(server)
    done = lbdns(server, "hosts", "remove", FARM, "h3", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["removed"] == ["h3"]
    # A drain that cannot finish in time: exit 1 with what it still waits for.
    done = lbdns(
        server, "hosts", "drain", FARM, "h1", "--grace", "60", "--wait", "--timeout", "0.5"
    )
    assert done.returncode == 1 and "not drained after 0.5 s" in done.stderr
    assert "answers expire in" in done.stderr
    assert lbdns(server, "hosts", "enable", FARM, "h1").returncode == 0
    done = lbdns(server, "hosts", "disable", FARM, "--selector", "role=web")
    assert done.returncode == 0 and done.stdout.count("disabled") == 2
    lbdns(server, "hosts", "enable", FARM, "--selector", "role=web")


def test_farms_and_reload(server):
    done = lbdns(server, "farms", "list")
    assert done.returncode == 0 and done.stdout.split()[:5] == [
        "FARM", "POLICY", "HOSTS", "UTILISATION", "SCALE"
    ]  # fmt: skip
    done = lbdns(server, "farms", "show", FARM)
    assert done.returncode == 0 and done.stdout.startswith(f"farm {FARM} (zone admin.test.")
    assert "utilisation" in done.stdout and "hosts needed" in done.stdout
    shown = json.loads(lbdns(server, "farms", "show", FARM, "--json").stdout)
    assert shown["scale"]["target"] == 0.7
    done = lbdns(server, "reload")
    assert done.returncode == 0 and done.stdout.startswith("ok: admin.test. serial")
    zone = server.tmp / "zones" / "admin.test.yaml"
    good = zone.read_text()
    zone.write_text(good.replace("ttl: 1", "ttl: -1"))
    try:
        done = lbdns(server, "reload")
        assert done.returncode == 1
        assert "farms.app.ttl" in done.stderr and "old zones keep serving" in done.stderr
        done = lbdns(server, "reload", "--json")
        assert done.returncode == 1 and json.loads(done.stdout)["status"] == 422
    finally:
        write_zone(server.tmp / "zones")


def test_refusals_give_cli_recipes_and_selectors_as_written(server):
    done = lbdns(server, "hosts", "remove", FARM, "h2")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"error: h2 is new, not drained: drain it first (`lbdns hosts drain {FARM} h2 --wait`) "
        f"or remove it now (`lbdns hosts remove {FARM} h2 --force`)"
    )
    assert "POST" not in done.stderr and "?force" not in done.stderr
    done = lbdns(server, "hosts", "remove", FARM, "--selector", "role=web")
    assert done.returncode == 1 and "`lbdns hosts remove" in done.stderr
    assert "--selector role=web --force`" in done.stderr and "force=true" not in done.stderr
    done = lbdns(server, "hosts", "drain", FARM, "--selector", "role=nope,zone=a")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"error: no host of {FARM} matches the selector role=nope,zone=a"
    )


def test_drain_again_with_only_a_threshold_keeps_the_grace(server):
    done = lbdns(server, "hosts", "drain", FARM, "h2", "--grace", "60", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["drain"]["grace"] == 60
    done = lbdns(server, "hosts", "drain", FARM, "h2", "--threshold", "3", "--json")
    drain = json.loads(done.stdout)["drain"]
    assert (drain["threshold"], drain["grace"]) == (3, 60)
    done = lbdns(server, "hosts", "drain", FARM, "h2", "--grace", "10", "--json")
    drain = json.loads(done.stdout)["drain"]
    assert (drain["threshold"], drain["grace"]) == (3, 10)
    assert lbdns(server, "hosts", "enable", FARM, "h2").returncode == 0
    # A new drain starts from the defaults again.
    done = lbdns(server, "hosts", "drain", FARM, "h2", "--json")
    drain = json.loads(done.stdout)["drain"]
    assert (drain["threshold"], drain["grace"]) == (0, 5)
    assert lbdns(server, "hosts", "enable", FARM, "h2").returncode == 0
