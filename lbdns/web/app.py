"""The aiohttp application: one error middleware, one auth check, route tables per part.

Each part of the API is one module with a ``routes`` table (``web.RouteTableDef``):
``ingest`` (agents' reports), ``admin`` (hosts, farms, zones, reload), ``status`` (the page)
and ``metrics``. Handlers raise ``RequestError`` subclasses; the middleware turns every
``LbdnsError`` into a JSON error whose message names the field.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..auth import LOOPBACK, Token, find_token, is_loopback
from ..errors import Forbidden, LbdnsError, RequestError, Unauthorized
from ..server import Server

log = logging.getLogger("lbdns.http")

SERVER: web.AppKey[Server] = web.AppKey("server", Server)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, indent=None))


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RequestError as exc:
        body: dict[str, Any] = {"error": exc.reason, "status": exc.status}
        if exc.field:
            body["field"] = exc.field
        return json_response(body, status=exc.status)
    except LbdnsError as exc:
        return json_response({"error": str(exc), "status": 400}, status=400)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_response({"error": exc.reason, "status": exc.status}, status=exc.status)


def authenticate(request: web.Request, *roles: str) -> Token:
    """The token of the request if its role is one of ``roles``; raise 401/403 otherwise.

    With no tokens configured, requests from loopback addresses act as admin and all other
    requests are refused.
    """
    server = request.app[SERVER]
    tokens = server.config.tokens
    header = request.headers.get("Authorization", "")
    if not tokens:
        if is_loopback(request.remote):
            return LOOPBACK
        raise Forbidden(
            "no tokens are configured, so only loopback clients may use the API; "
            "configure tokens to allow remote clients"
        )
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented:
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    token = find_token(tokens, presented.strip())
    if token is None:
        raise Unauthorized("unknown token")
    if token.role not in roles and token.role != "admin":
        raise Forbidden(f"token {token.name!r} (role {token.role}) may not do this")
    return token


async def read_json(request: web.Request) -> Any:
    """The request body as JSON; 400 naming the problem when it is not."""
    try:
        return await request.json(loads=json.loads)
    except json.JSONDecodeError as exc:
        raise RequestError(f"body is not valid JSON: {exc.msg} at position {exc.pos}") from None
    except UnicodeDecodeError:
        raise RequestError("body is not UTF-8") from None


routes = web.RouteTableDef()


@routes.get("/v1/health")
async def health(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    return json_response(
        {"status": "ok", "zones": len(server.registry.zones), "store": server.store.status()}
    )


def build_app(server: Server) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=server.config.max_body)
    app[SERVER] = server
    app.add_routes(routes)
    for part in PARTS:
        module = __import__(f"{__package__}.{part}", fromlist=["routes"])
        app.add_routes(module.routes)
        setup = getattr(module, "setup", None)  # a part may add startup work or app state
        if setup is not None:
            setup(app)
    return app


# The parts of the API, each a module of this package with a ``routes`` table.
PARTS: list[str] = ["status", "metrics", "admin", "ingest"]
