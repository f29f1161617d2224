"""The admin API: read zones and farms, change hosts, drain them, reload the zone files.

Every change goes through the store (which persists it and applies it to the registry, so the
next query sees it) and is logged with the token's name and what it did. docs/api.md documents
each endpoint; lbdns/openapi.json describes them all.

Who may do what:

* ``admin`` tokens (and loopback clients when no token is configured): everything;
* ``read`` tokens: the GET endpoints;
* ``register`` tokens: read their farms, add a host whose addresses lie inside their
  ``networks`` (labelled ``source: registered``), and drain, enable or remove such hosts.

Every token is limited to its ``farms`` when it lists some.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from importlib import resources
from types import MappingProxyType
from typing import Any

from aiohttp import web

from lbdns.auth import Token
from lbdns.balance.capacity import farm_load
from lbdns.balance.drain import DEFAULT_GRACE, DrainOptions, drain_status
from lbdns.balance.explain import check_brief, check_detail
from lbdns.balance.farm import Farm
from lbdns.balance.host import Host
from lbdns.errors import Conflict, Forbidden, NotFound, RequestError, ZoneErrors
from lbdns.web.base import CONFIG, REGISTRY, SERVER, STORE, authenticate, json_response, read_json
from lbdns.zone.model import HostSpec
from lbdns.zone.settings import check_host_name, parse_host

log = logging.getLogger("lbdns.admin")

routes = web.RouteTableDef()

READ_ROLES = ("read", "register")
ACTIONS = ("drain", "enable", "disable")
MAX_GRACE = 86400.0


# -- helpers --------------------------------------------------------------------------------


def _now(request: web.Request) -> float:
    return request.app[REGISTRY].clock()


def _farm(request: web.Request, token: Token) -> Farm:
    name = request.match_info["farm"]
    farm = request.app[REGISTRY].farm(name)
    if farm is None:
        served = [f for f in sorted(request.app[REGISTRY].farms) if token.allows_farm(f)]
        listed = ", ".join(served[:5]) + (", ..." if len(served) > 5 else "")
        raise NotFound(f"no farm {name!r} is served (farms: {listed or 'none'})", field="farm")
    if not token.allows_farm(farm.name):
        raise Forbidden(f"token {token.name!r} is not allowed farm {farm.name}")
    return farm


def _host(farm: Farm, name: str) -> Host:
    host = farm.hosts.get(name)
    if host is None:
        raise NotFound(f"farm {farm.name} has no host {name!r}", field="host")
    return host


def _registered_scope(token: Token, farm: Farm, spec: HostSpec, verb: str) -> None:
    """A register token may only touch hosts it could have registered itself."""
    if token.role != "register":
        return
    if spec.source != "registered":
        raise Forbidden(
            f"token {token.name!r} (role register) may only {verb} hosts added with a "
            f"register token; {spec.name} comes from the {spec.source}"
        )
    _check_networks(token, spec)


def _check_networks(token: Token, spec: HostSpec) -> None:
    for key, addresses in (("a", spec.a), ("aaaa", spec.aaaa)):
        for address in addresses:
            if not token.allows_address(address):
                networks = ", ".join(str(n) for n in token.networks)
                raise RequestError(
                    f"{key}: {address} is outside the networks of token {token.name!r} "
                    f"({networks})",
                    status=403,
                    field=key,
                )


def _changed(request: web.Request, token: Token, what: str, **fields: Any) -> None:
    log.info(
        "change by %s from %s: %s",
        token.name,
        request.remote,
        what,
        extra={"fields": {"token": token.name, "remote": request.remote, **fields}},
    )


def host_json(registry, farm: Farm, host: Host, now: float) -> dict[str, Any]:
    """A host as the API shows it."""
    view = farm.view()
    drain = drain_status(farm, host, now)
    state = farm.host_state(host, now)
    report = host.report
    return {
        "name": host.name,
        "a": list(host.spec.a),
        "aaaa": list(host.spec.aaaa),
        "capacity": host.spec.capacity,
        "labels": dict(host.spec.labels),
        "source": host.spec.source,
        "state": state,
        "admin": host.admin,
        "score": view.scores.get(host.name),
        "report_age": None if report is None else round(max(0.0, now - report.received), 3),
        "report": None if report is None else report.to_json(),
        "answers": host.answers,
        "last_answered": host.last_answered or None,
        "drain": None if drain is None else drain.to_json(),
    }


def farm_json(request: web.Request, farm: Farm, hosts: bool) -> dict[str, Any]:
    now = _now(request)
    zone = request.app[REGISTRY].zone_of(farm.name)
    body: dict[str, Any] = {
        "name": farm.name,
        "zone": zone.origin if zone else None,
        "ttl": farm.spec.ttl,
        "policy": farm.spec.policy,
        "answers": farm.spec.answers,
        "score": dict(farm.spec.score),
        "all_unhealthy": farm.spec.all_unhealthy,
    }
    if farm.spec.keyed:  # keyed farms and the assignment API's redirect (lbdns.web.assign)
        body["key"] = farm.spec.key
        body["balance_factor"] = farm.spec.balance_factor
    if farm.spec.redirect is not None:
        body["redirect"] = {"url": farm.spec.redirect, "public": farm.spec.redirect_public}
    host_list = [host_json(request.app[REGISTRY], farm, h, now) for h in farm.hosts.values()]
    for item, host in zip(host_list, farm.hosts.values(), strict=True):
        item["reason"] = farm.state_and_reason(host, now)[1]
        item["check"] = check_brief(farm, host, now)
    states: dict[str, int] = {}
    for item in host_list:
        states[item["state"]] = states.get(item["state"], 0) + 1
    body["states"] = states
    body["scale"] = farm_load(farm, now, request.app[CONFIG].scale_target).to_json()
    if hosts:
        body["hosts"] = host_list
    return body


def parse_selector(value: Any) -> dict[str, str]:
    """A label selector: ``role=web,zone=a`` or ``{"role": "web", "zone": "a"}`` (all must match)."""
    if isinstance(value, dict):
        if not value or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise RequestError(
                "selector must be a non-empty object of label name to value", field="selector"
            )
        return dict(value)
    if not isinstance(value, str) or not value.strip():
        raise RequestError("selector is required, e.g. ?selector=role=web,zone=a", field="selector")
    selector = {}
    for part in value.split(","):
        key, sep, label = part.partition("=")
        if not sep or not key.strip():
            raise RequestError(f"selector item {part!r} is not label=value", field="selector")
        selector[key.strip()] = label.strip()
    return selector


def _matches(spec: HostSpec, selector: dict[str, str]) -> bool:
    return all(spec.labels.get(k) == v for k, v in selector.items())


def _float_option(raw: Any, field: str, default: float, high: float) -> float:
    if raw is None:
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise RequestError(f"must be a number, got {raw!r}", field=field) from None
    if isinstance(raw, bool) or not 0 <= value <= high:
        raise RequestError(f"must be a number from 0 to {high:g}, got {raw!r}", field=field)
    return value


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    body = await read_json(request)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise RequestError("body must be a JSON object", field="body")
    return body


def _drain_options(request: web.Request, body: dict[str, Any]) -> DrainOptions:
    query = request.query
    unknown = sorted(set(body) - {"threshold", "grace", "selector", "force"})
    if unknown:
        raise RequestError(
            f"{unknown[0]}: unknown field (expected threshold, grace, selector, force)",
            field=unknown[0],
        )
    return DrainOptions(
        threshold=_float_option(
            body.get("threshold", query.get("threshold")), "threshold", 0.0, 1e12
        ),
        grace=_float_option(
            body.get("grace", query.get("grace")), "grace", DEFAULT_GRACE, MAX_GRACE
        ),
        given=frozenset(k for k in ("threshold", "grace") if body.get(k, query.get(k)) is not None),
    )


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).lower() in ("1", "true", "yes", "on")


async def _act(
    request: web.Request, token: Token, farm: Farm, host: Host, action: str, options: DrainOptions
) -> None:
    if action == "disable" and token.role == "register":
        raise Forbidden(f"token {token.name!r} (role register) may not disable hosts")
    _registered_scope(token, farm, host.spec, action)
    admin = {"drain": "draining", "enable": "enabled", "disable": "disabled"}[action]
    if admin == "draining" and host.admin == "draining":
        # Draining again only changes the options it names; the drain keeps its start.
        started = host.drain_started or _now(request)
        options = options.over(host.drain or DrainOptions())
        await request.app[STORE].set_admin(farm, host, admin, started, options)
        return
    await request.app[STORE].set_admin(farm, host, admin, _now(request), options)


async def _remove(request: web.Request, token: Token, farm: Farm, host: Host, force: bool) -> None:
    _registered_scope(token, farm, host.spec, "remove")
    if not force:
        now = _now(request)
        drain = drain_status(farm, host, now)
        if drain is None:
            raise Conflict(
                f"{host.name} is {farm.host_state(host, now)}, not drained: drain it first "
                f"(POST /v1/farms/{farm.name}/hosts/{host.name}/drain) or add ?force=true",
                field="host",
            )
        if not drain.done:
            raise Conflict(
                f"{host.name} is still draining: {'; '.join(drain.waiting_for)} "
                f"(add ?force=true to remove it now)",
                field="host",
            )
    await request.app[STORE].remove_host(farm, host.name)


# -- reads ----------------------------------------------------------------------------------


@routes.get("/v1/zones")
async def list_zones(request: web.Request) -> web.Response:
    authenticate(request, *READ_ROLES)
    zones = [
        {
            "origin": zone.origin,
            "source": zone.source,
            "serial": zone.serial,
            "ttl": zone.ttl,
            "farms": sorted(zone.farms),
            "digest": zone.digest,
        }
        for zone in request.app[REGISTRY].zones.values()
    ]
    return json_response({"zones": sorted(zones, key=lambda z: z["origin"])})


@routes.get("/v1/farms")
async def list_farms(request: web.Request) -> web.Response:
    token = authenticate(request, *READ_ROLES)
    farms = [
        farm_json(request, farm, hosts=False)
        for name, farm in sorted(request.app[REGISTRY].farms.items())
        if token.allows_farm(name)
    ]
    return json_response({"farms": farms})


@routes.get("/v1/farms/{farm}")
async def show_farm(request: web.Request) -> web.Response:
    token = authenticate(request, *READ_ROLES)
    return json_response(farm_json(request, _farm(request, token), hosts=True))


@routes.get("/v1/farms/{farm}/hosts/{host}")
async def show_host(request: web.Request) -> web.Response:
    token = authenticate(request, *READ_ROLES)
    farm = _farm(request, token)
    host = _host(farm, request.match_info["host"])
    now = _now(request)
    body = host_json(request.app[REGISTRY], farm, host, now)
    body.update(check_fields(farm, host, now))
    return json_response(body)


def check_fields(farm: Farm, host: Host, now: float) -> dict[str, Any]:
    """The health-check part of a host's JSON: why it is in its state, and its checks."""
    _, reason = farm.state_and_reason(host, now)
    return {"reason": reason, "check": check_detail(farm, host, now)}


