"""A farm's and a host's settings, from a zone file or an API body."""

from __future__ import annotations

import ipaddress
import string
from types import MappingProxyType
from typing import Any

from lbdns import validate, yamlfile
from lbdns.validate import MAX_CAPACITY, Fail
from lbdns.zone.model import ALL_UNHEALTHY, CHECK_TYPES, REQUIRES, CheckSpec, FarmSpec, HostSpec

FARM_KEYS = {
    "ttl",
    "policy",
    "answers",
    "score",
    "watermark",
    "stale_after",
    "all_unhealthy",
    "sorry",
    "hosts",
    "cache_time",
    "split",
    # keyed farms and the redirect (parse_affinity)
    "key",
    "balance_factor",
    "redirect",
    "min_ttl",
    "herd_budget",
    "ecs",
    "check",
    "require",
}


def parse_farm(farm_name: str, body: Any, where: yamlfile.Where, fail: Fail) -> FarmSpec | None:
    """Validate a farm's settings; report problems through ``fail``."""
    from lbdns.balance.policy import POLICIES, score_weights

    if body is None:
        body = {}
    if not isinstance(body, dict):
        fail(where, "a farm must be a mapping of settings")
        return None
    for key in body:
        if key not in FARM_KEYS:
            fail(
                (*where, key),
                f"unknown farm setting (expected one of {', '.join(sorted(FARM_KEYS))})",
            )
    kwargs: dict[str, Any] = {"name": farm_name}
    ttl = body.get("ttl", 5)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= 86400:
        fail((*where, "ttl"), f"must be an integer from 0 to 86400, got {ttl!r}")
    else:
        kwargs["ttl"] = ttl
    policy = body.get("policy", FarmSpec.policy)
    if policy not in POLICIES:
        fail(
            (*where, "policy"), f"unknown policy {policy!r} (one of {', '.join(sorted(POLICIES))})"
        )
    else:
        kwargs["policy"] = policy
    answers = body.get("answers", 1)
    if isinstance(answers, bool) or not isinstance(answers, int) or not 1 <= answers <= 16:
        fail((*where, "answers"), f"must be an integer from 1 to 16, got {answers!r}")
    else:
        kwargs["answers"] = answers
    if "score" in body:
        try:
            kwargs["score"] = MappingProxyType(score_weights(body["score"]))
        except ValueError as exc:
            fail((*where, "score"), str(exc))
    for key, low, high, positive in (
        ("watermark", 0, 1e12, True),  # a score
        ("stale_after", 1, 100, False),  # report intervals
        ("cache_time", 0, 86400, True),  # seconds
    ):
        if body.get(key) is not None:
            value = validate.number(body[key], (*where, key), fail, low, high, positive=positive)
            if value is not None:
                kwargs[key] = float(value)
    split = body.get("split", 4)
    if isinstance(split, bool) or not isinstance(split, int) or not 1 <= split <= 16:
        fail((*where, "split"), f"must be an integer from 1 to 16, got {split!r}")
    else:
        kwargs["split"] = split
    min_ttl = body.get("min_ttl", FarmSpec.min_ttl)
    farm_ttl = kwargs.get("ttl", 5)
    if isinstance(min_ttl, bool) or not isinstance(min_ttl, int) or min_ttl < 0:
        fail((*where, "min_ttl"), f"must be an integer number of seconds, got {min_ttl!r}")
    elif "min_ttl" in body and min_ttl > farm_ttl:
        fail((*where, "min_ttl"), f"must not be above the farm's ttl ({farm_ttl}), got {min_ttl}")
    else:
        kwargs["min_ttl"] = min(min_ttl, farm_ttl)
    budget = body.get("herd_budget", FarmSpec.herd_budget)
    if budget is False or budget == "off":
        kwargs["herd_budget"] = None
    elif isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget <= 10:
        fail(
            (*where, "herd_budget"), f"must be a number above 0 (at most 10) or off, got {budget!r}"
        )
    else:
        kwargs["herd_budget"] = float(budget)
    if "ecs" in body:
        _parse_ecs(body["ecs"], (*where, "ecs"), fail, kwargs)
    mode = body.get("all_unhealthy", "fail-open")
    if mode not in ALL_UNHEALTHY:
        fail((*where, "all_unhealthy"), f"must be one of {', '.join(ALL_UNHEALTHY)}, got {mode!r}")
    else:
        kwargs["all_unhealthy"] = mode
    sorry = body.get("sorry")
    if mode == "sorry" and not sorry:
        fail((*where, "sorry"), "all_unhealthy: sorry needs a sorry: {a: ..., aaaa: ...} address")
    if sorry is not None:
        if not isinstance(sorry, dict) or set(sorry) - {"a", "aaaa"}:
            fail((*where, "sorry"), "must be a mapping with keys a and/or aaaa")
        else:
            try:
                kwargs["sorry_a"] = _addresses(sorry.get("a"), ipaddress.IPv4Address, "a")
                kwargs["sorry_aaaa"] = _addresses(sorry.get("aaaa"), ipaddress.IPv6Address, "aaaa")
            except ValueError as exc:
                fail((*where, "sorry"), str(exc))
    check_base = _parse_farm_check(body, where, fail, kwargs)
    hosts = body.get("hosts", {})
    if hosts is None:
        hosts = {}
    if not isinstance(hosts, dict):
        fail((*where, "hosts"), "hosts must be a mapping of host name to its settings")
        hosts = {}
    parsed = []
    for host_name, host_body in hosts.items():
        host = parse_host(
            str(host_name),
            host_body,
            (*where, "hosts", host_name),
            fail,
            "zone",
            check_base=check_base,
        )
        if host is not None:
            parsed.append(host)
    kwargs["hosts"] = tuple(parsed)
    parse_affinity(body, kwargs.get("policy", FarmSpec.policy), where, fail, kwargs)
    require = kwargs.get("require", "both")
    checks = (kwargs.get("check"), *(h.check for h in parsed))
    if require != "both" and not any(c is not None and c.probed for c in checks):
        fail((*where, "require"), f"require: {require} needs a check (farm or host 'check')")
    return FarmSpec(**kwargs)


