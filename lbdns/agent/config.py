"""The agent's config: one frozen ``AgentConfig`` from a YAML file (agents/agent.example.yaml).

Every key is documented in docs/agent.md and in the example. Unknown keys and bad values are
errors that name the file, the line, the key path and the reason; all of them are reported at
once (``ConfigErrors`` of ``ConfigError``s), as ``lbdns check`` does for the server.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lbdns import yamlfile
from lbdns.agent.measure import METHODS
from lbdns.errors import ConfigError, ConfigErrors, LbdnsError
from lbdns.name import NameError_
from lbdns.name import absolute as absolute_name
from lbdns.validate import (
    MAX_METRICS,
    METRIC_NAME,
    Fail,
    boolean,
    is_local_url,
    known_keys,
    number,
    secret,
    string,
)
from lbdns.zone.settings import check_host_name, parse_host

BUILTIN_METRICS = ("connections", "cpu", "load1", "memory")


@dataclass(frozen=True)
class Server:
    url: str  # base URL, no trailing slash
    token: str | None = None  # report token
    register_token: str | None = None


@dataclass(frozen=True)
class MetricSource:
    """A custom metric source: a command (argv) or a local HTTP URL returning JSON numbers."""

    name: str | None  # metric name when the source prints a single number
    command: tuple[str, ...] | None = None
    url: str | None = None
    timeout: float = 1.0


@dataclass(frozen=True)
class Check:
    kind: str  # "tcp" or "http"
    target: str  # host:port or URL
    host: str = ""  # tcp only
    port: int = 0
    status: tuple[int, ...] = (200,)  # http only: accepted status codes
    timeout: float = 1.0

    def describe(self) -> str:
        return f"{self.kind} {self.target}"


@dataclass(frozen=True)
class Registration:
    a: tuple[str, ...] = ()
    aaaa: tuple[str, ...] = ()
    capacity: float = 1.0
    labels: dict[str, str] = field(default_factory=dict)
    drain_timeout: float = 300.0  # seconds to wait for "drained" on SIGTERM
    drain_grace: float | None = None  # passed to the server's drain (None: its default)
    drain_threshold: float | None = None
    force_remove: bool = False  # remove even when the drain did not finish in time
    enable: bool = True  # on start, enable a host left draining by an earlier shutdown

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"capacity": self.capacity, "labels": dict(self.labels)}
        if self.a:
            body["a"] = list(self.a)
        if self.aaaa:
            body["aaaa"] = list(self.aaaa)
        return body


@dataclass(frozen=True)
class Advice:
    command: tuple[str, ...] | None = None  # "{n}" in an argument is replaced by the number
    url: str | None = None  # POSTed {"shed": n, "farm": ..., "host": ...}
    timeout: float = 5.0
    min_interval: float = 30.0  # seconds between two hand-overs


@dataclass(frozen=True)
class AgentConfig:
    farm: str
    host: str
    interval: float = 1.0
    servers: tuple[Server, ...] = ()
    timeout: float = 2.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    ports: tuple[int, ...] = ()
    connections_method: str = "auto"
    connections_recount: float = 60.0  # eBPF method: seconds between full recounts
    cpu_window: float = 10.0
    metrics: tuple[MetricSource, ...] = ()
    checks: tuple[Check, ...] = ()
    fail_after: int = 3
    recover_after: int = 2
    register: Registration | None = None
    advice: Advice | None = None
    log_format: str = "text"
    log_level: str = "info"
    log_every: float = 60.0
    source: str | None = None


# -- value parsers: each returns the parsed value or None after calling fail --------------------


def _url(value: Any, where, fail: Fail) -> str | None:
    text = string(value, where, fail)
    if text is None:
        return None
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        fail(where, f"must be an http:// or https:// URL, got {text!r}")
        return None
    try:
        _ = parts.port  # raises on a port that is not a number in range
    except ValueError:
        fail(where, f"has a bad port: {text!r}")
        return None
    return text


def _command(value: Any, where, fail: Fail) -> tuple[str, ...] | None:
    # A string runs through /bin/sh (pipes and all); a list runs as is, without a shell.
    if isinstance(value, str) and value.strip():
        return ("/bin/sh", "-c", value)
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    fail(where, "must be a shell command line (string) or a non-empty list of arguments")
    return None


SECRET_KEYS = {"token", "token_file", "token_env"}
REGISTER_SECRET_KEYS = {"register_token", "register_token_file", "register_token_env"}
SERVER_KEYS = {"url"} | SECRET_KEYS | REGISTER_SECRET_KEYS


def _servers(value: Any, where, fail: Fail, token: str | None, register_token: str | None):
    if not isinstance(value, list) or not value:
        fail(where, "must be a list of server URLs or {url, token...} mappings")
        return ()
    out = []
    seen = set()
    for i, item in enumerate(value):
        item_where = (*where, i)
        if isinstance(item, str):
            item = {"url": item}
            url_where = item_where
        else:
            url_where = (*item_where, "url")
            if not known_keys(item, item_where, fail, SERVER_KEYS, "url and token"):
                continue
            if "url" not in item:
                fail(item_where, "a server needs a url")
                continue
        raw = item["url"]
        if isinstance(raw, str) and "://" not in raw:
            raw = "http://" + raw  # host:port, as the CLI's --server takes it
        url = _url(raw, url_where, fail)
        own = secret(item, "token", item_where, fail)
        own_register = secret(item, "register_token", item_where, fail)
        if url is None:
            continue
        url = url.rstrip("/")
        if url in seen:
            fail(url_where, f"duplicate server {url}")
            continue
        seen.add(url)
        report_token = own or token
        out.append(Server(url, report_token, own_register or register_token or report_token))
    return tuple(out)


def _ports(value: Any, where, fail: Fail) -> tuple[int, ...]:
    items = value if isinstance(value, list) else [value]
    out = []
    for i, item in enumerate(items):
        item_where = (*where, i) if isinstance(value, list) else where
        port = number(item, item_where, fail, 1, 65535, integer=True)
        if port is not None and port not in out:
            out.append(port)
    if not out and isinstance(value, list):
        fail(where, "list at least one port")
    return tuple(out)


CONNECTION_KEYS = {"ports", "method", "recount"}


def _connections(value: Any, where, fail: Fail, values: dict) -> None:
    if not known_keys(value, where, fail, CONNECTION_KEYS, "ports, method and recount"):
        return
    if "ports" not in value:
        fail(where, "ports: list the local ports the application listens on")
    else:
        values["ports"] = _ports(value["ports"], (*where, "ports"), fail)
    method = value.get("method", "auto")
    if method not in METHODS:
        fail((*where, "method"), f"must be one of {', '.join(METHODS)}, got {method!r}")
    else:
        values["connections_method"] = method
    if "recount" in value:
        recount = number(value["recount"], (*where, "recount"), fail, 1.0, 86400.0)
        if recount is not None:
            values["connections_recount"] = float(recount)


METRIC_KEYS = {"name", "command", "url", "timeout"}


def _metrics(value: Any, where, fail: Fail, interval: float) -> tuple[MetricSource, ...]:
    if not isinstance(value, list):
        fail(where, "must be a list of {command: ...} or {url: ...} sources")
        return ()
    out = []
    names: set[str] = set()
    for i, item in enumerate(value):
        item_where = (*where, i)
        if not known_keys(item, item_where, fail, METRIC_KEYS, "name, command or url, timeout"):
            continue
        if ("command" in item) == ("url" in item):
            fail(item_where, "give exactly one of command or url")
            continue
        name = item.get("name")
        if name is not None:
            if not isinstance(name, str) or not METRIC_NAME.match(name):
                fail(
                    (*item_where, "name"),
                    "metric names are a lower-case letter then letters, digits or '_' "
                    f"(at most 64), got {name!r}",
                )
                continue
            if name in BUILTIN_METRICS:
                fail((*item_where, "name"), f"{name!r} is measured by the agent itself")
                continue
            if name in names:
                fail((*item_where, "name"), f"duplicate metric name {name!r}")
                continue
            names.add(name)
        timeout = number(
            item.get("timeout", min(1.0, interval)), (*item_where, "timeout"), fail, 0.01, 60
        )
        if "command" in item:
            command = _command(item["command"], (*item_where, "command"), fail)
            if command is not None and timeout is not None:
                out.append(MetricSource(name, command=command, timeout=float(timeout)))
        else:
            url = _url(item["url"], (*item_where, "url"), fail)
            if url is not None and timeout is not None:
                out.append(MetricSource(name, url=url, timeout=float(timeout)))
    return tuple(out)


HEALTH_KEYS = {"checks", "fail_after", "recover_after"}
CHECK_KEYS = {"tcp", "http", "status", "timeout"}


def _host_port(value: Any, where, fail: Fail) -> tuple[str, int] | None:
    text = string(value, where, fail)
    if text is None:
        return None
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        fail(where, f"must be host:port (IPv6 as [addr]:port), got {text!r}")
        return None
    return host, int(port)


def _health(value: Any, where, fail: Fail, values: dict, interval: float) -> None:
    if not known_keys(value, where, fail, HEALTH_KEYS, "checks, fail_after, recover_after"):
        return
    for key in ("fail_after", "recover_after"):
        if key in value:
            n = number(value[key], (*where, key), fail, 1, 1000, integer=True)
            if n is not None:
                values[key] = n
    checks_where = (*where, "checks")
    items = value.get("checks")
    if not isinstance(items, list) or not items:
        fail(checks_where, "must be a list of {tcp: host:port} or {http: URL} checks")
        return
    out = []
    for i, item in enumerate(items):
        item_where = (*checks_where, i)
        if not known_keys(item, item_where, fail, CHECK_KEYS, "tcp or http, status, timeout"):
            continue
        if ("tcp" in item) == ("http" in item):
            fail(item_where, "give exactly one of tcp or http")
            continue
        timeout = number(
            item.get("timeout", min(1.0, interval)), (*item_where, "timeout"), fail, 0.01, 60
        )
        if "tcp" in item:
            if "status" in item:
                fail((*item_where, "status"), "status applies to http checks only")
            target = _host_port(item["tcp"], (*item_where, "tcp"), fail)
            if target is not None and timeout is not None:
                out.append(
                    Check(
                        "tcp", item["tcp"], host=target[0], port=target[1], timeout=float(timeout)
                    )
                )
            continue
        url = _url(item["http"], (*item_where, "http"), fail)
        raw = item.get("status", 200)
        statuses = raw if isinstance(raw, list) else [raw]
        codes = []
        for j, code in enumerate(statuses):
            status_where = (*item_where, "status")
            code_where = (*status_where, j) if isinstance(raw, list) else status_where
            n = number(code, code_where, fail, 100, 599, integer=True)
            if n is not None:
                codes.append(n)
        if url is not None and timeout is not None and codes and len(codes) == len(statuses):
            out.append(Check("http", url, status=tuple(codes), timeout=float(timeout)))
    values["checks"] = tuple(out)


REGISTER_KEYS = {
    "a",
    "aaaa",
    "capacity",
    "labels",
    "drain_timeout",
    "drain_grace",
    "drain_threshold",
    "force_remove",
    "enable",
} | REGISTER_SECRET_KEYS


def _register(value: Any, where, fail: Fail, host: str) -> tuple[Registration | None, str | None]:
    if not known_keys(value, where, fail, REGISTER_KEYS, "a, aaaa, capacity, labels, drain_..."):
        return None, None
    token = secret(value, "register_token", where, fail)
    spec_body = {k: value[k] for k in ("a", "aaaa", "capacity", "labels") if k in value}
    if isinstance(spec_body.get("labels"), dict):
        spec_body["labels"] = {str(k): str(v) for k, v in spec_body["labels"].items()}
    spec = parse_host(host if check_host_name(host) else "x", spec_body, where, fail, "registered")
    options: dict[str, Any] = {}
    limits = {
        "drain_timeout": (0, 86400),
        "drain_grace": (0, 86400),
        "drain_threshold": (0, 1e12),
    }
    for key, (low, high) in limits.items():
        if key in value:
            n = number(value[key], (*where, key), fail, low, high)
            if n is not None:
                options[key] = float(n)
    for key in ("force_remove", "enable"):
        if key in value:
            flag = boolean(value[key], (*where, key), fail)
            if flag is not None:
                options[key] = flag
    if spec is None:
        return None, token
    return (
        Registration(
            a=spec.a,
            aaaa=spec.aaaa,
            capacity=spec.capacity,
            labels=dict(spec.labels),
            **options,
        ),
        token,
    )


ADVICE_KEYS = {"command", "url", "timeout", "min_interval"}


def _advice(value: Any, where, fail: Fail) -> Advice | None:
    if not known_keys(value, where, fail, ADVICE_KEYS, "command or url, timeout, min_interval"):
        return None
    if ("command" in value) == ("url" in value):
        fail(where, "give exactly one of command or url")
        return None
    options: dict[str, Any] = {}
    for key, (low, high) in {"timeout": (0.01, 600), "min_interval": (0, 86400)}.items():
        if key in value:
            n = number(value[key], (*where, key), fail, low, high)
            if n is None:
                return None
            options[key] = float(n)
    if "command" in value:
        command = _command(value["command"], (*where, "command"), fail)
        return None if command is None else Advice(command=command, **options)
    url = _url(value["url"], (*where, "url"), fail)
    if url is not None and not is_local_url(url):
        fail((*where, "url"), "must point at the local application (a loopback address)")
        return None
    return None if url is None else Advice(url=url, **options)


TOP_KEYS = {
    "farm",
    "host",
    "interval",
    "servers",
    "timeout",
    "backoff",
    "connections",
    "cpu_window",
    "metrics",
    "health",
    "register",
    "advice",
    "log_format",
    "log_level",
    "log_every",
} | SECRET_KEYS
BACKOFF_KEYS = {"initial", "max"}


def default_host_name() -> str:
    return socket.gethostname().split(".")[0]


def load(path: Path, need_servers: bool = True) -> AgentConfig:
    """Read and validate the agent config at ``path``; raise ``ConfigErrors`` listing every
    problem (file, line, key path, reason). ``need_servers`` is False for --once/--dry-run."""
    doc = yamlfile.load(path, ConfigError)
    return parse(doc, need_servers)


def parse(doc: yamlfile.LocatedYaml, need_servers: bool = True) -> AgentConfig:
    errors: list[LbdnsError] = []

    def fail(where: yamlfile.Where, reason: str) -> None:
        errors.append(doc.error(ConfigError, where, reason))

    data = doc.data
    if not isinstance(data, dict):
        raise ConfigErrors([doc.error(ConfigError, (), "an agent config must be a mapping")])
    known_keys(data, (), fail, TOP_KEYS, "")
    values: dict[str, Any] = {}

    farm = data.get("farm")
    if farm is None:
        fail(("farm",), "missing: name the farm this host belongs to (e.g. chat.example.test.)")
    elif string(farm, ("farm",), fail):
        try:
            values["farm"] = absolute_name(farm if farm.endswith(".") else farm + ".", ".")
        except NameError_ as exc:
            fail(("farm",), str(exc))
    host = data.get("host", default_host_name())
    if not isinstance(host, str) or not check_host_name(host):
        fail(("host",), f"host names are 1-63 letters, digits, '-', '_' or '.', got {host!r}")
    else:
        values["host"] = host

    interval = number(data.get("interval", 1.0), ("interval",), fail, 0.05, 3600)
    values["interval"] = float(interval) if interval is not None else 1.0
    for key, low, high in (
        ("timeout", 0.01, 600),
        ("cpu_window", 0, 3600),
        ("log_every", 0, 86400),
    ):
        if key in data:
            n = number(data[key], (key,), fail, low, high)
            if n is not None:
                values[key] = float(n)
    if "backoff" in data and known_keys(
        data["backoff"], ("backoff",), fail, BACKOFF_KEYS, "initial, max"
    ):
        for key in BACKOFF_KEYS:
            if key in data["backoff"]:
                n = number(data["backoff"][key], ("backoff", key), fail, 0.01, 3600)
                if n is not None:
                    values[f"backoff_{key}"] = float(n)
        if values.get("backoff_initial", 0.5) > values.get("backoff_max", 30.0):
            fail(("backoff",), "initial must not be above max")

    token = secret(data, "token", (), fail)
    register_token = None
    if "register" in data:
        registration, register_token = _register(
            data["register"], ("register",), fail, values.get("host", "")
        )
        if registration is not None:
            values["register"] = registration
    if "servers" in data:
        values["servers"] = _servers(data["servers"], ("servers",), fail, token, register_token)
    elif need_servers:
        fail(("servers",), "missing: list the lbdns servers to report to (e.g. [http://ns1:8053])")

    if "connections" in data:
        _connections(data["connections"], ("connections",), fail, values)
    if "metrics" in data:
        values["metrics"] = _metrics(data["metrics"], ("metrics",), fail, values["interval"])
        if len(BUILTIN_METRICS) + len(values["metrics"]) > MAX_METRICS:
            fail(("metrics",), f"at most {MAX_METRICS - len(BUILTIN_METRICS)} custom sources")
    if "health" in data:
        _health(data["health"], ("health",), fail, values, values["interval"])
    if "advice" in data:
        advice = _advice(data["advice"], ("advice",), fail)
        if advice is not None:
            values["advice"] = advice
    for key, options in (("log_format", ("text", "json")), ("log_level", LOG_LEVELS)):
        if key in data:
            if data[key] not in options:
                fail((key,), f"must be one of {', '.join(options)}, got {data[key]!r}")
            else:
                values[key] = data[key]
    if errors:
        raise ConfigErrors(errors)
    return AgentConfig(source=doc.source, **values)


LOG_LEVELS = ("debug", "info", "warning", "error")