# -- changes of one host ---------------------------------------------------------------------


@routes.put("/v1/farms/{farm}/hosts/{host}")
async def put_host(request: web.Request) -> web.Response:
    token = authenticate(request, "register")
    farm = _farm(request, token)
    name = request.match_info["host"]
    if not check_host_name(name):
        raise RequestError("host names are 1-63 letters, digits, '-', '_' or '.'", field="host")
    body = await read_json(request)
    if not isinstance(body, dict):
        raise RequestError(
            "body must be a JSON object with a and/or aaaa, capacity, labels", field="body"
        )
    errors: list[tuple[str, str]] = []

    def fail(where: tuple, reason: str) -> None:
        errors.append((".".join(str(p) for p in where) or "a", reason))

    source = "registered" if token.role == "register" else "api"
    spec = parse_host(name, body, (), fail, source)
    if errors or spec is None:
        field = errors[0][0] if errors else "body"
        reason = (
            "; ".join(r if r.startswith(f"{f}:") else f"{f}: {r}" for f, r in errors)
            or "invalid host"
        )
        raise RequestError(reason, field=field)
    existing = farm.hosts.get(name)
    if token.role == "register":
        if existing is not None:
            _registered_scope(token, farm, existing.spec, "change")
        spec = HostSpec(
            name=spec.name,
            a=spec.a,
            aaaa=spec.aaaa,
            capacity=spec.capacity,
            labels=MappingProxyType({**spec.labels, "source": "registered"}),
            source="registered",
        )
        _check_networks(token, spec)
    host = await request.app[STORE].put_host(farm, spec)
    _changed(
        request,
        token,
        f"{'changed' if existing else 'added'} host {name} of {farm.name}: "
        f"a={','.join(spec.a) or '-'} aaaa={','.join(spec.aaaa) or '-'} "
        f"capacity={spec.capacity:g} labels={dict(spec.labels)}",
        farm=farm.name,
        host=name,
        action="change" if existing else "add",
    )
    return json_response(
        host_json(request.app[REGISTRY], farm, host, _now(request)), status=200 if existing else 201
    )


