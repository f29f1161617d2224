"""What every part of the API shares: typed app keys for the server's resources, JSON replies
and bodies, and the token check. The parts (``admin``, ``ingest``, ``status``, ``metrics``)
import from here; ``app`` imports the parts and builds the application.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from lbdns.auth import LOOPBACK, Token, find_token, is_loopback
from lbdns.config import Config
from lbdns.errors import Forbidden, LbdnsError, RequestError, Unauthorized
from lbdns.registry import Registry
from lbdns.store.base import Store

if TYPE_CHECKING:
    from lbdns.server import Server

log = logging.getLogger("lbdns.http")

# The server's resources, each under its own typed key, so a handler names what it uses.
SERVER: web.AppKey[Server] = web.AppKey("server")  # reloads, background tasks, counters
REGISTRY: web.AppKey[Registry] = web.AppKey("registry", Registry)
STORE: web.AppKey[Store] = web.AppKey("store", Store)
CONFIG: web.AppKey[Config] = web.AppKey("config", Config)

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
    tokens = request.app[CONFIG].tokens
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
