"""Bad input on the HTTP side: every number finite and in range, labels strings, strict JSON in
and out, bodies that cannot be decoded refused with a 4xx naming the field, and an HTTP listener
that slow or numerous clients cannot hold open (issue: hardening)."""

from __future__ import annotations

import gzip
import json
import socket
import time

import pytest
from admin_support import FARM, start, write_zone
from support import http_request

URL_HOST = f"/v1/farms/{FARM}/hosts/h9"


def strict(content: bytes):
    """json.loads that fails on NaN/Infinity tokens, as strict clients do (RFC 8259 6)."""

    def refuse(token):
        raise AssertionError(f"non-JSON token {token} in a reply")

    return json.loads(content, parse_constant=refuse)


def put_raw(server, path: str, raw: bytes, headers: dict | None = None):
    import urllib.request

    request = urllib.request.Request(
        server.http_url + path,
        data=raw,
        method="PUT",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, strict(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, strict(exc.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hardening")
    config = tmp / "lbdns.yaml"
    config.write_text("http_header_timeout: 0.5\nhttp_body_timeout: 0.5\nhttp_max_connections: 6\n")
    proc = start(tmp, config=config)
    yield proc
    proc.stop()


@pytest.mark.parametrize(
    "raw, field",
    [
        (b'{"a": "192.0.2.9", "capacity": Infinity}', "body"),
        (b'{"a": "192.0.2.9", "capacity": -Infinity}', "body"),
        (b'{"a": "192.0.2.9", "capacity": NaN}', "body"),
        (b'{"a": "192.0.2.9", "capacity": 1e400}', "body"),
        (b'{"a": "192.0.2.9", "capacity": 2e9}', "capacity"),
        (b'{"a": "192.0.2.9", "capacity": 0}', "capacity"),
        (b'{"a": "192.0.2.9", "capacity": "10"}', "capacity"),
        (b'{"a": "192.0.2.9", "capacity": ' + b"9" * 5000 + b"}", "body"),
        (b'{"a": "192.0.2.9", "labels": {"role": 1}}', "labels"),
        (b'{"a": "192.0.2.9", "labels": {"role": true}}', "labels"),
        (b'{"a": "192.0.2.9", "labels": {"role": null}}', "labels"),
        (b"[" * 1000 + b"]" * 1000, "body"),
    ],
)
def test_bad_numbers_and_labels_are_refused_naming_the_field(server, raw, field):
    status, body = put_raw(server, URL_HOST, raw)
    assert status == 400, body
    assert body["field"].split(".")[0] == field, body
    # Nothing was added: the farm still reads as strict JSON and has no h9.
    status, content, _ = http_request(server.http_url + f"/v1/farms/{FARM}")
    assert status == 200 and "h9" not in {h["name"] for h in strict(content)["hosts"]}


def test_a_finite_capacity_is_taken_and_served_back_as_json(server):
    status, body = put_raw(
        server, "/v1/farms/" + FARM + "/hosts/h8", b'{"a": "192.0.2.8", "capacity": 1e9}'
    )
    assert status in (200, 201), body
    status, content, _ = http_request(server.http_url + f"/v1/farms/{FARM}/hosts/h8")
    assert strict(content)["capacity"] == 1e9


@pytest.mark.parametrize(
    "headers, raw, field",
    [
        ({"Content-Type": "application/json; charset=no-such-charset"}, b"{}", "Content-Type"),
        ({"Content-Encoding": "gzip"}, b'{"a": "192.0.2.9"}', "Content-Encoding"),
        ({"Content-Type": "application/json; charset=utf-8"}, b'{"a": "\xff"}', "body"),
    ],
)
def test_undecodable_bodies_get_a_4xx_naming_the_header(server, headers, raw, field):
    status, body = put_raw(server, URL_HOST, raw, headers)
    assert 400 <= status < 500, body
    assert body["field"] == field, body


def test_a_gzip_body_that_is_gzip_is_read(server):
    raw = gzip.compress(b'{"a": "192.0.2.7"}')
    status, body = put_raw(
        server, "/v1/farms/" + FARM + "/hosts/h7", raw, {"Content-Encoding": "gzip"}
    )
    assert status in (200, 201), body


@pytest.mark.parametrize("value", ["\u00b2", "9" * 5000, "-1", "abc"])
def test_status_history_must_be_a_small_whole_number(server, value):
    import urllib.parse

    status, content, _ = http_request(
        server.http_url + "/v1/status?history=" + urllib.parse.quote(value)
    )
    assert status == 400 and strict(content)["field"] == "history"


def test_no_traceback_was_logged(server):
    assert "Traceback" not in server.log()


def test_a_zone_file_capacity_must_be_finite(tmp_path):
    from lbdns.errors import ZoneErrors
    from lbdns.zone.parse import load_folder

    folder = tmp_path / "zones"
    write_zone(folder)
    path = folder / "admin.test.yaml"
    path.write_text(path.read_text().replace("capacity: 2,", "capacity: .inf,"))
    with pytest.raises(ZoneErrors) as info:
        load_folder(folder)
    message = str(info.value)
    assert "admin.test.yaml" in message and "farms.app.hosts.h3.capacity" in message
    assert "finite" in message


def _connect(server) -> socket.socket:
    host, port = server.http_url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=5)


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` (EOF or reset) within ``seconds``, reading what it
    sends meanwhile."""
    sock.settimeout(seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if not sock.recv(4096):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return False


def test_slow_headers_are_cut_off(server):
    sock = _connect(server)
    try:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")  # and never the end of headers
        assert _closed_within(sock, 3.0)
    finally:
        sock.close()


def test_a_body_that_never_arrives_gets_408(server):
    sock = _connect(server)
    try:
        sock.sendall(
            f"PUT {URL_HOST} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 100\r\n\r\n{}".encode()
        )
        sock.settimeout(5)
        reply = sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 408"), reply
    finally:
        sock.close()


def test_the_connection_cap_closes_new_connections_and_dns_tcp_keeps_serving(tmp_path):
    config = tmp_path / "lbdns.yaml"
    config.write_text("http_header_timeout: 30\nhttp_max_connections: 5\n")
    proc = start(tmp_path, config=config)
    held = []
    try:
        held = [_connect(proc) for _ in range(5)]
        extra = _connect(proc)
        try:
            assert _closed_within(extra, 3.0)  # closed as accepted
        finally:
            extra.close()
        assert "HTTP connection cap reached" in proc.log()
        # DNS over TCP is not starved of descriptors.
        assert proc.query(FARM, tcp=True).answer
        for sock in held:
            sock.close()
        held = []
        deadline = time.monotonic() + 5
        while True:
            try:
                status, _, _ = http_request(proc.http_url + "/v1/health", timeout=2)
                if status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "HTTP did not recover after the clients left"
            time.sleep(0.05)
    finally:
        for sock in held:
            sock.close()
        proc.stop()
