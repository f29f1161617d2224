"""The OpenAPI document describes every route of the application and is served as it is."""

from __future__ import annotations

import json
import runpy

from admin_support import client, start
from support import ROOT

from lbdns.config import Config
from lbdns.server import Server
from lbdns.web.app import build_app

DOC = ROOT / "lbdns" / "openapi.json"
EXPANSIONS = {
    "/v1/farms/{farm}/hosts/{host}/{action}": ("drain", "enable", "disable"),
    "/v1/farms/{farm}/hosts:{action}": ("drain", "enable", "disable", "remove"),
}


def test_every_route_is_documented(tmp_path):
    doc = json.loads(DOC.read_text())
    app = build_app(Server(Config(data_dir=tmp_path)))
    routes = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        path = route.resource.canonical
        for action in EXPANSIONS.get(path, (None,)):
            routes.add((route.method.lower(), path.replace("{action}", action or "{action}")))
    documented = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert routes - documented == set(), "routes missing from lbdns/openapi.json"
    assert documented - routes == set(), "lbdns/openapi.json describes routes that do not exist"
    # The core of the API, by name (a count would pass with any 20 routes).
    core = {
        ("get", "/v1/health"),
        ("get", "/v1/status"),
        ("get", "/metrics"),
        ("post", "/v1/report"),
        ("post", "/v1/reports"),
        ("get", "/v1/zones"),
        ("get", "/v1/farms"),
        ("get", "/v1/farms/{farm}"),
        ("get", "/v1/farms/{farm}/hosts/{host}"),
        ("put", "/v1/farms/{farm}/hosts/{host}"),
        ("delete", "/v1/farms/{farm}/hosts/{host}"),
        ("post", "/v1/farms/{farm}/hosts/{host}/drain"),
        ("post", "/v1/reload"),
    }
    assert core <= routes, sorted(core - routes)


def test_document_matches_its_generator():
    render = runpy.run_path(str(ROOT / "docs" / "openapi.py"))["render"]
    assert DOC.read_text() == render(), "run python docs/openapi.py"


def test_served_at_v1_openapi_json(tmp_path):
    server = start(tmp_path)
    try:
        served = client(server).get("/v1/openapi.json")
        assert served == json.loads(DOC.read_text())
        assert served["openapi"].startswith("3.")
    finally:
        server.stop()


def test_docs_api_lists_every_endpoint():
    """docs/api.md's table names every method and path of the OpenAPI description."""
    spec = json.loads((ROOT / "lbdns" / "openapi.json").read_text())
    table = (ROOT / "docs" / "api.md").read_text().split("## Every endpoint", 1)[1]
    table = table.split("\n## ", 1)[0]
    missing = [
        f"{method.upper()} {path}"
        for path, operations in spec["paths"].items()
        for method in operations
        if method in ("get", "put", "post", "delete", "patch")
        and f"| `{method.upper()} {path}` |" not in table
    ]
    assert not missing, missing