def _parse_ecs(value: Any, where: yamlfile.Where, fail: Fail, kwargs: dict[str, Any]) -> None:
    """``ecs: off`` (answers for every client: scope 0) or ``ecs: {ipv4: 24, ipv6: 56}``."""
    if value is False or value == "off":
        kwargs["ecs_scope_v4"] = kwargs["ecs_scope_v6"] = None
        return
    if not isinstance(value, dict) or set(value) - {"ipv4", "ipv6"}:
        fail(where, "must be off or a mapping with keys ipv4 and/or ipv6 (scope prefix lengths)")
        return
    for key, limit, field_name in (("ipv4", 32, "ecs_scope_v4"), ("ipv6", 128, "ecs_scope_v6")):
        if key not in value:
            continue
        scope = value[key]
        if isinstance(scope, bool) or not isinstance(scope, int) or not 0 <= scope <= limit:
            fail((*where, key), f"must be a prefix length from 0 to {limit}, got {scope!r}")
        else:
            kwargs[field_name] = scope


def _parse_farm_check(
    body: dict[str, Any], where: yamlfile.Where, fail: Fail, kwargs: dict[str, Any]
) -> dict[str, Any] | None:
    """The farm's ``check`` and ``require`` into ``kwargs``; returns the raw check mapping the
    hosts' own ``check`` keys override (None when the farm has no valid check)."""
    require = body.get("require", "both")
    if require not in REQUIRES:
        fail((*where, "require"), f"must be one of {', '.join(REQUIRES)}, got {require!r}")
    else:
        kwargs["require"] = require
    if body.get("check") is None:
        return None
    check = parse_check(body["check"], (*where, "check"), fail)
    if check is None:
        return None
    kwargs["check"] = check
    raw = body["check"]
    return dict(raw) if isinstance(raw, dict) else None


CHECK_KEYS = (
    "type",
    "port",
    "path",
    "expect_status",
    "expect_body",
    "host_header",
    "interval",
    "timeout",
    "rise",
    "fall",
    "quorum",
)
HTTP_ONLY = ("path", "expect_status", "expect_body")
NO_CHECK = CheckSpec(type="none")


