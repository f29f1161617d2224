"""Bearer tokens and what each may do.

Tokens come from the server config (``tokens:``), each with a name (logged with every change it
makes), a secret, a role and an optional scope::

    tokens:
      - {name: ops, secret: "s3cret", role: admin}              # read and change everything
      - {name: grafana, secret: "...", role: read}              # read-only API and status page
      - {name: chat-agents, secret: "...", role: report, farms: [chat.example.test.]}
      - {name: web1, secret: "...", role: report, farms: [chat.example.test.], host: web1}
      - {name: autoscaler, secret: "...", role: register, farms: [chat.example.test.],
         networks: [192.0.2.0/24]}
      - {name: gateway, secret: "...", role: assign, farms: [chat.example.test.]}  # assign API

A secret may also come from a file (``secret_file``) or an environment variable
(``secret_env``). With no token configured at all, every request from a loopback address is
allowed and every other request is refused.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from lbdns import validate

ROLES = ("admin", "read", "report", "register", "assign")
TOKEN_KEYS = {"name", "secret", "secret_file", "secret_env", "role", "farms", "host", "networks"}


@dataclass(frozen=True)
class Token:
    name: str
    secret: str
    role: str
    farms: tuple[str, ...] = ()  # empty: every farm
    host: str | None = None  # report tokens: this host only
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def allows_farm(self, farm: str) -> bool:
        return not self.farms or farm in self.farms

    def allows_host(self, farm: str, host: str) -> bool:
        return self.allows_farm(farm) and (self.host is None or self.host == host)

    def allows_address(self, address: str) -> bool:
        if not self.networks:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)


LOOPBACK = Token(name="loopback", secret="", role="admin")


def parse_tokens(value: Any, fail: Callable[[tuple, str], None]) -> tuple[Token, ...]:
    """Validate the ``tokens`` config list; report problems through ``fail(path, reason)``."""
    if value is None:
        return ()
    if not isinstance(value, list):
        fail(("tokens",), "must be a list of tokens")
        return ()
    tokens = []
    names = set()
    for i, item in enumerate(value):
        where = ("tokens", i)
        if not isinstance(item, dict):
            fail(where, "a token is a mapping with name, secret and role")
            continue
        unknown = set(item) - TOKEN_KEYS
        for key in sorted(unknown, key=str):
            fail(
                (*where, key),
                f"unknown token key (expected one of {', '.join(sorted(TOKEN_KEYS))})",
            )
        name = item.get("name")
        if not isinstance(name, str) or not name:
            fail((*where, "name"), "every token needs a name (it is logged with each change)")
            continue
        if name in names:
            fail((*where, "name"), f"duplicate token name {name!r}")
        names.add(name)
        secret = _secret(item, where, fail)
        role = item.get("role")
        if role not in ROLES:
            fail((*where, "role"), f"must be one of {', '.join(ROLES)}, got {role!r}")
            continue
        farms = item.get("farms", [])
        if isinstance(farms, str):
            farms = [farms]
        if not isinstance(farms, list) or not all(isinstance(f, str) for f in farms):
            fail((*where, "farms"), "must be a list of farm names")
            farms = []
        host = item.get("host")
        if host is not None and (role != "report" or not isinstance(host, str)):
            fail((*where, "host"), "host scopes a report token to one host name")
            host = None
        networks = []
        for j, net in enumerate(item.get("networks", []) or []):
            try:
                networks.append(ipaddress.ip_network(str(net), strict=False))
            except ValueError:
                fail((*where, "networks", j), f"{net!r} is not an address range")
        if role == "register" and not networks and not item.get("networks"):
            # Without ranges a register token could point a farm at any address.
            fail((*where, "networks"), "a register token needs networks: its hosts' address ranges")
        if secret is None:
            continue
        tokens.append(
            Token(
                name=name,
                secret=secret,
                role=role,
                farms=tuple(f.lower() if f.endswith(".") else f.lower() + "." for f in farms),
                host=host,
                networks=tuple(networks),
            )
        )
    return tuple(tokens)


def _secret(item: dict, where: tuple, fail) -> str | None:
    if not any(k in item for k in ("secret", "secret_file", "secret_env")):
        fail(where, "give exactly one of secret, secret_file or secret_env")
        return None
    return validate.secret(item, "secret", where, fail, what="secret")


def find_token(tokens: Iterable[Token], presented: str) -> Token | None:
    """The token whose secret matches, compared in constant time."""
    found = None
    for token in tokens:
        if hmac.compare_digest(token.secret.encode(), presented.encode()):
            found = token
    return found
