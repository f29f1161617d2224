"""Reports in: ``POST /v1/report`` (one host) and ``POST /v1/reports`` (a batch), and
``GET /v1/farms/{farm}/explain``.

A report (docs/balancing.md has the reference)::

    {"farm": "chat.example.test.", "host": "web1", "seq": 42, "interval": 1.0,
     "healthy": true, "metrics": {"connections": 1234, "accepted": 99120, "cpu": 0.42}}

Validation is strict and names the field: ``metrics.connections must be a non-negative
number``. Unknown farm or host: 404. A ``seq`` not newer than the last one is ignored (the reply
says so, HTTP 200). The reply tells the host the state the server sees for it, its score, and
``advice`` (null unless the server gives advice).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import Counter

from lbdns.auth import Token
from lbdns.balance.capacity import advice_reply
from lbdns.balance.explain import farm_explanation
from lbdns.balance.farm import Farm
from lbdns.balance.host import Host, Report, score
from lbdns.errors import Forbidden, NotFound, RequestError
from lbdns.validate import MAX_METRICS, METRIC_NAME, METRIC_NAME_RULE, is_number
from lbdns.web.base import CONFIG, REGISTRY, STORE, authenticate, json_response, read_json

routes = web.RouteTableDef()

MAX_REPORT_BODY = 64 * 1024  # bytes of one report
MAX_BATCH = 1000  # reports in one batch
MAX_INTERVAL = 3600.0
REPORT_KEYS = frozenset({"farm", "host", "seq", "interval", "healthy", "metrics"})


def parse_report(data: Any, where: str = "") -> dict[str, Any]:
    """Validate one report body; raise ``RequestError`` naming the field (prefixed ``where``)."""
    if not isinstance(data, dict):
        raise RequestError(f"{where or 'body'} must be a JSON object", field=where or None)
    for key in data:
        if key not in REPORT_KEYS:
            raise RequestError(
                f"{where}{key} is not a report field (expected {', '.join(sorted(REPORT_KEYS))})",
                field=f"{where}{key}",
            )
    out: dict[str, Any] = {}
    for key in ("farm", "host"):
        value = data.get(key)
        if not isinstance(value, str) or not value or len(value) > 255:
            raise RequestError(f"{where}{key} must be a non-empty string", field=f"{where}{key}")
        out[key] = value
    seq = data.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**63:
        raise RequestError(f"{where}seq must be a non-negative integer", field=f"{where}seq")
    out["seq"] = seq
    interval = data.get("interval", 1.0)
    if not is_number(interval) or not 0 < interval <= MAX_INTERVAL:
        raise RequestError(
            f"{where}interval must be a number of seconds above 0 and at most {MAX_INTERVAL:g}",
            field=f"{where}interval",
        )
    out["interval"] = float(interval)
    healthy = data.get("healthy", True)
    if not isinstance(healthy, bool):
        raise RequestError(f"{where}healthy must be true or false", field=f"{where}healthy")
    out["healthy"] = healthy
    metrics = data.get("metrics", {})
    if not isinstance(metrics, dict):
        raise RequestError(
            f"{where}metrics must be an object of metric name to number", field=f"{where}metrics"
        )
    if len(metrics) > MAX_METRICS:
        raise RequestError(
            f"{where}metrics has more than {MAX_METRICS} entries", field=f"{where}metrics"
        )
    parsed = {}
    for name, value in metrics.items():
        field = f"{where}metrics.{name}"
        if not METRIC_NAME.match(name):
            raise RequestError(
                f"{field}: {METRIC_NAME_RULE}",
                field=field,
            )
        if not is_number(value) or value < 0:
            raise RequestError(f"{field} must be a non-negative number", field=field)
        parsed[name] = float(value)
    out["metrics"] = parsed
    return out


# Reports taken, by result and reason: accepted/ok, ignored/old_seq, rejected/(invalid,
# unauthenticated, forbidden, unknown_farm, unknown_host, too_large, store_unavailable).
# Counted here, where each outcome is decided; /metrics registers the counter.
OUTCOMES = Counter(
    "lbdns_ingest_reports",
    "Host reports received, by result and reason.",
    ["result", "reason"],
    registry=None,
)
REJECTED = {
    400: "invalid",
    401: "unauthenticated",
    403: "forbidden",
    408: "invalid",
    413: "too_large",
    503: "store_unavailable",
}


def _count(result: str, reason: str = "ok", n: int = 1) -> None:
    if n:
        OUTCOMES.labels(result, reason).inc(n)


def _count_applied(applied: bool) -> None:
    if applied:
        _count("accepted")
    else:
        _count("ignored", "old_seq")


def _rejected_reason(status: int, field: str | None) -> str:
    if status == 404:
        return "unknown_host" if (field or "").endswith("host") else "unknown_farm"
    return REJECTED.get(status, "error")


def _counted(handler: Callable[[web.Request], Awaitable[web.Response]]):
    """Count a request refused as a whole (every report in it) as rejected, with the reason its
    status gives."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except RequestError as exc:
            _count("rejected", _rejected_reason(exc.status, exc.field))
            raise
        except web.HTTPException as exc:
            _count("rejected", _rejected_reason(exc.status, None))
            raise

    return wrapper


