"""What every part of the API shares: typed app keys for the server's resources, JSON replies
and bodies, and the token check. The parts (``admin``, ``ingest``, ``status``, ``metrics``)
import from here; ``app`` imports the parts and builds the application.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from lbdns.auth import LOOPBACK, Token, find_token
from lbdns.config import Config
from lbdns.errors import Forbidden, LbdnsError, RequestError, Unauthorized
from lbdns.registry import Registry
from lbdns.store.base import Store
from lbdns.validate import is_loopback

if TYPE_CHECKING:
    from lbdns.server import Server
    from lbdns.web.guard import HttpGuard

log = logging.getLogger("lbdns.http")

# The server's resources, each under its own typed key, so a handler names what it uses.
SERVER: web.AppKey[Server] = web.AppKey("server")  # reloads, background tasks, counters
REGISTRY: web.AppKey[Registry] = web.AppKey("registry", Registry)
STORE: web.AppKey[Store] = web.AppKey("store", Store)
CONFIG: web.AppKey[Config] = web.AppKey("config", Config)
GUARD: web.AppKey[HttpGuard] = web.AppKey("guard")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _strict_dumps(data: Any) -> str:
    # allow_nan=False: a NaN or an infinity that slipped past validation is a bug to see (500),
    # never a bare NaN/Infinity token that strict JSON clients cannot read (RFC 8259 section 6).
    return json.dumps(data, indent=None, allow_nan=False)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_strict_dumps)


def _refuse_constant(token: str) -> Any:
    raise ValueError(f"{token} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text[:40]} is too large for a number")
    return value


def loads_strict(text: str | bytes) -> Any:
    """JSON as RFC 8259 defines it: no NaN/Infinity tokens, no number that overflows to inf."""
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tell the connection guard that this request's headers arrived, and when it is done."""
    guard = request.app[GUARD]
    guard.request_started(request.protocol)
    try:
        return await handler(request)
    finally:
        guard.request_finished(request.protocol)


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
        async with asyncio.timeout(request.app[CONFIG].http_body_timeout):
            raw = await request.read()
    except TimeoutError:
        log.info("request body from %s did not arrive in time", request.remote)
        raise RequestError(
            f"the body did not arrive within {request.app[CONFIG].http_body_timeout:g} s",
            status=408,
            field="body",
        ) from None
    except web.HTTPException:
        raise
    except Exception as exc:  # a body aiohttp cannot decode: Content-Encoding that does not match
        log.info("unreadable request body from %s: %s", request.remote, exc)
        raise RequestError(
            f"body cannot be read ({type(exc).__name__}): check Content-Encoding",
            field="Content-Encoding",
        ) from None
    charset = request.charset or "utf-8"
    try:
        text = raw.decode(charset)
    except LookupError:
        raise RequestError(f"unknown charset {charset!r}", field="Content-Type") from None
    except UnicodeDecodeError:
        raise RequestError(f"body is not valid {charset}", field="body") from None
    try:
        return loads_strict(text)
    except json.JSONDecodeError as exc:
        raise RequestError(f"body is not valid JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:
        raise RequestError("body is nested too deeply", field="body") from None
    except ValueError as exc:  # NaN/Infinity, an overflowing number, an integer over 4300 digits
        raise RequestError(f"body is not valid JSON: {exc}", field="body") from None
