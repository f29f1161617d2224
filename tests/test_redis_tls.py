"""``rediss://``: two lbdns servers share state through a Redis that only speaks TLS to them."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from redis_support import RedisProcess, redis_available
from support import LbdnsProcess
from test_redis_cluster import FARM, api, ok, wait_answers, zones

pytestmark = [
    pytest.mark.skipif(not redis_available(), reason="redis-server is not installed"),
    pytest.mark.skipif(not shutil.which("openssl"), reason="openssl is not installed"),
    pytest.mark.timeout(40),
]


def certificate(folder):
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return key, cert


def test_rediss_url_shares_changes_between_servers(tmp_path):
    key, cert = certificate(tmp_path)
    # The plain port stays on for the readiness check only; the servers use the TLS port.
    redis = RedisProcess(tmp_path / "redis", tls=(cert, key)).start()
    url = redis.tls_url
    folder = zones(tmp_path)
    group = []
    try:
        for _ in range(2):
            server = LbdnsProcess(tmp_path, zones=folder, extra=("--state", url))
            group.append(server.start())
        # Disable two hosts through the first server; the second answers the third only.
        ok(api(group[0], "POST", f"/v1/farms/{FARM}/hosts/web1/disable"))
        ok(api(group[0], "POST", f"/v1/farms/{FARM}/hosts/web2/disable"))
        wait_answers(group, ("192.0.2.3",))
        status, body = api(group[1], "GET", "/v1/health")
        assert status == 200 and body["store"]["healthy"] is True, body
        # Without the CA the certificate is not trusted: that server serves the zone files
        # alone, reports its store unhealthy and refuses writes with 503.
        bad = LbdnsProcess(tmp_path, zones=folder, extra=("--state", url.split("?")[0]))
        group.append(bad.start())
        status, body = api(bad, "GET", "/v1/health")
        assert body["store"]["healthy"] is False, body
        status, body = api(bad, "POST", f"/v1/farms/{FARM}/hosts/web3/disable")
        assert status == 503 and "unreachable" in body["error"], body
        wait_answers([group[0], group[1]], ("192.0.2.3",))
    finally:
        for server in group:
            server.stop()
        redis.stop()
