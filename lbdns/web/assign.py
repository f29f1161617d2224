"""The assignment API: a host for one new connection, as JSON or as a redirect.

* ``GET /v1/farms/{farm}/assign[?key=K]``: the host chosen (name, addresses, its per-host name
  ``<host>.<farm>``, its state) and why. A keyed farm (policy ``consistent-hash``) maps ``K`` to
  its host on the ring, within the bound; without a key a farm keyed by client subnet keys by the
  caller's subnet, and any other farm chooses by its policy. Each assignment is charged as one
  connection to the chosen host, exactly (no herd estimate), in the same ledger as the DNS
  answers, so the other servers sharing the store see it through the answer exchange.
* ``GET /r/{farm}/{path}[?key=K]``: ``307 Temporary Redirect`` to the farm's ``redirect``
  template (``https://{host}.chat.example.com/{path}``) filled in with the same choice; the
  query string is passed on.

Both need a token of role ``assign`` or ``read`` (or admin) when tokens are configured, except
the redirect of a farm whose redirect says ``public: true``; without tokens, loopback clients
only, as the rest of the API. Both are rate-limited per client address (config
``assign_rate`` per second, bursts of ``assign_burst``): 429 with ``Retry-After`` beyond it.
"""

from __future__ import annotations

import math
import time
from urllib.parse import quote

from aiohttp import web
from prometheus_client import Counter

from lbdns.auth import Token
from lbdns.balance.explain import answer_reason
from lbdns.balance.farm import Assignment, Farm
from lbdns.balance.policy.consistent_hash import client_subnet
from lbdns.errors import Forbidden, NotFound, RequestError
from lbdns.web.base import CONFIG, REGISTRY, authenticate, json_response

routes = web.RouteTableDef()

ASSIGN_ROLES = ("assign", "read")
MAX_KEY = 255
MAX_CLIENTS = 10_000  # client addresses with a bucket before full buckets are forgotten


class RateLimit:
    """A token bucket per client address: ``rate`` requests per second, bursts of ``burst``."""

    def __init__(self, rate: float, burst: float, clock=time.monotonic):
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.clock = clock
        self.buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, when)
        self.refused = 0

    def wait(self, address: str) -> float:
        """0 when a request from ``address`` may go now (and take its token), else the
        seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        tokens, when = self.buckets.get(address, (self.burst, now))
        tokens = min(self.burst, tokens + (now - when) * self.rate)
        if tokens < 1.0:
            self.buckets[address] = (tokens, now)
            self.refused += 1
            return (1.0 - tokens) / self.rate
        if len(self.buckets) >= MAX_CLIENTS and address not in self.buckets:
            self._forget(now)
        self.buckets[address] = (tokens - 1.0, now)
        return 0.0

    def _forget(self, now: float) -> None:
        # Buckets that have filled up again are the same as no bucket.
        full = [a for a, (t, w) in self.buckets.items() if t + (now - w) * self.rate >= self.burst]
        for address in full:
            del self.buckets[address]
        if len(self.buckets) >= MAX_CLIENTS:
            self.buckets.clear()


RATE_LIMIT: web.AppKey[RateLimit] = web.AppKey("assign_rate_limit", RateLimit)

# Registered by ``lbdns.web.metrics`` (its collector registry is per application).
ASSIGNMENTS = Counter(
    "lbdns_assignments",
    "Assignment API requests by farm and result: assigned (JSON), redirected (307), "
    "unavailable (503, no host), limited (429; farm empty).",
    ["farm", "result"],
    registry=None,
)


def _limited(request: web.Request) -> web.Response | None:
    wait = request.app[RATE_LIMIT].wait(request.remote or "")
    if not wait:
        return None
    ASSIGNMENTS.labels("", "limited").inc()
    seconds = max(1, math.ceil(wait))
    response = json_response(
        {
            "error": f"too many assignments from {request.remote}: at most "
            f"{request.app[CONFIG].assign_rate:g} per second (config assign_rate); "
            f"retry after {seconds} s",
            "status": 429,
        },
        status=429,
    )
    response.headers["Retry-After"] = str(seconds)
    return response


def _farm(request: web.Request) -> Farm:
    name = request.match_info["farm"]
    farm = request.app[REGISTRY].farm(name)
    if farm is None:
        raise NotFound(f"no farm {name!r} is served", field="farm")
    return farm


def _allowed(token: Token, farm: Farm) -> None:
    if not token.allows_farm(farm.name):
        raise Forbidden(f"token {token.name!r} is not allowed farm {farm.name}")


def _key(request: web.Request, farm: Farm) -> str | None:
    key = request.query.get("key")
    if key is not None:
        if not key or len(key) > MAX_KEY or not key.isprintable():
            raise RequestError(
                f"key must be 1-{MAX_KEY} printable characters, got {key[:40]!r}", field="key"
            )
        return key.lower()  # keys compare as DNS labels do: without case
    if farm.spec.keyed and farm.spec.key == "client-subnet":
        return client_subnet(request.remote or "")
    return None


def _assign(request: web.Request, farm: Farm, key: str | None) -> Assignment:
    result = farm.assign(key, request.remote or "")
    if isinstance(result, str):
        ASSIGNMENTS.labels(farm.name, "unavailable").inc()
        raise RequestError(
            f"no host of farm {farm.name} can take a connection now (none is up; "
            f"all_unhealthy: {farm.spec.all_unhealthy})",
            status=503,
            field="farm",
        )
    return result


@routes.get("/v1/farms/{farm}/assign")
async def assign(request: web.Request) -> web.StreamResponse:
    refused = _limited(request)
    if refused is not None:
        return refused
    token = authenticate(request, *ASSIGN_ROLES)
    farm = _farm(request)
    _allowed(token, farm)
    key = _key(request, farm)
    chosen = _assign(request, farm, key)
    host = farm.hosts[chosen.host]
    ASSIGNMENTS.labels(farm.name, "assigned").inc()
    return json_response(
        {
            "farm": farm.name,
            "key": key if farm.spec.keyed else None,  # other farms do not use a key
            "host": host.name,
            "name": farm.host_owner(host.name),
            "a": list(host.spec.a),
            "aaaa": list(host.spec.aaaa),
            "state": farm.host_state(host, farm.clock()),
            "how": chosen.how,
            "reason": answer_reason(farm, chosen.answer),
        }
    )


@routes.get("/r/{farm}/{path:.*}")
async def redirect(request: web.Request) -> web.StreamResponse:
    refused = _limited(request)
    if refused is not None:
        return refused
    farm = _farm(request)
    template = farm.spec.redirect
    if template is None:
        raise NotFound(
            f"farm {farm.name} has no redirect URL template (farm setting redirect)", field="farm"
        )
    if not farm.spec.redirect_public:
        _allowed(authenticate(request, *ASSIGN_ROLES), farm)
    chosen = _assign(request, farm, _key(request, farm))
    location = template.format(
        host=quote(chosen.host.lower(), safe=""),
        farm=farm.name.rstrip("."),
        path=quote(request.match_info["path"], safe="/:@!$&'()*+,;=-._~"),
    )
    if request.query_string:
        location += ("&" if "?" in location else "?") + request.query_string
    ASSIGNMENTS.labels(farm.name, "redirected").inc()
    raise web.HTTPTemporaryRedirect(location)


def setup(app: web.Application) -> None:
    config = app[CONFIG]
    app[RATE_LIMIT] = RateLimit(config.assign_rate, config.assign_burst)