def parse_check(
    value: Any, where: yamlfile.Where, fail: Fail, base: dict[str, Any] | None = None
) -> CheckSpec | None:
    """Validate a ``check`` mapping (over the farm's ``base`` keys, for a host's own check);
    ``false`` or ``{type: none}`` turns probing off. None when invalid (reported via ``fail``)."""
    if value is False or value == "none":
        return NO_CHECK
    if not isinstance(value, dict):
        fail(where, "check must be a mapping (type, port, ...) or false")
        return None
    ok = True
    for key in value:
        if key not in CHECK_KEYS:
            fail((*where, key), f"unknown check setting (expected one of {', '.join(CHECK_KEYS)})")
            ok = False
    merged = {**(base or {}), **value}
    kind = merged.get("type", "tcp")
    if kind not in CHECK_TYPES:
        fail((*where, "type"), f"must be one of {', '.join(CHECK_TYPES)}, got {kind!r}")
        return None
    if kind == "none":
        return NO_CHECK if ok else None
    kwargs: dict[str, Any] = {"type": kind}
    port = merged.get("port")
    if port is None:
        if kind in ("tcp", "tls"):
            fail(where, f"a {kind} check needs a port")
            ok = False
    elif isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        fail((*where, "port"), f"must be an integer from 1 to 65535, got {port!r}")
        ok = False
    else:
        kwargs["port"] = port
    if kind not in ("http", "https"):
        for key in HTTP_ONLY:
            if key in value:
                fail((*where, key), f"applies to http and https checks only, not {kind}")
                ok = False
    else:
        path = merged.get("path", "/")
        if not isinstance(path, str) or not path.startswith("/") or _unsafe(path):
            fail((*where, "path"), f"must be a path starting with '/' without spaces, got {path!r}")
            ok = False
        else:
            kwargs["path"] = path
        status = merged.get("expect_status")
        if status is not None:
            items = status if isinstance(status, list) else [status]
            if not items or not all(
                isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599 for s in items
            ):
                fail(
                    (*where, "expect_status"),
                    f"must be an HTTP status (100-599) or a list of them, got {status!r}",
                )
                ok = False
            else:
                kwargs["expect_status"] = tuple(items)
        body = merged.get("expect_body")
        if body is not None:
            if not isinstance(body, str) or not 0 < len(body) <= 1024:
                fail((*where, "expect_body"), f"must be text of 1 to 1024 characters, got {body!r}")
                ok = False
            else:
                kwargs["expect_body"] = body
    host_header = merged.get("host_header")
    if host_header is not None:
        if kind == "tcp":
            fail((*where, "host_header"), "applies to http, https and tls checks only, not tcp")
            ok = False
        elif (
            not isinstance(host_header, str)
            or not 0 < len(host_header) <= 255
            or _unsafe(host_header)
        ):
            fail((*where, "host_header"), f"must be a host name, got {host_header!r}")
            ok = False
        else:
            kwargs["host_header"] = host_header
    interval = merged.get("interval", CheckSpec.interval)
    if _not_number(interval) or not 0.05 <= interval <= 3600:
        fail((*where, "interval"), f"must be seconds from 0.05 to 3600, got {interval!r}")
        ok = False
        interval = CheckSpec.interval
    else:
        kwargs["interval"] = float(interval)
    timeout = merged.get("timeout", min(CheckSpec.timeout, float(interval)))
    if _not_number(timeout) or not 0 < timeout <= 60:
        fail((*where, "timeout"), f"must be seconds from 0 to 60, got {timeout!r}")
        ok = False
    elif timeout > interval:
        # One probe per address at a time: a timeout past the interval would stretch it.
        fail((*where, "timeout"), f"must not exceed the interval ({interval:g} s), got {timeout!r}")
        ok = False
    else:
        kwargs["timeout"] = float(timeout)
    for key in ("rise", "fall"):
        count = merged.get(key, getattr(CheckSpec, key))
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 100:
            fail((*where, key), f"must be an integer from 1 to 100, got {count!r}")
            ok = False
        else:
            kwargs[key] = count
    quorum = merged.get("quorum", "majority")
    if quorum != "majority":
        if isinstance(quorum, bool) or not isinstance(quorum, int) or not 1 <= quorum <= 64:
            fail((*where, "quorum"), f"must be majority or a number of servers, got {quorum!r}")
            ok = False
        else:
            kwargs["quorum"] = quorum
    return CheckSpec(**kwargs) if ok else None


def _not_number(value: Any) -> bool:
    return isinstance(value, bool) or not isinstance(value, (int, float))


def _unsafe(text: str) -> bool:
    # Header and request-line injection: no whitespace or control characters.
    return any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text)


HOST_KEYS = {"a", "aaaa", "capacity", "labels", "check"}


