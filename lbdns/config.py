"""The server config: one frozen object per process, from a YAML file and the command line.

Every key is documented in docs/config.md. Unknown keys are errors that name their path. The
command line overrides the file. Parse -> validate -> normalise into a new ``Config``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lbdns import validate, yamlfile
from lbdns.auth import Token, parse_tokens
from lbdns.dnsserver.cookie import CookieSettings
from lbdns.dnsserver.identity import IdentitySettings
from lbdns.dnsserver.rrl import RrlSettings
from lbdns.dnsserver.transport import parse_address
from lbdns.errors import ConfigError, ConfigErrors, LbdnsError
from lbdns.validate import Fail

DEFAULT_HTTP = "127.0.0.1:8053"
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


CAP_NET_BIND_SERVICE = 10  # capability(7) number


def can_bind_low_ports() -> bool:
    """Whether this process has CAP_NET_BIND_SERVICE in effect: root usually, or the systemd
    unit's AmbientCapabilities=. Where /proc says nothing, root is taken to have it."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_NET_BIND_SERVICE & 1)
    except (OSError, ValueError, IndexError):
        pass
    return os.geteuid() == 0


def default_dns_port() -> int:
    # Port 53 needs root or CAP_NET_BIND_SERVICE; otherwise a high port, as the README shows.
    return 53 if can_bind_low_ports() else 5353


