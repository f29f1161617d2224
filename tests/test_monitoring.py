"""The shipped alert rules and dashboard (monitoring/): promtool checks and unit-tests the rules,
the dashboard's queries parse, and every metric either names is one a real server exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from obs_support import http, report
from support import ROOT, LbdnsProcess

MONITORING = ROOT / "monitoring"
RULES = MONITORING / "lbdns.rules.yml"
RULE_TESTS = MONITORING / "lbdns.rules.test.yml"
DASHBOARD = MONITORING / "lbdns.dashboard.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool (prometheus) is missing")
# Exported by the Redis store only (docs/observability.md says so).
REDIS_ONLY = {"lbdns_store_connected", "lbdns_store_resyncs_total", "lbdns_store_events_total"}
METRIC = re.compile(r"\blbdns_[a-z_]+")


def promtool(*args: str, cwd: Path = MONITORING) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def dashboard_queries() -> list[str]:
    data = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for panel in data["panels"] for t in panel.get("targets", [])]
    for variable in data["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            queries.append(query["query"])
    return queries


@needs_promtool
def test_rules_pass_promtool_check():
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 10 rules found" in done.stdout


@needs_promtool
def test_rules_unit_tests_pass():
    done = promtool("test", "rules", RULE_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_rule_tests_catch_a_broken_rule(tmp_path):
    # The same tests against rules whose host-down alert looks at the wrong state: they fail.
    broken = RULES.read_text().replace(
        'lbdns_host_state{state="down"}', 'lbdns_host_state{state="new"}'
    )
    assert broken != RULES.read_text()
    (tmp_path / RULES.name).write_text(broken)
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    done = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert done.returncode != 0 and "LbdnsHostDown" in done.stdout + done.stderr


@needs_promtool
def test_dashboard_queries_parse(tmp_path):
    # promtool parses PromQL in rule files: wrap each panel's query in a recording rule, with
    # Grafana's variables replaced by what they expand to.
    rules = []
    for i, query in enumerate(dashboard_queries()):
        if query.startswith("label_values("):
            query = query[len("label_values(") :].split(",")[0]
        expr = query.replace("$__rate_interval", "5m").replace("$instance", ".*")
        expr = expr.replace("$farm", ".*")
        rules.append({"record": f"dashboard:panel_{i}", "expr": expr})
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = promtool("check", "rules", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_rules_and_dashboard_name_only_exported_metrics(tmp_path):
    with LbdnsProcess(tmp_path) as server:
        farm = "chat.example.test."
        for host, connections in (("web1", 5), ("web2", 7), ("web3", 1)):
            assert report(server.http_url, host, 1, connections) == 200
        code, body, _ = http(f"{server.http_url}/v1/farms/{farm}/hosts/web3/drain", body={})
        assert code == 200, body
        server.query("nope.example.test.", "A")
        code, body, _ = http(server.http_url + "/metrics")
        assert code == 200
    exported = set()
    for line in body.decode().splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            exported.add(name)
            if kind == "counter":
                exported.add(name + "_total")
            if kind == "histogram":
                exported |= {name + "_bucket", name + "_sum", name + "_count"}
    exported |= REDIS_ONLY
    named = set(METRIC.findall(RULES.read_text())) | set(METRIC.findall(RULE_TESTS.read_text()))
    for query in dashboard_queries():
        named |= set(METRIC.findall(query))
    assert named and not named - exported, sorted(named - exported)
