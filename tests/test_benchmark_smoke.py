"""The DNS speed benchmark runs end to end in its smallest form and reports both servers.

This checks that the benchmark works (NSD starts on the zone written from YAML, lbdns starts,
dnsperf gets answers from both), not how fast anything is: speed figures come from running
benchmarks/dns_speed.py on a quiet machine.
"""

import re
import shutil
import subprocess
import sys

import pytest
from support import ROOT

NSD = "/usr/sbin/nsd"

pytestmark = pytest.mark.skipif(
    not (shutil.which(NSD) and shutil.which("dnsperf")),
    reason="needs nsd and dnsperf (Debian packages nsd, dnsperf)",
)


def _figure(output: str, label: str) -> tuple[float, float]:
    """The lbdns and NSD columns of one row of the median table."""
    match = re.search(rf"^\s+{re.escape(label)}\s+([\d,.]+)\s+([\d,.]+)\s", output, re.M)
    assert match, f"no {label!r} row in:\n{output}"
    return tuple(float(group.replace(",", "")) for group in match.groups())


def test_benchmark_reports_both_servers(tmp_path):
    result_file = tmp_path / "result.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "dns_speed.py"),
            "--quick",
            "--duration",
            "1",
            "--rounds",
            "1",
            "--json",
            str(result_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout
    assert done.returncode == 0, output + done.stderr
    lbdns_qps, nsd_qps = _figure(output, "max QPS")
    assert lbdns_qps > 1000 and nsd_qps > 1000  # both answered at some real rate
    lbdns_cpu, nsd_cpu = _figure(output, "server CPU us/query")
    assert lbdns_cpu > 0 and nsd_cpu > 0
    assert re.search(r"^1\s+lbdns\s", output, re.M) and re.search(r"^1\s+NSD\s", output, re.M)
    assert "lbdns/NSD" in output and "targets:" in output
    # Both answered the same mix with the same response codes, in the same proportions.
    codes = re.search(r"response codes \(last round\): lbdns (.*); NSD (.*)", output)
    assert codes, output
    for server_codes in codes.groups():
        counts = dict(re.findall(r"([A-Z]+) (\d+)", server_codes))
        assert set(counts) == {"NOERROR", "NXDOMAIN"}, server_codes
        # Two of the twelve names in the query file do not exist.
        share = int(counts["NXDOMAIN"]) / (int(counts["NOERROR"]) + int(counts["NXDOMAIN"]))
        assert abs(share - 2 / 12) < 0.02, server_codes
    assert result_file.read_text().count('"qps"') >= 2


def test_query_work_counts_the_mix_and_compares_trees():
    # This tree against itself: every category of the mix counted, the same count twice (a
    # count, not a time), and the sticky farm answer cheaper than a charged one.
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "query_work.py"), "--baseline-tree", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {
        m.group(1).strip(): (float(m.group(2)), float(m.group(3)), m.group(4))
        for m in re.finditer(r"^(.{22}) +([\d.]+) +([\d.]+) +([\d.]+)x$", done.stdout, re.M)
    }
    assert {"chat A", "chat AAAA", "mail A", "nope A", "mix"} <= set(rows), done.stdout
    for lbdns, base, ratio in rows.values():
        assert lbdns == base and ratio == "1.000" and lbdns > 10
    assert rows["chat A"][0] < rows["chat AAAA"][0]  # the A after the AAAA is sticky
