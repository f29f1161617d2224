"""The assignment API and its redirect over real HTTP, against one real ``lbdns serve``."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.request
from collections import Counter

import pytest
from affinity_support import CHAT, HOSTS, PLAIN, config, host_of, report_all, zones
from support import LbdnsProcess, http_json, http_request

from lbdns.errors import ZoneErrors
from lbdns.zone.parse import parse_text

ASSIGN = "assign-secret-1"
READ = "read-secret-12"
REPORT = "report-secret-1"


class StandIn(http.server.BaseHTTPRequestHandler):
    """A host's web server: says which path and query it was asked for."""

    def do_GET(self) -> None:  # noqa: N802 (the handler's name is http.server's)
        body = json.dumps({"path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def stand_in():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def server(tmp_path, stand_in):
    folder = zones(tmp_path, redirect=f"http://127.0.0.1:{stand_in}/{{host}}/{{path}}")
    with LbdnsProcess(tmp_path, zones=folder) as proc:
        report_all(proc)
        yield proc


def get(server, path, token=None):
    return http_json(server.http_url + path, token=token)


def in_flight(server, farm) -> dict[str, float]:
    hosts = get(server, f"/v1/farms/{farm}/explain")[1]["hosts"]
    return {h["host"]: h["in_flight"] for h in hosts}


def test_assign_by_key_agrees_with_dns_and_charges_one_connection(server):
    for key in ("room1", "room2", "lobby"):
        before = in_flight(server, CHAT)
        status, body = get(server, f"/v1/farms/{CHAT}/assign?key={key}")
        assert status == 200, body
        host = body["host"]
        assert body["name"] == f"{host}.{CHAT}" and body["how"] == "key"
        assert body["a"] == [f"192.0.2.{host[3:]}"] and body["aaaa"] == [f"2001:db8::{host[3:]}"]
        assert body["state"] == "up" and "holds its place on the ring" in body["reason"]
        after = in_flight(server, CHAT)
        # One connection (an in-flight charge also fades as time passes: a small tolerance).
        assert after[host] == pytest.approx(before[host] + 1.0, abs=0.05)
        assert all(after[h] == pytest.approx(before[h], abs=0.05) for h in HOSTS if h != host)
        assert host_of(server, key) == host


def test_keyless_assignments_spread_exactly(server):
    counts = Counter(get(server, f"/v1/farms/{PLAIN}/assign")[1]["host"] for _ in range(80))
    assert counts == {"p1": 40, "p2": 40}  # least-load with each assignment charged once
    ignored = get(server, f"/v1/farms/{PLAIN}/assign?key=room1")[1]
    assert ignored["key"] is None and ignored["how"] == "policy"


def test_assign_errors_name_the_field(server):
    status, body = get(server, "/v1/farms/nope.aff.test/assign")
    assert status == 404 and body["field"] == "farm"
    status, body = get(server, f"/v1/farms/{CHAT}/assign?key=")
    assert status == 400 and body["field"] == "key"
    status, body = get(server, f"/r/{PLAIN}/x")
    assert status == 404 and "no redirect" in body["error"]
    for host in HOSTS:
        http_json(server.http_url + f"/v1/farms/{CHAT}/hosts/{host}/disable", {}, method="POST")
    status, body = get(server, f"/v1/farms/{CHAT}/assign?key=room1")
    assert status == 503 and body["field"] == "farm"


def test_the_redirect_is_followed_to_the_chosen_host(server):
    host = get(server, f"/v1/farms/{CHAT}/assign?key=room42")[1]["host"]
    url = server.http_url + f"/r/{CHAT.rstrip('.')}/room42/socket.io/?EIO=4&key=room42"
    with urllib.request.urlopen(url, timeout=5) as response:  # follows the 307
        assert response.status == 200
        landed = json.loads(response.read())
    assert landed["path"] == f"/{host}/room42/socket.io/?EIO=4&key=room42"
    status, _, headers = http_request(server.http_url + f"/r/{CHAT}/a%20b?key=room42")
    # urllib follows it again: the stand-in answers; the path stays quoted.
    assert status == 200


def test_redirect_status_and_location(server, stand_in):
    import http.client

    connection = http.client.HTTPConnection(server.http_url.removeprefix("http://"), timeout=5)
    try:
        connection.request("GET", f"/r/{CHAT}/room42/x?key=room42")
        response = connection.getresponse()
        response.read()
        host = get(server, f"/v1/farms/{CHAT}/assign?key=room42")[1]["host"]
        assert response.status == 307
        assert response.getheader("Location") == (
            f"http://127.0.0.1:{stand_in}/{host}/room42/x?key=room42"
        )
    finally:
        connection.close()


TOKENS = [
    {"name": "gateway", "secret": ASSIGN, "role": "assign", "farms": [CHAT]},
    {"name": "grafana", "secret": READ, "role": "read"},
    {"name": "agent", "secret": REPORT, "role": "report"},
]


def test_tokens_and_roles(tmp_path):
    with LbdnsProcess(
        tmp_path, zones=zones(tmp_path), config=config(tmp_path, tokens=TOKENS)
    ) as proc:
        path = f"/v1/farms/{CHAT}/assign?key=room1"
        assert get(proc, path)[0] == 401
        assert get(proc, path, token=REPORT)[0] == 403
        assert get(proc, path, token=ASSIGN)[0] == 200
        assert get(proc, path, token=READ)[0] == 200
        assert get(proc, f"/v1/farms/{PLAIN}/assign", token=ASSIGN)[0] == 403  # not its farm
        assert get(proc, f"/r/{CHAT}/x")[0] == 401  # not public: the token is needed


def test_a_public_redirect_needs_no_token(tmp_path, stand_in):
    folder = zones(tmp_path, redirect=f"http://127.0.0.1:{stand_in}/{{host}}/{{path}}", public=True)
    with LbdnsProcess(tmp_path, zones=folder, config=config(tmp_path, tokens=TOKENS)) as proc:
        with urllib.request.urlopen(proc.http_url + f"/r/{CHAT}/hello", timeout=5) as response:
            assert json.loads(response.read())["path"].endswith("/hello")
        assert get(proc, f"/v1/farms/{CHAT}/assign")[0] == 401  # the JSON form still is not


def test_rate_limit(tmp_path):
    settings = config(tmp_path, assign_rate=0.5, assign_burst=2)
    with LbdnsProcess(tmp_path, zones=zones(tmp_path), config=settings) as proc:
        statuses = [http_request(proc.http_url + f"/v1/farms/{PLAIN}/assign") for _ in range(3)]
        assert [s for s, _, _ in statuses] == [200, 200, 429]
        _, body, headers = statuses[2]
        assert headers["Retry-After"] == "2" and "assign_rate" in json.loads(body)["error"]
        assert get(proc, "/v1/health")[0] == 200  # the rest of the API is not limited


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("key: label", "key needs policy: consistent-hash"),
        ("policy: consistent-hash\n    key: header", "must be one of label, client-subnet"),
        ("policy: consistent-hash\n    balance_factor: 0.5", "must be between 1 and 100"),
        ("balance_factor: 2", "balance_factor needs policy: consistent-hash"),
        ("redirect: 'ftp://x/{host}'", "must be an http:// or https:// URL template"),
        ("redirect: 'https://x/{path}'", "needs {host}"),
        ("redirect: 'https://{host}/{room}'", "unknown placeholder {room}"),
        ("redirect: {url: 'https://{host}/', public: 1}", "must be true or false"),
        (
            "redirect: {url: 'https://{host}/', open: true}",
            "unknown key (expected one of public, url)",
        ),
        ("redirect: 'https://{host!r}/'", "placeholders are plain"),
    ],
)
def test_bad_farm_settings(settings, message):
    text = f"""\
zone: z.test.
soa: {{mname: ns1.z.test., rname: h.z.test.}}
ns: [ns1.z.test.]
records:
  ns1: {{A: 192.0.2.53}}
farms:
  chat:
    {settings}
    hosts:
      web1: {{a: 192.0.2.1}}
"""
    with pytest.raises(ZoneErrors) as caught:
        parse_text(text, "z.test.yaml")
    assert message in str(caught.value) and "farms.chat" in str(caught.value)