@routes.delete("/v1/farms/{farm}/hosts/{host}")
async def delete_host(request: web.Request) -> web.Response:
    token = authenticate(request, "register")
    farm = _farm(request, token)
    host = _host(farm, request.match_info["host"])
    force = _truthy(request.query.get("force", "false"))
    await _remove(request, token, farm, host, force)
    _changed(
        request,
        token,
        f"removed host {host.name} of {farm.name}{' (forced)' if force else ''}",
        farm=farm.name,
        host=host.name,
        action="remove",
    )
    return json_response({"removed": [host.name], "farm": farm.name})


@routes.post("/v1/farms/{farm}/hosts/{host}/{action}")
async def host_action(request: web.Request) -> web.Response:
    token = authenticate(request, "register")
    action = request.match_info["action"]
    if action not in ACTIONS:
        raise NotFound(f"unknown action {action!r} (one of {', '.join(ACTIONS)})", field="action")
    farm = _farm(request, token)
    host = _host(farm, request.match_info["host"])
    options = _drain_options(request, await _body(request))
    await _act(request, token, farm, host, action, options)
    options = host.drain or options  # after a re-drain: the options now in force
    detail = f" (threshold {options.threshold:g}, grace {options.grace:g} s)"
    _changed(
        request,
        token,
        f"{action} host {host.name} of {farm.name}{detail if action == 'drain' else ''}",
        farm=farm.name,
        host=host.name,
        action=action,
    )
    now = _now(request)
    body = host_json(request.app[REGISTRY], farm, host, now)
    body.update(check_fields(farm, host, now))
    return json_response(body)


