"""Ports for the servers of the tests that must be told a port number before they start.

``lbdns serve`` binds port 0 and reports the port it got (``LbdnsProcess``); nsd, unbound and a
Redis TLS port cannot. A port from ``free_port()`` is free when it is asked for, not when the
server binds it: another process can take it in between. So a harness for such a server starts
it through ``start_on_free_port``, raises ``PortTaken`` when the server could not bind, which
tries again on another port, and checks that what answers on the port is its own server (its
process id, or an identity only its config names) before it hands the port to a test.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

ATTEMPTS = 5


class PortTaken(RuntimeError):
    """A server could not bind the port it was given: another process had taken it."""


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago (see the module's docstring)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A TCP port of 127.0.0.1 that refuses connections while the block runs: a socket holds it
    bound and never listens (without SO_REUSEADDR, so no other process can listen there)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def retry_when_port_taken(attempt: Callable[[], T], attempts: int = ATTEMPTS) -> T:
    """``attempt()``, from the start again each time it raises ``PortTaken``; the last
    ``PortTaken`` propagates after ``attempts`` tries. For a scenario that restarts a server on
    the port an earlier one had: only a new port (so a new run of the scenario) can help."""
    for _ in range(attempts - 1):
        try:
            return attempt()
        except PortTaken:
            pass
    return attempt()


def start_on_free_port(start: Callable[[int], T], attempts: int = ATTEMPTS) -> T:
    """``start(port)`` on a port from ``free_port()``, on a new one each time it raises
    ``PortTaken``."""
    return retry_when_port_taken(lambda: start(free_port()), attempts)


def bind_failed(log: str) -> bool:
    """True if a server's log says that it could not bind its port."""
    return "address already in use" in log.lower()


def dns_identity(port: int, timeout: float = 0.3) -> str | None:
    """The ``id.server`` CHAOS TXT answer of the DNS server on 127.0.0.1:``port`` (RFC 4892),
    None when nothing answers. nsd and unbound answer it with their ``identity`` option, so a
    harness that sets a unique one knows whether the server answering is its own."""
    import dns.exception
    import dns.message
    import dns.query

    query = dns.message.make_query("id.server.", "TXT", "CH")
    try:
        response = dns.query.udp(query, "127.0.0.1", port=port, timeout=timeout)
    except (dns.exception.DNSException, OSError):
        return None
    for rrset in response.answer:
        for rr in rrset:
            return b"".join(rr.strings).decode(errors="replace")
    return None