AUTO_WORKERS_MAX = 16  # past this the main process's relay, not the cores, is the limit


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, as taskset or systemd's
    CPUAffinity= set it), not every CPU of the machine."""
    count = getattr(os, "process_cpu_count", None)  # Python 3.13
    if count is not None:
        return count() or 1
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def auto_workers() -> int:
    """``workers: auto``, the default: one DNS process per usable CPU, at most
    ``AUTO_WORKERS_MAX``. (NSD's server-count defaults to 1; a Python process uses one core,
    so lbdns defaults to all of them.)"""
    return min(usable_cpus(), AUTO_WORKERS_MAX)


@dataclass(frozen=True)
class Config:
    zones: Path = Path("zones")
    dns: tuple[tuple[str, int], ...] = ()
    http: tuple[str, int] | None = ("127.0.0.1", 8053)
    state: str = "memory://"
    data_dir: Path | None = None
    log_format: str = "text"
    log_level: str = "info"
    tcp_idle_timeout: float = 10.0
    tcp_max_connections: int = 1000
    tcp_max_per_address: int = 64  # open TCP connections from one client address at most
    tcp_max_per_network: int = 256  # ... from one /24 (IPv4) or /56 (IPv6) at most
    udp_batch: bool = True  # recvmmsg/sendmmsg where available (lbdns.dnsserver.udpbatch)
    udp_compiled: bool = True  # that batch loop in C where it was built (dnsserver/_udpfast.c)
    tokens: tuple[Token, ...] = ()
    redis_prefix: str = "lbdns:"
    stale_budget: float = 5.0  # seconds without the shared store before its data counts as stale
    explain_queries: bool = False  # answer CH TXT _lbdns.<farm> with a short explanation
    query_log: float = 0.0  # fraction of queries to log (0 = off)
    query_log_rate: float = 100.0  # at most this many query-log lines per second
    advice: bool = False  # tell overloaded hosts to shed connections in the report reply
    scale_target: float = 0.7  # utilisation the scale advice aims for
    max_body: int = 1024 * 1024  # bytes of an HTTP request body
    http_header_timeout: float = 10.0  # seconds for a request's headers to arrive (slowloris)
    http_body_timeout: float = 30.0  # seconds for a request's body to arrive
    http_max_connections: int = 1024  # open HTTP connections; more are closed as accepted
    assign_rate: float = 100.0  # assignment API requests per second per client address (0: off)
    assign_burst: int = 200  # ... in bursts of at most this many
    rrl: RrlSettings = RrlSettings()  # response rate limiting (lbdns.dnsserver.rrl)
    cookies: CookieSettings = CookieSettings()  # DNS cookies (lbdns.dnsserver.cookie)
    identity: IdentitySettings = IdentitySettings()  # CH TXT id.server, version.bind...
    checks: bool = True  # run the zone files' health checks from this server
    check_source: str | None = None  # local address the probes leave from (None: the kernel's)
    check_concurrency: int = 256  # probes in flight at once
    workers: int = field(default_factory=auto_workers)  # DNS processes (lbdns.workers)
    source: str | None = None  # the file it came from
    extra: dict[str, Any] = field(default_factory=dict)

    def dns_addresses(self) -> tuple[tuple[str, int], ...]:
        if self.dns:
            return self.dns
        port = default_dns_port()
        return (("0.0.0.0", port), ("::", port))


def _number(kind, low, high):
    def parse(value: Any, where: yamlfile.Where, fail: Fail):
        parsed = validate.number(value, where, fail, low, high, integer=kind is int)
        return None if parsed is None else kind(parsed)

    return parse


def _choice(options):
    def parse(value: Any, where: yamlfile.Where, fail: Fail):
        return validate.choice(value, where, fail, tuple(options))

    return parse


_string = validate.string
_bool = validate.boolean


def _path(value: Any, where: yamlfile.Where, fail: Fail):
    text = _string(value, where, fail)
    return Path(text) if text else None


def _bool(value: Any, where: yamlfile.Where, fail: Fail):
    if not isinstance(value, bool):
        fail(where, f"must be true or false, got {value!r}")
        return None
    return value


def _dns(value: Any, where: yamlfile.Where, fail: Fail):
    items = value if isinstance(value, list) else [value]
    out = []
    for i, item in enumerate(items):
        item_where = (*where, i) if isinstance(value, list) else where
        try:
            out.append(parse_address(str(item), default_dns_port()))
        except ValueError as exc:
            fail(item_where, str(exc))
    return tuple(out)


def _http(value: Any, where: yamlfile.Where, fail: Fail):
    if value in (None, False, "off", "none"):
        return None
    try:
        return parse_address(str(value), 8053)
    except ValueError as exc:
        fail(where, str(exc))
        return None


def _state(value: Any, where: yamlfile.Where, fail: Fail):
    text = _string(value, where, fail)
    if text and not text.startswith(("memory://", "redis://", "rediss://", "redis+sentinel://")):
        fail(where, "must be memory://, redis://, rediss:// or redis+sentinel://")
        return None
    return text


def _ip_address(value: Any, where: yamlfile.Where, fail: Fail):
    import ipaddress

    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        fail(where, f"must be an IPv4 or IPv6 address, got {value!r}")
        return None


def _workers(value: Any, where: yamlfile.Where, fail: Fail):
    if value == "auto":
        return auto_workers()
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 256:
        fail(where, f"must be auto or an integer from 1 to 256, got {value!r}")
        return None
    return value


def _tokens(value: Any, where: yamlfile.Where, fail: Fail):
    return parse_tokens(value, lambda w, reason: fail(w, reason))


def _networks(value: Any, where: yamlfile.Where, fail: Fail):
    if not isinstance(value, list):
        fail(where, f"must be a list of networks such as 192.0.2.0/24, got {value!r}")
        return None
    out = []
    for i, item in enumerate(value):
        try:
            if not isinstance(item, str):
                raise ValueError
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            fail(
                (*where, i),
                f"must be a network such as 192.0.2.0/24 or 2001:db8::/32, got {item!r}",
            )
            continue
        out.append(item)
    return tuple(out)


def _section(cls, fields: dict[str, Callable[[Any, yamlfile.Where, Fail], Any]]):
    """A mapping of its own keys, parsed into a frozen ``cls``; unknown keys name their path."""

    def parse(value: Any, where: yamlfile.Where, fail: Fail):
        if not isinstance(value, dict):
            fail(where, f"must be a mapping of {', '.join(fields)}, got {value!r}")
            return None
        values = {}
        for key, item in value.items():
            parser = fields.get(key)
            if parser is None:
                fail((*where, key), f"unknown key (expected one of {', '.join(sorted(fields))})")
                continue
            parsed = parser(item, (*where, key), fail)
            if parsed is not None:
                values[key] = parsed
        return cls(**values)

    return parse


def _secret(value: Any, where: yamlfile.Where, fail: Fail):
    if not isinstance(value, str) or len(value) != 32:
        fail(where, "must be 32 hexadecimal digits (16 random octets: openssl rand -hex 16)")
        return None
    try:
        bytes.fromhex(value)
    except ValueError:
        fail(where, "must be 32 hexadecimal digits (16 random octets: openssl rand -hex 16)")
        return None
    return value.lower()


COOKIE_FIELDS: dict[str, Callable[[Any, yamlfile.Where, Fail], Any]] = {
    "enabled": _bool,
    "secret": _secret,
    "previous_secret": _secret,
}

IDENTITY_FIELDS: dict[str, Callable[[Any, yamlfile.Where, Fail], Any]] = {
    "enabled": _bool,
    "id": _string,
    "hide_version": _bool,
}

RRL_FIELDS: dict[str, Callable[[Any, yamlfile.Where, Fail], Any]] = {
    "enabled": _bool,
    "rate": _number(float, 1, 10_000_000),
    "burst": _number(float, 0, 10_000_000),
    "slip": _number(int, 0, 100),
    "ipv4_prefix": _number(int, 8, 32),
    "ipv6_prefix": _number(int, 16, 128),
    "big_size": _number(int, 64, 65535),
    "whitelist": _networks,
    "max_networks": _number(int, 100, 10_000_000),
}


# key -> parser. A new setting is one line here, one field above and one row in docs/config.md.
FIELDS: dict[str, Callable[[Any, yamlfile.Where, Fail], Any]] = {
    "zones": _path,
    "dns": _dns,
    "http": _http,
    "state": _state,
    "data_dir": _path,
    "log_format": _choice(LOG_FORMATS),
    "log_level": _choice(LOG_LEVELS),
    "tcp_idle_timeout": _number(float, 0.1, 3600),
    "tcp_max_connections": _number(int, 1, 1_000_000),
    "tcp_max_per_address": _number(int, 1, 1_000_000),
    "tcp_max_per_network": _number(int, 1, 1_000_000),
    "http_header_timeout": _number(float, 0.1, 3600),
    "http_body_timeout": _number(float, 0.1, 3600),
    "http_max_connections": _number(int, 1, 1_000_000),
    "udp_batch": _bool,
    "udp_compiled": _bool,
    "tokens": _tokens,
    "redis_prefix": _string,
    "stale_budget": _number(float, 0.1, 3600),
    "explain_queries": _bool,
    "query_log": _number(float, 0.0, 1.0),
    "query_log_rate": _number(float, 0.0, 1_000_000),
    "advice": _bool,
    "scale_target": _number(float, 0.05, 1.0),
    "max_body": _number(int, 1024, 64 * 1024 * 1024),
    "assign_rate": _number(float, 0.0, 10_000_000),
    "assign_burst": _number(int, 1, 10_000_000),
    "rrl": _section(RrlSettings, RRL_FIELDS),
    "cookies": _section(CookieSettings, COOKIE_FIELDS),
    "identity": _section(IdentitySettings, IDENTITY_FIELDS),
    "checks": _bool,
    "check_source": _ip_address,
    "check_concurrency": _number(int, 1, 10_000),
    "workers": _workers,
}


def load(path: Path | None, overrides: dict[str, Any] | None = None) -> Config:
    """Read the config file (if any), apply command-line ``overrides``, validate everything.

    Raises ``ConfigErrors`` (a list of ``ConfigError``) naming every bad key.
    """
    errors: list[LbdnsError] = []
    values: dict[str, Any] = {}
    source = None
    if path is not None:
        try:
            doc = yamlfile.load(path, ConfigError)
        except ConfigError as exc:
            raise ConfigErrors([exc]) from None
        source = str(path)
        data = doc.data if doc.data is not None else {}
        if not isinstance(data, dict):
            raise ConfigErrors([doc.error(ConfigError, (), "a config file must be a mapping")])

        def fail(where: yamlfile.Where, reason: str) -> None:
            errors.append(doc.error(ConfigError, where, reason))

        for key, value in data.items():
            parser = FIELDS.get(key)
            if parser is None:
                fail((key,), f"unknown key (expected one of {', '.join(sorted(FIELDS))})")
                continue
            parsed = parser(value, (key,), fail)
            if parsed is not None:
                values[key] = parsed
        # Relative paths in a config file are relative to the file.
        for key in ("zones", "data_dir"):
            if key in values and not values[key].is_absolute():
                values[key] = path.parent / values[key]
    for key, value in (overrides or {}).items():
        if value is None:
            continue

        def fail_cli(where: yamlfile.Where, reason: str, key=key) -> None:
            errors.append(
                ConfigError(reason, source="command line", path=f"--{key.replace('_', '-')}")
            )

        parsed = FIELDS[key](value, (key,), fail_cli)
        if parsed is not None or key == "http":
            values[key] = parsed
    if errors:
        raise ConfigErrors(errors)
    return replace(Config(), source=source, **values)
