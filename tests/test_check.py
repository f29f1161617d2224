"""``lbdns check`` and ``lbdns serve`` on good and bad zone folders (real subprocesses)."""

from __future__ import annotations

import subprocess
import sys

from support import EXAMPLE_ZONES, ROOT

AUTH_ZONES = ROOT / "tests" / "zones" / "auth"

BAD_ONE = """\
zone: one.test.
soa: {}
ns: [ns1]
records:
  ns1: {A: 192.0.2.53}
  www: {A: 192.0.2.300}
  sub: {NS: ns.elsewhere.test.}
"""

BAD_TWO = """\
zone: two.test.
soa: {minimum: -5}
ns: [ns.elsewhere.test.]
farms:
  chat:
    hosts:
      web1: {capacity: 2}
"""


def lbdns(*args: str, cwd=ROOT, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lbdns", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def test_check_clean_folders_exit_0():
    for folder in (EXAMPLE_ZONES, AUTH_ZONES):
        result = lbdns("check", "--zones", str(folder))
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        assert "ok: example.test." in result.stdout


def test_check_prints_every_error_and_exits_1(tmp_path):
    (tmp_path / "one.yaml").write_text(BAD_ONE)
    (tmp_path / "two.yaml").write_text(BAD_TWO)
    result = lbdns("check", "--zones", str(tmp_path))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"
    assert lines == [
        f"error: {one}: line 6: records.www.A: bad A value '192.0.2.300': not an IPv4 address",
        f"error: {one}: line 7: records.sub.NS: NS below the apex is a delegation; "
        "lbdns does not delegate",
        f"error: {two}: line 2: soa.minimum: must be an integer from 0 to 4294967295, got -5",
        f"error: {two}: line 7: farms.chat.hosts.web1: a host needs an a or aaaa address",
        "4 error(s)",
    ]
    assert result.stdout == ""


def test_check_reports_config_and_zone_errors_together(tmp_path):
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "one.yaml").write_text(BAD_ONE)
    config = tmp_path / "lbdns.yaml"
    config.write_text("zones: zones\ntcp_max_connections: 0\ncolour: blue\n")
    result = lbdns("check", "-c", str(config))
    assert result.returncode == 1
    assert f"{config}: line 2: tcp_max_connections" in result.stderr
    assert f"{config}: line 3: colour: unknown key" in result.stderr
    assert f"{zones / 'one.yaml'}: line 6: records.www.A" in result.stderr


def test_check_with_config_relative_zones(tmp_path):
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "z.yaml").write_text((EXAMPLE_ZONES / "example.test.yaml").read_text())
    config = tmp_path / "lbdns.yaml"
    config.write_text("zones: zones\n")
    result = lbdns("check", "-c", str(config), cwd=ROOT / "tests")
    assert result.returncode == 0, result.stderr
    assert "ok: example.test." in result.stdout


def test_check_missing_folder(tmp_path):
    result = lbdns("check", "--zones", str(tmp_path / "nope"))
    assert result.returncode == 1
    assert "zones folder does not exist" in result.stderr


def test_serve_with_a_bad_zone_exits_nonzero_naming_file_and_line(tmp_path):
    (tmp_path / "one.yaml").write_text(BAD_ONE)
    result = lbdns(
        "serve", "--zones", str(tmp_path), "--dns", "127.0.0.1:0", "--http", "off", timeout=30
    )
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert f"{tmp_path / 'one.yaml'}: line 6: records.www.A: bad A value" in output
    assert f"{tmp_path / 'one.yaml'}: line 7: records.sub.NS: NS below the apex" in output
    assert "ready" not in output


def test_check_and_serve_refuse_an_empty_zones_folder(tmp_path):
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "example.YAML").write_text((EXAMPLE_ZONES / "example.test.yaml").read_text())
    result = lbdns("check", "--zones", str(zones))
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == (
        f"error: {zones}: no zone file in the zones folder "
        "(zone files end in .yaml or .yml; skipped: example.YAML)"
    )
    served = lbdns("serve", "--zones", str(zones), "--dns", "127.0.0.1:0", "--http", "off")
    assert served.returncode == 1 and "no zone file in the zones folder" in served.stderr


def test_check_warns_about_files_it_skips(tmp_path):
    (tmp_path / "example.test.yaml").write_text((EXAMPLE_ZONES / "example.test.yaml").read_text())
    (tmp_path / "other.YAML").write_text("zone: other.test.\n")
    (tmp_path / "db.example.zone").write_text("$ORIGIN example.\n")
    (tmp_path / ".example.test.yaml.swp").write_text("")
    result = lbdns("check", "--zones", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"warning: {tmp_path / 'db.example.zone'}: skipped: zone files end in .yaml or .yml",
        f"warning: {tmp_path / 'other.YAML'}: skipped: zone files end in .yaml or .yml",
    ]
    assert "ok: example.test." in result.stdout


def test_yaml_indentation_errors_say_bad_indentation(tmp_path):
    (tmp_path / "one.yaml").write_text(
        "zone: one.test.\nsoa: {}\nns: [ns1]\nrecords:\n  ns1: {A: 192.0.2.1}\n   www: {A: 192.0.2.2}\n"
    )
    result = lbdns("check", "--zones", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"error: {tmp_path / 'one.yaml'}: line 6: invalid YAML: bad indentation: this line does "
        "not line up with the lines above it (expected <block end>, but found "
    )
