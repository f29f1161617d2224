"""The aiohttp application: one error middleware, one auth check, route tables per part.

Each part of the API is one module with a ``routes`` table (``web.RouteTableDef``):
``ingest`` (agents' reports), ``admin`` (hosts, farms, zones, reload), ``assign`` (the
assignment API and its redirect), ``status`` (the page) and ``metrics``. Handlers raise
``RequestError`` subclasses; the middleware turns every ``LbdnsError`` into a JSON error whose
message names the field.
"""

from __future__ import annotations

from aiohttp import web

from lbdns.server import Server
from lbdns.web import admin, assign, ingest, metrics, status
from lbdns.web.base import (
    CONFIG,
    GUARD,
    REGISTRY,
    SERVER,
    STORE,
    error_middleware,
    guard_middleware,
    json_response,
)
from lbdns.web.guard import HttpGuard

routes = web.RouteTableDef()


@routes.get("/v1/health")
async def health(request: web.Request) -> web.Response:
    store = request.app[STORE]
    return json_response(
        {"status": "ok", "zones": len(request.app[REGISTRY].zones), "store": store.status()}
    )


def build_app(server: Server, guard: HttpGuard | None = None) -> web.Application:
    middlewares = [error_middleware] if guard is None else [guard_middleware, error_middleware]
    app = web.Application(middlewares=middlewares, client_max_size=server.config.max_body)
    if guard is not None:
        app[GUARD] = guard
    app[SERVER] = server
    app[REGISTRY] = server.registry
    app[STORE] = server.store
    app[CONFIG] = server.config
    app.add_routes(routes)
    # Status before metrics: the metrics collector reads the status history.
    for part in (status, metrics, admin, ingest, assign):
        app.add_routes(part.routes)
    assign.setup(app)
    status.setup(app)
    metrics.setup(app)
    admin.setup(app)
    return app