def test_a_wildcard_beside_a_label_keyed_farm_is_an_error():
    text = """\
zone: z.test.
soa: {mname: ns1.z.test., rname: h.z.test.}
ns: [ns1.z.test.]
records:
  ns1: {A: 192.0.2.53}
  "*.chat": {A: 192.0.2.9}
farms:
  chat:
    policy: consistent-hash
    hosts:
      web1: {a: 192.0.2.1}
"""
    with pytest.raises(ZoneErrors, match=r"\*\.chat\.z\.test\. cannot stand beside a farm keyed"):
        parse_text(text, "z.test.yaml")


def test_assignments_are_counted_in_metrics(server):
    get(server, f"/v1/farms/{CHAT}/assign?key=room1")
    http_request(server.http_url + f"/r/{CHAT}/x?key=room1")
    _, body, _ = http_request(server.http_url + "/metrics")
    text = body.decode()
    assert f'lbdns_assignments_total{{farm="{CHAT}",result="assigned"}} 1.0' in text
    assert f'lbdns_assignments_total{{farm="{CHAT}",result="redirected"}} 1.0' in text


def test_cli_farms_assign(server):
    import os
    import subprocess
    import sys

    from support import ROOT

    env = {**os.environ, "LBDNS_SERVER": server.http_url, "PYTHONPATH": str(ROOT)}
    env.pop("LBDNS_TOKEN", None)
    done = subprocess.run(
        [sys.executable, "-m", "lbdns", "farms", "assign", CHAT, "--key", "room42"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    host = host_of(server, "room42")
    assert done.returncode == 0, done.stderr
    first, reason = done.stdout.splitlines()
    assert first.startswith(f"{host} ({host}.{CHAT}) 192.0.2.{host[3:]}")
    assert reason == f"key 'room42': {host} holds its place on the ring"


def test_the_farm_shows_its_key_bound_and_redirect(server, stand_in):
    farm = get(server, f"/v1/farms/{CHAT}")[1]
    assert farm["policy"] == "consistent-hash" and farm["key"] == "label"
    assert farm["balance_factor"] == 1.25
    assert farm["redirect"] == {
        "url": f"http://127.0.0.1:{stand_in}/{{host}}/{{path}}",
        "public": False,
    }
    plain = get(server, f"/v1/farms/{PLAIN}")[1]
    assert "key" not in plain and "redirect" not in plain