def parse_host(
    host_name: str,
    body: Any,
    where: yamlfile.Where,
    fail: Fail,
    source: str,
    *,
    check_base: dict[str, Any] | None = None,
) -> HostSpec | None:
    """Validate one host's settings (zone file or API body); report problems through ``fail``."""
    ok = True
    if not check_host_name(host_name):
        fail(where, "host names are 1-63 letters, digits, '-', '_' or '.'")
        ok = False
    if not isinstance(body, dict):
        fail(where, "a host must be a mapping with a and/or aaaa and capacity")
        return None
    for key in body:
        if key not in HOST_KEYS:
            fail(
                (*where, key),
                f"unknown host setting (expected one of {', '.join(sorted(HOST_KEYS))})",
            )
            ok = False
    addresses = {}
    for key, cls in (("a", ipaddress.IPv4Address), ("aaaa", ipaddress.IPv6Address)):
        try:
            addresses[key] = _addresses(body.get(key), cls, key)
        except ValueError as exc:
            fail((*where, key), str(exc))
            ok = False
    if ok and not addresses["a"] and not addresses["aaaa"]:
        fail(where, "a host needs an a or aaaa address")
        ok = False
    capacity = validate.number(
        body.get("capacity", 1), (*where, "capacity"), fail, 0, MAX_CAPACITY, positive=True
    )
    labels = validate.labels(body.get("labels"), (*where, "labels"), fail)
    if capacity is None or labels is None:
        ok = False
    check = None
    if body.get("check") is not None:
        if source != "zone":
            fail((*where, "check"), "checks are set in the zone file (API hosts use the farm's)")
            ok = False
        else:
            check = parse_check(body["check"], (*where, "check"), fail, base=check_base)
            ok = ok and check is not None
    if not ok:
        return None
    return HostSpec(
        name=host_name,
        a=addresses["a"],
        aaaa=addresses["aaaa"],
        capacity=float(capacity),
        labels=MappingProxyType(labels),
        source=source,
        check=check,
    )


def check_host_name(host_name: str) -> bool:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
    return 0 < len(host_name) <= 63 and set(host_name) <= allowed


def _addresses(value: Any, cls, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        try:
            out.append(str(cls(str(item))))
        except ValueError:
            family = "IPv4" if key == "a" else "IPv6"
            # The caller names the key in the error's path: the message says only what is wrong.
            raise ValueError(f"{item!r} is not an {family} address") from None
    return tuple(out)


KEY_KINDS = ("label", "client-subnet")
REDIRECT_FIELDS = ("host", "farm", "path")


def parse_affinity(
    body: dict[str, Any], policy: str, where: yamlfile.Where, fail: Fail, kwargs: dict[str, Any]
) -> None:
    """The settings of keyed farms (``key``, ``balance_factor``) and of the redirect form of
    the assignment API (``redirect``), into ``kwargs``."""
    keyed = policy == "consistent-hash"
    for name in ("key", "balance_factor"):
        if name in body and not keyed:
            fail((*where, name), f"{name} needs policy: consistent-hash")
    if keyed and "key" in body:
        key = validate.choice(body["key"], (*where, "key"), fail, KEY_KINDS)
        if key is not None:
            kwargs["key"] = key
    if keyed and "balance_factor" in body:
        factor = validate.number(body["balance_factor"], (*where, "balance_factor"), fail, 1, 100)
        if factor is not None:
            kwargs["balance_factor"] = float(factor)
    if "redirect" not in body:
        return
    redirect = body["redirect"]
    public: bool | None = False
    if isinstance(redirect, dict):
        validate.known_keys(redirect, (*where, "redirect"), fail, {"url", "public"}, "redirect")
        public = validate.boolean(
            redirect.get("public", False), (*where, "redirect", "public"), fail
        )
        redirect = redirect.get("url")
    if not isinstance(redirect, str) or not redirect.startswith(("http://", "https://")):
        fail(
            (*where, "redirect"),
            "must be an http:// or https:// URL template like "
            f"https://{{host}}.chat.example.com/{{path}}, got {redirect!r}",
        )
        return
    try:
        parts = [p for p in string.Formatter().parse(redirect) if p[1] is not None]
    except ValueError as exc:
        fail((*where, "redirect"), f"bad URL template: {exc}")
        return
    fields = [name for _, name, _, _ in parts]
    if any(spec or conversion for _, _, spec, conversion in parts):
        fail((*where, "redirect"), "placeholders are plain {host}, {farm} and {path}")
        return
    for name in fields:
        if name not in REDIRECT_FIELDS:
            fail(
                (*where, "redirect"),
                f"unknown placeholder {{{name}}} (expected {{host}}, {{farm}} or {{path}})",
            )
            return
    if "host" not in fields:
        fail((*where, "redirect"), "the URL template needs {host}: where the client is sent")
        return
    kwargs["redirect"] = redirect
    kwargs["redirect_public"] = bool(public)
