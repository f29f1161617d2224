"""State URLs: ``redis://``, ``rediss://`` and ``redis+sentinel://``, and how they are shown."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from lbdns.errors import ConfigError


def display_url(url: str) -> str:
    """The URL without its password, for logs and the status."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return parts._replace(netloc=user + netloc).geturl()


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int, str | None]:
    """``redis+sentinel://[:password@]host:port[,host:port...]/service[/db]``."""
    rest = url[len("redis+sentinel://") :]
    password = None
    if "@" in rest:
        auth, rest = rest.rsplit("@", 1)
        password = unquote(auth.partition(":")[2]) or None
    hosts_text, _, path = rest.partition("/")
    parts = [p for p in path.split("/") if p]
    if not hosts_text or not parts:
        raise ConfigError(f"{url!r}: expected redis+sentinel://host:port[,host:port]/service[/db]")
    hosts = []
    for item in hosts_text.split(","):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"{url!r}: sentinel address {item!r} must be host:port")
        hosts.append((host.strip("[]"), int(port)))
    db = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return hosts, parts[0], db, password