def _find(request: web.Request, item: dict[str, Any], where: str) -> tuple[Farm, Host]:
    registry = request.app[REGISTRY]
    farm = registry.farm(item["farm"])
    if farm is None:
        raise NotFound(f"{where}farm: no farm named {item['farm']!r}", field=f"{where}farm")
    host = farm.hosts.get(item["host"])
    if host is None:
        raise NotFound(
            f"{where}host: farm {farm.name} has no host named {item['host']!r}",
            field=f"{where}host",
        )
    return farm, host


def _allowed(token: Token, farm: Farm, host: Host, where: str) -> None:
    if not token.allows_host(farm.name, host.name):
        scope = f"host {token.host}" if token.host else "its farms"
        raise Forbidden(
            f"{where}token {token.name!r} may report for {scope} only, not {host.name} "
            f"of {farm.name}"
        )


def _report(farm: Farm, item: dict) -> Report:
    return Report(
        seq=item["seq"],
        received=farm.clock(),
        interval=item["interval"],
        healthy=item["healthy"],
        metrics=item["metrics"],
    )


def _reply(request: web.Request, farm: Farm, host: Host, item: dict, applied: bool) -> dict:
    now = farm.clock()
    reply: dict[str, Any] = {
        "farm": farm.name,
        "host": host.name,
        "applied": applied,
        "state": farm.host_state(host, now),
        "score": score(host.report, farm.spec.score, host.spec.capacity),
        "advice": advice_reply(farm, host) if request.app[CONFIG].advice else None,
    }
    if not applied:
        last = host.report.seq if host.report is not None else None
        reply["ignored"] = f"seq {item['seq']} is not newer than the last accepted seq {last}"
    return reply


def _check_size(request: web.Request, limit: int) -> None:
    length = request.content_length
    if length is not None and length > limit:
        raise RequestError(f"body is {length} bytes, more than the {limit} allowed", status=413)


@routes.post("/v1/report")
@_counted
async def post_report(request: web.Request) -> web.Response:
    token = authenticate(request, "report")
    _check_size(request, MAX_REPORT_BODY)
    item = parse_report(await read_json(request))
    farm, host = _find(request, item, "")
    _allowed(token, farm, host, "")
    applied = await request.app[STORE].report(farm, host, _report(farm, item))
    _count_applied(applied)
    return json_response(_reply(request, farm, host, item, applied))


@routes.post("/v1/reports")
@_counted
async def post_reports(request: web.Request) -> web.Response:
    """A batch: ``{"reports": [report, ...]}``. Validated as a whole (400/403 name the item);
    unknown farms or hosts are per-item errors so one removed host does not drop the rest."""
    token = authenticate(request, "report")
    _check_size(request, request.app[CONFIG].max_body)
    body = await read_json(request)
    if not isinstance(body, dict) or set(body) != {"reports"}:
        raise RequestError('body must be {"reports": [...]}', field="reports")
    items = body["reports"]
    if not isinstance(items, list):
        raise RequestError("reports must be a list of reports", field="reports")
    if len(items) > MAX_BATCH:
        raise RequestError(f"reports has more than {MAX_BATCH} items", field="reports")
    parsed = [parse_report(item, f"reports[{i}].") for i, item in enumerate(items)]
    found: list[tuple[Farm, Host] | NotFound] = []
    for i, item in enumerate(parsed):
        try:
            farm, host = _find(request, item, f"reports[{i}].")
        except NotFound as exc:
            found.append(exc)
            continue
        _allowed(token, farm, host, f"reports[{i}]: ")
        found.append((farm, host))
    batch = [
        (target[0], target[1], _report(target[0], item))
        for item, target in zip(parsed, found, strict=True)
        if not isinstance(target, NotFound)
    ]
    applied = iter(await request.app[STORE].reports(batch))
    results = []
    for item, target in zip(parsed, found, strict=True):
        if isinstance(target, NotFound):
            _count("rejected", _rejected_reason(404, target.field))
            results.append(
                {
                    "farm": item["farm"],
                    "host": item["host"],
                    "applied": False,
                    "status": 404,
                    "error": target.reason,
                }
            )
            continue
        farm, host = target
        was_applied = next(applied)
        _count_applied(was_applied)
        results.append(_reply(request, farm, host, item, was_applied))
    return json_response({"applied": sum(1 for r in results if r["applied"]), "results": results})


@routes.get("/v1/farms/{farm}/explain")
async def explain(request: web.Request) -> web.Response:
    token = authenticate(request, "read")
    farm = request.app[REGISTRY].farm(request.match_info["farm"])
    if farm is None:
        raise NotFound(f"no farm named {request.match_info['farm']!r}", field="farm")
    if not token.allows_farm(farm.name):
        raise Forbidden(f"token {token.name!r} may not read farm {farm.name}")
    return json_response(farm_explanation(farm))