# -- changes by label selector ---------------------------------------------------------------


@routes.post("/v1/farms/{farm}/hosts:{action}")
async def selector_action(request: web.Request) -> web.Response:
    token = authenticate(request, "register")
    action = request.match_info["action"]
    if action not in (*ACTIONS, "remove"):
        raise NotFound(
            f"unknown action {action!r} (one of drain, enable, disable, remove)", field="action"
        )
    farm = _farm(request, token)
    body = await _body(request)
    selector = parse_selector(body.get("selector", request.query.get("selector")))
    options = _drain_options(request, body)
    force = _truthy(body.get("force", request.query.get("force", "false")))
    hosts = [h for h in farm.hosts.values() if _matches(h.spec, selector)]
    written = ",".join(f"{k}={v}" for k, v in selector.items())  # as the user wrote it
    if not hosts:
        raise NotFound(f"no host of {farm.name} matches the selector {written}", field="selector")
    # Check every host first so that a refusal changes nothing.
    for host in hosts:
        _registered_scope(token, farm, host.spec, action)
        if action == "remove" and not force:
            now = _now(request)
            drain = drain_status(farm, host, now)
            if drain is None or not drain.done:
                raise Conflict(
                    f"{host.name} is not drained; drain the hosts first or add force=true",
                    field="selector",
                )
    names = [h.name for h in hosts]
    for host in hosts:
        if action == "remove":
            await _remove(request, token, farm, host, force=True)
        else:
            await _act(request, token, farm, host, action, options)
    _changed(
        request,
        token,
        f"{action} hosts {', '.join(names)} of {farm.name} (selector {written})",
        farm=farm.name,
        hosts=names,
        action=action,
    )
    now = _now(request)
    if action == "remove":
        return json_response({"removed": names, "farm": farm.name})
    return json_response(
        {
            "farm": farm.name,
            "hosts": [host_json(request.app[REGISTRY], farm, h, now) for h in hosts],
        }
    )


# -- zones ----------------------------------------------------------------------------------


@routes.post("/v1/reload")
async def reload(request: web.Request) -> web.Response:
    token = authenticate(request)
    server = request.app[SERVER]
    before = {z.origin: z.serial for z in request.app[REGISTRY].zones.values()}
    try:
        result = server.reload()
    except ZoneErrors as exc:
        errors = [
            {"file": e.source, "where": e.path, "reason": e.reason, "message": str(e)}
            for e in exc.errors
        ]
        log.error(
            "reload by %s failed, the old zones keep serving:\n%s",
            token.name,
            exc,
            extra={"fields": {"token": token.name, "action": "reload", "errors": len(errors)}},
        )
        return json_response(
            {
                "error": f"reload failed, the old zones keep serving: {exc.errors[0]}",
                "status": 422,
                "errors": errors,
            },
            status=422,
        )
    changed = sorted(
        origin for origin, info in result["zones"].items() if before.get(origin) != info["serial"]
    )
    _changed(request, token, f"reloaded zones (changed: {', '.join(changed) or 'none'})")
    return json_response({**result, "changed": changed})


# -- the API description --------------------------------------------------------------------


@routes.get("/v1/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    text = resources.files("lbdns").joinpath("openapi.json").read_text()
    return web.Response(text=text, content_type="application/json")


# -- drain watch ----------------------------------------------------------------------------


async def _watch_drains(app: web.Application) -> AsyncIterator[None]:
    """Log each drain once it completes (the state itself is computed when it is read)."""
    server = app[SERVER]

    async def watch() -> None:
        logged: set[tuple[str, str, float]] = set()
        while True:
            await asyncio.sleep(1.0)
            now = app[REGISTRY].clock()
            current = set()
            for farm in list(app[REGISTRY].farms.values()):
                for host in list(farm.hosts.values()):
                    key = (farm.name, host.name, host.drain_started or 0.0)
                    status = drain_status(farm, host, now)
                    if status is None or not status.done:
                        continue
                    current.add(key)
                    if key not in logged:
                        log.info(
                            "host %s of %s is drained after %.1f s",
                            host.name,
                            farm.name,
                            status.running_for,
                        )
            logged = current

    task = server.spawn(watch())
    yield
    task.cancel()


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_watch_drains)
